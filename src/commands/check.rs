//! `vmrecover check`: connects (exit 1 with why when it cannot), runs every check, prints one
//! line per check (or JSON) and exits 0 all ok, 3 something needs a person.

use crate::check::{self, CheckOptions};
use crate::cli::OutputFormat;
use crate::config::Config;
use crate::exit::Outcome;

/// Runs the checks.
pub async fn run(cfg: &Config, opts: &CheckOptions) -> Outcome {
    let client = match crate::cluster::connect(&cfg.cluster).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vmrecover check: cannot run the checks: {e}");
            return Outcome::Error;
        }
    };
    if let Err(e) = client.apiserver_version().await {
        eprintln!(
            "vmrecover check: cannot run the checks: the API server does not answer: {}",
            crate::cluster::describe(&e, "get", "/version")
        );
        return Outcome::Error;
    }
    let checks = check::run_all(cfg, opts, &client).await;
    match cfg.output {
        OutputFormat::Json => match serde_json::to_string_pretty(&checks) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("vmrecover check: cannot print JSON: {e}");
                return Outcome::Error;
            }
        },
        OutputFormat::Table | OutputFormat::Wide => print!("{}", check::table(&checks)),
    }
    check::outcome(&checks, opts.fail_on)
}
