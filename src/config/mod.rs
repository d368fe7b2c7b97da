//! The resolved configuration: flags, environment and test hooks are read here, once,
//! into plain values that `pipeline`, the agent and the commands are handed. Nothing
//! below this module reads the command line or the environment.

mod policy;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::boot::BootOptions;
use crate::cli::{AgentArgs, BootRecordAction, Cli, Command, GlobalArgs, OutputFormat, RunArgs};
use crate::node::NodeOptions;

pub use policy::Policy;

/// What a bad configuration is, in words that name the flag.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The node name could not be found.
    #[error("{0}")]
    NodeName(String),
    /// `--metrics-addr` is neither `ADDR:PORT` nor `off`.
    #[error("--metrics-addr {given:?} is not ADDR:PORT or off: {why}")]
    MetricsAddr {
        /// What was given.
        given: String,
        /// Why it does not parse.
        why: String,
    },
}

/// When the agent acts on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActOn {
    /// Only after an unclean-shutdown verdict.
    Unclean,
    /// On any verdict.
    Always,
    /// Never: report only.
    Never,
}

/// Limits and timeouts of the I/O shell (not policy: they change how, not what).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuning {
    /// How long one API request may take.
    pub request_timeout: Duration,
    /// VMs worked on at once.
    pub apply_concurrency: usize,
    /// How long node and pod evidence re-read for one VM is reused for the next.
    pub recheck_max_age: Duration,
    /// How long an orphan gets between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            request_timeout: Duration::from_secs(15),
            apply_concurrency: 16,
            recheck_max_age: Duration::from_secs(2),
            kill_grace: Duration::from_secs(10),
        }
    }
}

/// Where the cluster is and what of it is ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// A kubeconfig file; `None`: in-cluster config, else the default kubeconfig.
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of vmrecover's Lease and its own objects.
    pub namespace: String,
    /// Request timeout and concurrency.
    pub tuning: Tuning,
}

/// Everything a command that looks at this node needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's name as the cluster knows it.
    pub node: String,
    /// The persistent state directory.
    pub state_dir: PathBuf,
    /// Boot evidence sources.
    pub boot: BootOptions,
    /// Node evidence sources.
    pub node_evidence: NodeOptions,
    /// The cluster.
    pub cluster: ClusterConfig,
    /// The planner's policy.
    pub policy: Policy,
    /// How `status` and `run` print.
    pub output: OutputFormat,
}

/// `run`'s own options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunConfig {
    /// Show the plan only.
    pub dry_run: bool,
    /// Apply without asking.
    pub yes: bool,
    /// How long to wait for another Lease holder.
    pub lease_wait: Duration,
}

/// The agent's own options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// When it acts.
    pub act_on: ActOn,
    /// How long after boot it keeps recovering.
    pub boot_window: Duration,
    /// Where /metrics and the health endpoints listen, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    /// How often the readiness checks run once idle (zero: never).
    pub check_every: Duration,
}

/// The command to run, with its configuration.
#[derive(Debug, Clone)]
pub enum Invocation {
    /// `vmrecover status`.
    Status(Config),
    /// `vmrecover status --all-nodes`.
    AllNodes(Config),
    /// `vmrecover run` (and `vmrecover --dry-run`).
    Run(Config, RunConfig),
    /// `vmrecover agent`.
    Agent(Config, AgentConfig),
    /// `vmrecover check`.
    Check(Config, crate::check::CheckOptions),
    /// `vmrecover boot-record`: needs no node and no cluster.
    BootRecord {
        /// Start or stop.
        action: BootRecordAction,
        /// The state directory.
        state_dir: PathBuf,
        /// The host root (boot_id, machine-id).
        host_root: PathBuf,
    },
}

impl Invocation {
    /// Resolves the parsed command line (flags and their environment variables).
    pub fn resolve(cli: Cli) -> Result<Self, ConfigError> {
        let g = &cli.global;
        Ok(match cli.command {
            Some(Command::BootRecord(args)) => Invocation::BootRecord {
                action: args.action,
                state_dir: g.state_dir.clone(),
                host_root: g.host_root.clone(),
            },
            Some(Command::Status(args)) if args.all_nodes => {
                Invocation::AllNodes(Config::resolve(g, &[], false)?)
            }
            Some(Command::Status(_)) => Invocation::Status(Config::resolve(g, &[], false)?),
            Some(Command::Run(args)) => run_invocation(g, &args)?,
            Some(Command::Check(args)) => Invocation::Check(
                Config::resolve(g, &[], false)?,
                crate::check::CheckOptions {
                    fail_on: match args.fail_on {
                        crate::cli::FailOnArg::Warn => crate::check::FailOn::Warn,
                        crate::cli::FailOnArg::Fail => crate::check::FailOn::Fail,
                    },
                    site: args.site,
                },
            ),
            None => run_invocation(g, &RunArgs::dry_run_defaults())?,
            Some(Command::Agent(args)) => {
                Invocation::Agent(Config::resolve(g, &[], false)?, agent_config(&args)?)
            }
        })
    }
}

