//! Command-line interface (docs/architecture.md §8): subcommands, global options and their help.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cluster::NamespacedName;

/// Recover KubeVirt VMs left stuck `Stopping`/`Terminating` on this Harvester node
/// after a power cut.
///
/// vmrecover decides whether the node's last shutdown was unclean, proves from the node
/// itself that nothing of a stuck VM still runs or holds a disk here, and only then lets
/// the controllers finish or clears the known KubeVirt/Harvester finalizers itself.
#[derive(Debug, Parser)]
#[command(name = "vmrecover", version, propagate_version = true, after_help = EXIT_CODES)]
pub struct Cli {
    /// Shorthand for `vmrecover run --dry-run`: print the plan, change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Options every subcommand takes.
    #[command(flatten)]
    pub global: GlobalArgs,

    /// The subcommand (none with the top-level `--dry-run`).
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// Parses the command line, enforcing what clap's derive cannot express: the
    /// top-level `--dry-run` stands alone, and a subcommand is required without it.
    pub fn parse_checked() -> Self {
        match Self::try_parse_checked(std::env::args_os()) {
            Ok(cli) => cli,
            Err(e) => {
                // --help and --version print to stdout and succeed; every usage error is
                // exit code 1 (docs/architecture.md §8), not clap's default 2.
                let _ = e.print();
                std::process::exit(if e.use_stderr() { 1 } else { 0 });
            }
        }
    }

    /// Like [`Cli::parse_checked`] from an explicit argument list.
    pub fn try_parse_checked<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::check(<Self as Parser>::try_parse_from(args)?)
    }

    fn check(cli: Self) -> Result<Self, clap::Error> {
        use clap::CommandFactory;
        match (&cli.command, cli.dry_run) {
            (Some(_), true) => Err(Cli::command().error(
                clap::error::ErrorKind::ArgumentConflict,
                "the top-level --dry-run is shorthand for `run --dry-run` and takes no subcommand; \
                 use `vmrecover run --dry-run`",
            )),
            (None, false) => Err(Cli::command().error(
                clap::error::ErrorKind::MissingSubcommand,
                "a subcommand is required (status, run, agent, boot-record, check), or --dry-run",
            )),
            _ => Ok(cli),
        }
    }
}

const EXIT_CODES: &str = "Exit codes: 0 done or nothing to do · 1 error (unreachable API, \
unreadable evidence, bad flags) · 3 some VMs blocked and left for a person. `status` as a \
monitoring check: 0 all fine (VMs only waiting are fine), 3 some VM blocked or the plan \
refused, 1 the state could not be read.";

