//! The resolved configuration: flags, environment, the configuration file and test hooks
//! are read here, once, into plain values that `pipeline`, the agent and the commands are
//! handed. Nothing below this module reads the command line, the environment or the file.
//! [`Layers::merge`] is the one place where flags, file and defaults meet.

mod file;
mod layers;
mod policy;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::boot::BootOptions;
use crate::cli::{AgentArgs, BootRecordAction, Cli, Command, GlobalArgs, OutputFormat, RunArgs};
use crate::cluster::DEFAULT_LONGHORN_NAMESPACE;
use crate::node::NodeOptions;

pub use file::{load as load_file, ConfigPath, FileConfig, FileError, POD_CONFIG};
pub use layers::{Layers, Merged, DEFAULT_FOLLOW_FOR};
pub use policy::{Policy, DEFAULT_FENCE_WATCH};

/// What a bad configuration is, in words that name the flag or the file's key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file is missing (when named), unreadable or invalid.
    #[error(transparent)]
    File(#[from] FileError),
    /// The node name could not be found.
    #[error("{0}")]
    NodeName(String),
    /// `--fenced-node` names no node (e.g. the fence Job's params ConfigMap with an empty
    /// `node`): refused rather than run as this machine's own `run`.
    #[error("--fenced-node needs the name of the node declared powered off, got an empty value (the fence Job reads it from ConfigMap vmrecover-fence-params, data.node: docs/runbook.md, \"A node that never comes back\")")]
    FencedNodeEmpty,
    /// `--fenced-node` is not a Node's name (it becomes a path under the state directory and
    /// a Lease's name, so it is checked as Kubernetes checks a Node's name).
    #[error("--fenced-node {0:?} is not a Node's name (lower-case letters, digits, '-' and '.', at most 253 characters, each dot-separated part starting and ending with a letter or digit)")]
    FencedNodeInvalid(String),
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActOn {
    /// Only after an unclean-shutdown verdict.
    Unclean,
    /// On any verdict.
    Always,
    /// Never: report only.
    Never,
}

impl From<crate::cli::ActOnArg> for ActOn {
    fn from(arg: crate::cli::ActOnArg) -> Self {
        match arg {
            crate::cli::ActOnArg::Unclean => ActOn::Unclean,
            crate::cli::ActOnArg::Always => ActOn::Always,
            crate::cli::ActOnArg::Never => ActOn::Never,
        }
    }
}

/// Limits and timeouts of the I/O shell (not policy: they change how, not what).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuning {
    /// How long one API request may take.
    pub request_timeout: Duration,
    /// VMs worked on at once.
    pub apply_concurrency: usize,
    /// How long the re-check rounds of one run share the storage VolumeAttachment list
    /// (cluster::VaCache); everything else a round reads is fresh.
    pub recheck_max_age: Duration,
    /// How long an orphan gets between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// How often the agent looks for a change of its configuration file (the kubelet
    /// itself takes up to about a minute to bring a changed ConfigMap into the pod).
    pub config_check: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            request_timeout: Duration::from_secs(15),
            apply_concurrency: 16,
            recheck_max_age: Duration::from_secs(2),
            kill_grace: Duration::from_secs(10),
            config_check: Duration::from_secs(15),
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
    /// Longhorn's namespace (its volumes and volumeattachments).
    pub longhorn_namespace: String,
    /// How long a recovered VM is followed (`--follow-for`, `followFor`).
    pub follow_for: Duration,
    /// Where the configuration came from, for the agent's re-reads.
    pub layers: Layers,
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
    /// Whether to follow the recovered VMs after the finalizers: `None` follows on a
    /// terminal only.
    pub follow: Option<bool>,
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

/// Which verdict makes `check` exit 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOn {
    /// Any warn or fail (the default).
    Warn,
    /// Only a fail (the Helm test: warnings do not fail an install).
    Fail,
}

/// `check`'s own options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOptions {
    /// Which verdict exits 3.
    pub fail_on: FailOn,
    /// Also every VM of the site (a person's command): unknown finalizers anywhere.
    pub site: bool,
}

