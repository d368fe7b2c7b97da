//! One file per subcommand; `dispatch` resolves the parsed command line once and hands
//! each command its configuration.

mod all_nodes;
mod boot_record;
mod check;
mod run;
mod status;

use crate::cli::Cli;
use crate::config::Invocation;
use crate::exit::Outcome;

/// Runs the command the operator asked for and says how it ended.
pub async fn dispatch(cli: Cli) -> Outcome {
    let invocation = match Invocation::resolve(cli) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("vmrecover: {e}");
            return Outcome::Error;
        }
    };
    // Every Longhorn read of this process goes to the configured namespace (flag, file, default).
    if let Some(cfg) = invocation.config() {
        crate::cluster::set_longhorn_namespace(&cfg.longhorn_namespace);
    }
    match invocation {
        Invocation::Status(cfg, vm) => status::run(&cfg, vm.as_deref()).await,
        Invocation::AllNodes(cfg) => all_nodes::run(&cfg).await,
        Invocation::BootRecord {
            action,
            state_dir,
            host_root,
        } => boot_record::run(action, &state_dir, &host_root),
        Invocation::Run(cfg, run) => run::run(&cfg, &run).await,
        Invocation::Check(cfg, opts) => check::run(&cfg, &opts).await,
        Invocation::Agent(cfg, agent) => crate::agent::run(&cfg, &agent).await,
        Invocation::Idle => idle().await,
    }
}

/// `vmrecover idle`: waits for SIGTERM or Ctrl-C and exits 0 (host mode's pod container).
async fn idle() -> Outcome {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        eprintln!("vmrecover idle: cannot handle SIGTERM");
        return Outcome::Error;
    };
    eprintln!("vmrecover idle: the agent runs on the host (host mode); waiting for SIGTERM");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Outcome::Done
}
