//! One file per subcommand; `dispatch` maps the parsed command line to them.

mod boot_record;
mod status;

use crate::cli::{Cli, Command};
use crate::exit::Outcome;

/// Runs the command the operator asked for and says how it ended.
pub async fn dispatch(cli: Cli) -> Outcome {
    let global = cli.global;
    match cli.command {
        Some(Command::Status(args)) => status::run(&global, &args),
        Some(Command::BootRecord(args)) => boot_record::run(&global, &args),
        Some(Command::Run(_)) | None if cli.dry_run || cli.command.is_some() => {
            not_built_yet("`vmrecover run` (the recovery engine)")
        }
        Some(Command::Agent(_)) => not_built_yet("`vmrecover agent`"),
        _ => unreachable!("clap requires a subcommand or --dry-run"),
    }
}

fn not_built_yet(what: &str) -> Outcome {
    eprintln!("vmrecover: {what} is not built yet in this version; nothing was changed");
    Outcome::Error
}