/// The command to run, with its configuration.
#[derive(Debug, Clone)]
pub enum Invocation {
    /// `vmrecover status [NAMESPACE/NAME]`.
    Status(Config, Option<String>),
    /// `vmrecover status --all-nodes`.
    AllNodes(Config),
    /// `vmrecover run` (and `vmrecover --dry-run`).
    Run(Config, RunConfig),
    /// `vmrecover agent`.
    Agent(Config, AgentConfig),
    /// `vmrecover idle`: the host-mode DaemonSet's container.
    Idle,
    /// `vmrecover check`.
    Check(Config, CheckOptions),
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
    /// The resolved configuration, for the commands that have one.
    pub fn config(&self) -> Option<&Config> {
        match self {
            Invocation::Status(c, _)
            | Invocation::AllNodes(c)
            | Invocation::Run(c, _)
            | Invocation::Agent(c, _)
            | Invocation::Check(c, _) => Some(c),
            Invocation::Idle | Invocation::BootRecord { .. } => None,
        }
    }

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
                Invocation::AllNodes(Config::resolve(g, &[], false, None)?)
            }
            Some(Command::Status(args)) => {
                Invocation::Status(Config::resolve(g, &[], false, None)?, args.vm)
            }
            Some(Command::Run(args)) => run_invocation(g, &args)?,
            Some(Command::Check(args)) => Invocation::Check(
                Config::resolve(g, &[], false, None)?,
                CheckOptions {
                    fail_on: match args.fail_on {
                        crate::cli::FailOnArg::Warn => FailOn::Warn,
                        crate::cli::FailOnArg::Fail => FailOn::Fail,
                    },
                    site: args.site,
                },
            ),
            None => run_invocation(g, &RunArgs::dry_run_defaults())?,
            Some(Command::Agent(args)) => {
                let cfg = Config::resolve(g, &[], false, Some(&args))?;
                let agent = agent_config(&args, &cfg)?;
                Invocation::Agent(cfg, agent)
            }
            Some(Command::Idle) => Invocation::Idle,
        })
    }
}

/// Whether `name` is a valid Node name: a DNS-1123 subdomain (k8s.io/apimachinery
/// `validation.IsDNS1123Subdomain`, which Node names are checked against).
fn is_node_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

fn run_invocation(g: &GlobalArgs, args: &RunArgs) -> Result<Invocation, ConfigError> {
    let mut cfg = Config::resolve(g, &args.only, args.kill_orphans, None)?;
    cfg.policy.during_upgrade = args.during_upgrade;
    cfg.policy.honour_pause = !args.ignore_pause;
    if args
        .fenced_node
        .as_deref()
        .is_some_and(|n| n.trim().is_empty())
    {
        return Err(ConfigError::FencedNodeEmpty);
    }
    if let Some(node) = args.fenced_node.as_deref().filter(|n| !is_node_name(n)) {
        return Err(ConfigError::FencedNodeInvalid(node.to_string()));
    }
    if let Some(node) = args.fenced_node.as_deref() {
        // The dead node's own Lease, its own intents (never this machine's), no orphan
        // kills (no process of that node can be seen from here).
        cfg.policy.fenced = true;
        cfg.policy.fence_watch = args.fence_watch;
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
            follow: if args.follow {
                Some(true)
            } else if args.no_follow {
                Some(false)
            } else {
                None
            },
        },
    ))
}

fn agent_config(args: &AgentArgs, cfg: &Config) -> Result<AgentConfig, ConfigError> {
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
    let file = cfg.layers.file_config();
    let merged = cfg.layers.merge(&file);
    Ok(AgentConfig {
        // A refused file: report only until a valid one is read (agent/reload.rs).
        act_on: if cfg.layers.refused.is_some() {
            ActOn::Never
        } else {
            merged.act_on
        },
        boot_window: merged.boot_window,
        metrics_addr,
        check_every: args.check_every,
    })
}