/// Options every subcommand takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Configuration file (YAML, keys as the chart's values: stuckAfter, controllerGrace,
    /// maxVms, alsoFinalizers, actOn, bootWindow, longhornNamespace); flags override it.
    /// Default: /etc/vmrecover/config.yaml (the pod's ConfigMap), else
    /// <state-dir>/config.yaml (the host's), else none.
    #[arg(long, env = "VMRECOVER_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Kubeconfig to use; without it, in-cluster config or the default kubeconfig.
    #[arg(long, env = "KUBECONFIG", global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// This node's name as the cluster knows it (must match a Node object).
    /// Defaults to the hostname.
    #[arg(long, env = "NODE_NAME", global = true, value_name = "NAME")]
    pub node: Option<String>,

    /// Persistent directory for boot records and run reports. On Harvester, /var/lib is
    /// mostly tmpfs: keep the default or use /var/lib/rancher/vmrecover.
    #[arg(
        long,
        env = "VMRECOVER_STATE_DIR",
        global = true,
        default_value = "/usr/local/vmrecover",
        value_name = "DIR"
    )]
    pub state_dir: PathBuf,

    /// Where the host's root filesystem is visible (a DaemonSet mounts it, e.g. /host).
    #[arg(
        long,
        env = "VMRECOVER_HOST_ROOT",
        global = true,
        default_value = "/",
        value_name = "DIR"
    )]
    pub host_root: PathBuf,

    /// Journal directory to read (passed to `journalctl -D`); without it, the system journal.
    #[arg(long, env = "VMRECOVER_JOURNAL_DIR", global = true, value_name = "DIR")]
    pub journal_dir: Option<PathBuf>,

    /// How many entries of the previous boot's journal tail to read.
    #[arg(long, global = true, default_value_t = 400, value_name = "N")]
    pub journal_tail: usize,

    /// Namespace for vmrecover's Lease and its own objects.
    #[arg(
        long,
        env = "VMRECOVER_NAMESPACE",
        global = true,
        default_value = "harvester-system",
        value_name = "NS"
    )]
    pub namespace: String,

    /// Longhorn's namespace: every read of Longhorn's volumes and volume attachments goes
    /// there (the chart's `longhornNamespace`, whose Role grants those reads). Overrides the
    /// configuration file's `longhornNamespace`; default longhorn-system.
    #[arg(
        long,
        env = "VMRECOVER_LONGHORN_NAMESPACE",
        global = true,
        value_name = "NS"
    )]
    pub longhorn_namespace: Option<String>,

    /// Output format of `status` and `run`: a table for people, or JSON (the full
    /// facts, plan and report) for tools.
    #[arg(long, short, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// Log format: text for people, json for containers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Where logs go: auto is journald when its socket exists and we run as a
    /// service, stderr otherwise.
    #[arg(long, global = true, value_enum, default_value_t = LogTarget::Auto)]
    pub log_target: LogTarget,

    /// The recovery policy.
    #[command(flatten)]
    pub policy: PolicyArgs,

    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `vmrecover=debug`.
    #[arg(long, env = "VMRECOVER_LOG", global = true, default_value = "info")]
    pub log_level: String,

    /// Test hooks and limits, from the environment.
    #[command(flatten)]
    pub tuning: TuningArgs,
}

/// Knobs for tests and unusual sites, read from the environment only (hidden from
/// `--help`): how long one API request may take, how many VMs are worked on at once.
#[derive(Debug, Clone, Args)]
pub struct TuningArgs {
    /// How long one API request may take before it counts as failed.
    #[arg(long, env = "VMRECOVER_REQUEST_TIMEOUT", global = true, hide = true,
          value_parser = parse_duration, default_value = "15s")]
    pub request_timeout: Duration,

    /// VMs worked on at once by `run` and the agent (the crash tests use 1, so a kill
    /// after the Nth request lands between two requests).
    #[arg(
        long,
        env = "VMRECOVER_APPLY_CONCURRENCY",
        global = true,
        hide = true,
        default_value_t = 16
    )]
    pub apply_concurrency: usize,

    /// How often the agent looks for a change of its configuration file.
    #[arg(long, env = "VMRECOVER_CONFIG_CHECK", global = true, hide = true,
          value_parser = parse_duration, default_value = "15s")]
    pub config_check: Duration,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Log destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogTarget {
    /// journald under systemd when its socket exists, else stderr.
    Auto,
    /// Always journald.
    Journald,
    /// Always stderr.
    Stderr,
}

/// Output format of `status` and `run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A table for people: one row per VM that needs attention, then notes and a total.
    Table,
    /// Every VM's decision with its full proof, steps and skipped side effects (kubectl's
    /// `-o wide`; `status NS/NAME` shows one VM so).
    Wide,
    /// The full facts/plan/report as JSON, for tools and tests.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what this node's agent saw and decided, per VM, with reasons.
    ///
    /// Works without cluster access (it says which evidence it could not read). Usable as
    /// a monitoring check: exit 0 all fine (VMs only waiting are fine), 3 some VM blocked
    /// or the plan refused (a person should look), 1 the state could not be read
    /// (API unreachable, evidence unreadable).
    Status(StatusArgs),
    /// Plan recovery for the VMs stuck on this node and, unless --dry-run, apply it.
    Run(RunArgs),
    /// The daemon: boot check, wait for the API, recover, keep watching.
    Agent(AgentArgs),
    /// Record this boot as running (start) or cleanly stopped (stop); called by
    /// vmrecover-boot.service.
    BootRecord(BootRecordArgs),
    /// Do nothing until SIGTERM: the DaemonSet's container in host mode, where the agent
    /// runs on the host and the pod only installs its files.
    #[command(hide = true)]
    Idle,
    /// Prove, changing nothing, that a recovery would work on this node and cluster: one
    /// line per check, ok/warn/fail with the evidence and the fix (docs/runbook.md).
    ///
    /// Exit 0 all ok, 3 something needs a person (a fail, or a warn unless --fail-on fail),
    /// 1 the checks could not run (no kubeconfig, API unreachable).
    Check(CheckArgs),
}