fn run_invocation(g: &GlobalArgs, args: &RunArgs) -> Result<Invocation, ConfigError> {
    let mut cfg = Config::resolve(g, &args.only, args.kill_orphans)?;
    cfg.policy.during_upgrade = args.during_upgrade;
    cfg.policy.honour_pause = !args.ignore_pause;
    if let Some(node) = args.fenced_node.as_deref().filter(|n| !n.is_empty()) {
        // The dead node's own Lease, its own intents (never this machine's), no orphan
        // kills (no process of that node can be seen from here).
        cfg.policy.fenced = true;
        cfg.policy.kill_orphans = false;
        cfg.state_dir = cfg.state_dir.join(format!("fenced-{node}"));
        cfg.node = node.to_string();
    }
    Ok(Invocation::Run(
        cfg,
        RunConfig {
            dry_run: args.dry_run,
            yes: args.yes,
            lease_wait: args.lease_wait,
        },
    ))
}

fn agent_config(args: &AgentArgs) -> Result<AgentConfig, ConfigError> {
    let metrics_addr = match args.metrics_addr.as_str() {
        "off" => None,
        a => Some(
            a.parse()
                .map_err(|e: std::net::AddrParseError| ConfigError::MetricsAddr {
                    given: a.to_string(),
                    why: e.to_string(),
                })?,
        ),
    };
    Ok(AgentConfig {
        act_on: args.act_on,
        boot_window: args.boot_window,
        metrics_addr,
        check_every: args.check_every,
    })
}

impl Config {
    fn resolve(
        g: &GlobalArgs,
        only: &[crate::cluster::NamespacedName],
        kill_orphans: bool,
    ) -> Result<Self, ConfigError> {
        let defaults = Tuning::default();
        Ok(Config {
            node: node_name(g.node.as_deref())?,
            state_dir: g.state_dir.clone(),
            boot: BootOptions {
                state_dir: g.state_dir.clone(),
                journal_dir: g.journal_dir.clone(),
                journal_tail: g.journal_tail,
                host_root: g.host_root.clone(),
            },
            node_evidence: NodeOptions {
                host_root: g.host_root.clone(),
            },
            cluster: ClusterConfig {
                kubeconfig: g.kubeconfig.clone(),
                namespace: g.namespace.clone(),
                tuning: Tuning {
                    request_timeout: if g.tuning.request_timeout.is_zero() {
                        defaults.request_timeout
                    } else {
                        g.tuning.request_timeout
                    },
                    apply_concurrency: if g.tuning.apply_concurrency == 0 {
                        defaults.apply_concurrency
                    } else {
                        g.tuning.apply_concurrency
                    },
                    ..defaults
                },
            },
            policy: Policy {
                stuck_after: g.policy.stuck_after,
                controller_grace: g.policy.controller_grace,
                max_vms: g.policy.max_vms,
                also_finalizers: g.policy.also_finalizer.clone(),
                only: only.to_vec(),
                kill_orphans,
                honour_pause: true,
                during_upgrade: false,
                fenced: false,
            },
            output: g.output,
        })
    }

    /// A configuration for tests and embedding: `node` with defaults everywhere else.
    pub fn for_node(node: &str, state_dir: PathBuf, host_root: PathBuf) -> Self {
        Config {
            node: node.to_string(),
            state_dir: state_dir.clone(),
            boot: BootOptions {
                state_dir,
                journal_dir: None,
                journal_tail: 400,
                host_root: host_root.clone(),
            },
            node_evidence: NodeOptions { host_root },
            cluster: ClusterConfig {
                kubeconfig: None,
                namespace: "harvester-system".into(),
                tuning: Tuning::default(),
            },
            policy: Policy::default(),
            output: OutputFormat::Table,
        }
    }
}

/// This node's name: `--node`/`NODE_NAME`, else the hostname.
fn node_name(given: Option<&str>) -> Result<String, ConfigError> {
    if let Some(n) = given.filter(|n| !n.is_empty()) {
        return Ok(n.to_string());
    }
    nix::unistd::gethostname()
        .map_err(|e| ConfigError::NodeName(format!("cannot read the hostname ({e}): pass --node")))?
        .into_string()
        .map_err(|_| ConfigError::NodeName("the hostname is not UTF-8: pass --node".into()))
}