impl Config {
    fn resolve(
        g: &GlobalArgs,
        only: &[crate::cluster::NamespacedName],
        kill_orphans: bool,
        agent: Option<&AgentArgs>,
    ) -> Result<Self, ConfigError> {
        let defaults = Tuning::default();
        let path = ConfigPath::resolve(g.config.as_deref(), &g.state_dir);
        // A command refuses a bad file; the agent starts without it, reporting only, and
        // takes the file once it is fixed (a crash loop would recover nothing at all).
        let (loaded, refused) = match (file::load(&path), agent) {
            (Ok(l), _) => (l, None),
            (Err(e), Some(_)) => (None, Some(e)),
            (Err(e), None) => return Err(e.into()),
        };
        let layers = Layers {
            path: Some(path),
            file: loaded.as_ref().map(|(p, t, _)| (p.clone(), t.clone())),
            flags: g.policy.clone(),
            act_on: agent.and_then(|a| a.act_on).map(ActOn::from),
            boot_window: agent.and_then(|a| a.boot_window),
            longhorn_namespace: g.longhorn_namespace.clone(),
            refused,
        };
        let m = layers.merge(&loaded.map(|(_, _, c)| c).unwrap_or_default());
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
                    config_check: if g.tuning.config_check.is_zero() {
                        defaults.config_check
                    } else {
                        g.tuning.config_check
                    },
                    ..defaults
                },
            },
            policy: Policy {
                stuck_after: m.stuck_after,
                controller_grace: m.controller_grace,
                max_vms: m.max_vms,
                also_finalizers: m.also_finalizers,
                only: only.to_vec(),
                kill_orphans,
                honour_pause: true,
                during_upgrade: false,
                fenced: false,
                fence_watch: policy::DEFAULT_FENCE_WATCH,
            },
            output: g.output,
            longhorn_namespace: m.longhorn_namespace,
            follow_for: m.follow_for,
            layers,
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
            longhorn_namespace: DEFAULT_LONGHORN_NAMESPACE.to_string(),
            follow_for: layers::DEFAULT_FOLLOW_FOR,
            layers: Layers::default(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(args: &[&str]) -> Result<Invocation, ConfigError> {
        Invocation::resolve(Cli::try_parse_checked(args).unwrap())
    }

    #[test]
    fn an_empty_fenced_node_is_refused_not_run_as_this_machines_run() {
        let e = resolve(&["vmrecover", "run", "--node", "n", "--fenced-node", ""]).err();
        assert!(matches!(e, Some(ConfigError::FencedNodeEmpty)), "{e:?}");
        let Ok(Invocation::Run(cfg, _)) =
            resolve(&["vmrecover", "run", "--node", "n", "--fenced-node", "dead"])
        else {
            panic!("run")
        };
        assert_eq!((cfg.node.as_str(), cfg.policy.fenced), ("dead", true));
        for bad in [" node-1", "a/../..", "Node-1", "-n", "n.", &"a".repeat(254)] {
            let arg = format!("--fenced-node={bad}");
            let e = resolve(&["vmrecover", "run", "--node", "n", &arg]).err();
            assert!(
                matches!(&e, Some(ConfigError::FencedNodeInvalid(g)) if g == bad),
                "{bad:?}: {e:?}"
            );
        }
        assert!(is_node_name("harvester-node-1.example.com"));
    }

    #[test]
    fn flags_override_the_file_which_overrides_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(
            &file,
            "stuckAfter: 10m\nmaxVms: 7\nalsoFinalizers: [a/b]\nactOn: always\nlonghornNamespace: storage\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let Invocation::Agent(cfg, agent) = resolve(&[
            "vmrecover",
            "agent",
            "--node",
            "n",
            "--config",
            f,
            "--max-vms",
            "3",
        ])
        .unwrap() else {
            panic!("agent")
        };
        assert_eq!(cfg.policy.stuck_after, Duration::from_secs(600), "file");
        assert_eq!(cfg.policy.max_vms, 3, "flag over file");
        assert_eq!(
            cfg.policy.controller_grace,
            Duration::from_secs(120),
            "default"
        );
        assert_eq!(cfg.policy.also_finalizers, ["a/b"]);
        assert_eq!(cfg.longhorn_namespace, "storage");
        assert_eq!(agent.act_on, ActOn::Always);
        assert_eq!(agent.boot_window, Duration::from_secs(1800));
        // status and run read the same file.
        let Invocation::Status(cfg, _) =
            resolve(&["vmrecover", "status", "--node", "n", "--config", f]).unwrap()
        else {
            panic!("status")
        };
        assert_eq!(
            (cfg.policy.max_vms, cfg.policy.also_finalizers.len()),
            (7, 1)
        );
        // An explicit file that is missing or bad is an error naming it.
        let missing = dir.path().join("none.yaml");
        let e = resolve(&[
            "vmrecover",
            "status",
            "--node",
            "n",
            "--config",
            missing.to_str().unwrap(),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("none.yaml: cannot read it"), "{e}");
        std::fs::write(&file, "maxVms: fifty\n").unwrap();
        let e = resolve(&["vmrecover", "run", "--node", "n", "--config", f]).unwrap_err();
        assert!(
            e.to_string().contains("line 1") && e.to_string().contains("at least 1"),
            "{e}"
        );
    }

    #[test]
    fn a_reload_sees_only_changes_and_keeps_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, "maxVms: 7\n").unwrap();
        let f = file.to_str().unwrap();
        let Invocation::Agent(cfg, _) = resolve(&[
            "vmrecover",
            "agent",
            "--node",
            "n",
            "--config",
            f,
            "--stuck-after",
            "1m",
        ])
        .unwrap() else {
            panic!("agent")
        };
        assert!(cfg.layers.reload().unwrap().is_none(), "unchanged");
        std::fs::write(&file, "maxVms: 9\nstuckAfter: 20m\n").unwrap();
        let (next, m) = cfg.layers.reload().unwrap().expect("changed");
        assert_eq!((m.max_vms, m.stuck_after), (9, Duration::from_secs(60)));
        assert!(next.reload().unwrap().is_none());
        std::fs::write(&file, "maxVms: nine\n").unwrap();
        assert!(next.reload().is_err());
    }
}
