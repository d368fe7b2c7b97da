//! One file per subcommand; `dispatch` maps the parsed command line to them.

mod boot_record;
mod run;

pub use run::stop_on_signal;
mod status;

use crate::cli::{Cli, Command};
use crate::exit::Outcome;

/// Runs the command the operator asked for and says how it ended.
pub async fn dispatch(cli: Cli) -> Outcome {
    let global = cli.global;
    match cli.command {
        Some(Command::Status) => status::run(&global).await,
        Some(Command::BootRecord(args)) => boot_record::run(&global, &args),
        Some(Command::Run(args)) => run::run(&global, &args).await,
        None => {
            // `vmrecover --dry-run`: the same as `vmrecover run --dry-run`.
            let args = crate::cli::RunArgs::dry_run_defaults();
            run::run(&global, &args).await
        }
        Some(Command::Agent(args)) => crate::agent::run(&global, &args).await,
    }
}