/// `check` options.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Which verdict makes the exit code 3: any warn (default) or only a fail.
    #[arg(long, value_enum, default_value_t = FailOnArg::Warn)]
    pub fail_on: FailOnArg,

    /// Also look at every VM of the site for unknown finalizers (a person's command).
    #[arg(long)]
    pub site: bool,
}

/// `--act-on` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ActOnArg {
    /// Only after an unclean-shutdown verdict.
    Unclean,
    /// On any verdict.
    Always,
    /// Never: report only.
    Never,
}

/// `--fail-on` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailOnArg {
    /// A warn or a fail exits 3.
    Warn,
    /// Only a fail exits 3.
    Fail,
}

/// `status` options.
#[derive(Debug, Args, Default)]
pub struct StatusArgs {
    /// Every node of the site at once, from the Nodes and each agent's summary ConfigMap
    /// (exit 3 when any node needs a person: no agent, stale, paused-and-refused, blocked VMs).
    #[arg(long)]
    pub all_nodes: bool,

    /// One VM, everything: its decision, evidence, steps, skipped side effects, and what the
    /// last run did to it (NAMESPACE/NAME).
    #[arg(value_name = "NAMESPACE/NAME", conflicts_with = "all_nodes")]
    pub vm: Option<String>,
}

/// `run` options.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Print the exact plan and make no change (no mutating API call, ever).
    #[arg(long)]
    pub dry_run: bool,

    /// Apply without asking (required when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Limit the run to these VMs (repeatable), as NAMESPACE/NAME.
    #[arg(long, value_name = "NS/NAME", value_parser = parse_ns_name)]
    pub only: Vec<NamespacedName>,

    /// Also kill orphan virt-launcher/qemu processes (SIGTERM, grace, SIGKILL).
    #[arg(long)]
    pub kill_orphans: bool,

    /// How long to wait for another holder of this node's Lease before giving up.
    #[arg(long, value_parser = parse_duration, default_value = "0s", value_name = "DURATION")]
    pub lease_wait: Duration,

    /// After the finalizers, follow each recovered VM until it is back or --follow-for
    /// ends (the default on a terminal).
    #[arg(long, conflicts_with = "no_follow")]
    pub follow: bool,

    /// Do not follow the recovered VMs (the default when stdout is not a terminal).
    #[arg(long)]
    pub no_follow: bool,

    /// Act even though a Harvester Upgrade is in progress (a person's confirmation; the
    /// agent never acts then).
    #[arg(long)]
    pub during_upgrade: bool,

    /// Act even though vmrecover is paused (node annotation `vmrecover.io/paused` or the
    /// cluster-wide ConfigMap `vmrecover-pause`): a person's override.
    #[arg(long)]
    pub ignore_pause: bool,

    /// A person's declaration that NODE is powered off for good: recover its stuck VMs from
    /// cluster evidence alone (requires the node.kubernetes.io/out-of-service taint and the
    /// node NotReady for at least --stuck-after; takes NODE's Lease; never done by an agent).
    #[arg(long, value_name = "NODE")]
    pub fenced_node: Option<String>,

    /// With --fenced-node: how long NODE's signs of life (virt-handler heartbeat, its
    /// vmrecover Lease and summary, Longhorn's node) are watched for a change before acting;
    /// a sign this recent by the API server's clock also refuses the run.
    #[arg(long, value_parser = parse_duration, default_value = "132s", value_name = "DURATION")]
    pub fence_watch: Duration,
}

impl RunArgs {
    /// The options `vmrecover --dry-run` stands for.
    pub fn dry_run_defaults() -> Self {
        let cli = Cli::try_parse_from(["vmrecover", "run", "--dry-run"]);
        match cli.map(|c| c.command) {
            Ok(Some(Command::Run(args))) => args,
            _ => unreachable!("`run --dry-run` always parses"),
        }
    }
}

