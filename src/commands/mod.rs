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
    match invocation {
        Invocation::Status(cfg) => status::run(&cfg).await,
        Invocation::AllNodes(cfg) => all_nodes::run(&cfg).await,
        Invocation::BootRecord {
            action,
            state_dir,
            host_root,
        } => boot_record::run(action, &state_dir, &host_root),
        Invocation::Run(cfg, run) => run::run(&cfg, &run).await,
        Invocation::Check(cfg, opts) => check::run(&cfg, &opts).await,
        Invocation::Agent(cfg, agent) => crate::agent::run(&cfg, &agent).await,
    }
}
