//! The `vmrecover` binary: parse, set up logging, dispatch, exit with the codes of docs/architecture.md §8.

use std::process::ExitCode;

use vmrecover::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse_checked();
    vmrecover::cluster::set_longhorn_namespace(&cli.global.longhorn_namespace);
    vmrecover::logging::init(
        &cli.global.log_level,
        cli.global.log_format,
        cli.global.log_target,
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vmrecover: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(vmrecover::commands::dispatch(cli)).into()
}