/// `agent` options.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// When to act automatically [default: unclean; config file: actOn].
    #[arg(long, value_enum)]
    pub act_on: Option<ActOnArg>,

    /// How long after boot the agent keeps recovering VMs that become stuck [default: 30m;
    /// config file: bootWindow].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub boot_window: Option<Duration>,

    /// Address for /metrics, /healthz and /readyz; `off` disables them.
    #[arg(long, default_value = "0.0.0.0:9477", value_name = "ADDR|off")]
    pub metrics_addr: String,

    /// How often the readiness checks (`vmrecover check`) run once the boot window closed and
    /// nothing is pending, with a per-node offset; `0s` never.
    #[arg(long, value_parser = parse_duration, default_value = "6h", value_name = "DURATION")]
    pub check_every: Duration,
}

/// `boot-record` options.
#[derive(Debug, Args)]
pub struct BootRecordArgs {
    /// Which end of the boot to record.
    #[arg(value_enum)]
    pub action: BootRecordAction,
}

/// The two ends of a boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BootRecordAction {
    /// This boot is running.
    Start,
    /// This boot is stopping cleanly.
    Stop,
}

/// Recovery policy options shared by `status`, `run` and `agent`. Each overrides the
/// configuration file's key of the same name; without either, the default applies.
#[derive(Debug, Clone, Default, Args)]
pub struct PolicyArgs {
    /// A VMI counts as stuck once it has been deleting this long (counted from the later
    /// of its deletionTimestamp and this boot) [default: 5m; config file: stuckAfter].
    #[arg(long, global = true, value_parser = parse_duration, value_name = "DURATION")]
    pub stuck_after: Option<Duration>,

    /// How long to let virt-controller/Harvester clear their own finalizers before
    /// vmrecover clears them [default: 2m; config file: controllerGrace].
    #[arg(long, global = true, value_parser = parse_duration, value_name = "DURATION")]
    pub controller_grace: Option<Duration>,

    /// At most this many VMs per run; a plan that would touch more is refused whole
    /// [default: 50; config file: maxVms].
    #[arg(long, global = true, value_name = "N")]
    pub max_vms: Option<usize>,

    /// Also remove this finalizer (repeatable; given, it replaces the config file's
    /// alsoFinalizers). Unknown finalizers are otherwise kept.
    #[arg(long, global = true, value_name = "NAME")]
    pub also_finalizer: Vec<String>,

    /// How long a recovered VM is followed until it is running again, gone, or reported
    /// not back with why; 0s: not followed [default: 5m; config file: followFor].
    #[arg(long, global = true, value_parser = parse_duration, value_name = "DURATION")]
    pub follow_for: Option<Duration>,
}

fn parse_ns_name(s: &str) -> Result<NamespacedName, crate::cluster::NotNamespacedName> {
    s.parse()
}

/// A flag's value that is not a duration.
#[derive(Debug, thiserror::Error)]
#[error("{given:?} is not a duration (e.g. 90s, 5m, 1h): {source}")]
struct NotADuration {
    given: String,
    source: humantime::DurationError,
}

fn parse_duration(s: &str) -> Result<Duration, NotADuration> {
    humantime::parse_duration(s).map_err(|source| NotADuration {
        given: s.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn only_takes_namespace_slash_name() {
        assert_eq!(
            parse_ns_name("default/vm1").unwrap(),
            NamespacedName {
                namespace: "default".into(),
                name: "vm1".into()
            }
        );
        for bad in ["vm1", "/vm1", "default/", "a/b/c"] {
            assert!(parse_ns_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn top_level_dry_run_needs_no_subcommand() {
        let cli = Cli::try_parse_checked(["vmrecover", "--dry-run"]).unwrap();
        assert!(cli.dry_run && cli.command.is_none());
        assert!(Cli::try_parse_checked(["vmrecover", "--dry-run", "status"]).is_err());
        assert!(Cli::try_parse_checked(["vmrecover"]).is_err());
    }
}
