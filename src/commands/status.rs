//! `vmrecover status`: what this node's agent sees and decides, with reasons.

use std::io::Write;

use serde::Serialize;

use crate::boot::{self, BootFacts, BootOptions};
use crate::cli::{GlobalArgs, OutputFormat, StatusArgs};
use crate::exit::Outcome;
use crate::node::{self, NodeFacts, NodeOptions};

/// The status document, as `--output json` prints it.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// When the facts were gathered.
    pub now: jiff::Timestamp,
    /// Boot evidence and verdict.
    pub boot: BootFacts,
    /// Node evidence.
    pub node: NodeFacts,
}

/// Gathers and prints the status.
pub fn run(global: &GlobalArgs, args: &StatusArgs) -> Outcome {
    let now = jiff::Timestamp::now();
    let boot = boot::gather(
        &BootOptions {
            state_dir: global.state_dir.clone(),
            journal_dir: global.journal_dir.clone(),
            journal_tail: global.journal_tail,
            host_root: global.host_root.clone(),
        },
        now,
    );
    let node = node::gather(&NodeOptions {
        host_root: global.host_root.clone(),
    });
    let report = StatusReport { now, boot, node };
    let mut out = std::io::stdout().lock();
    let written = match args.output {
        OutputFormat::Json => serde_json::to_writer_pretty(&mut out, &report)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out)),
        OutputFormat::Table => boot::render_table(&report.boot, &mut out)
            .and_then(|()| writeln!(out))
            .and_then(|()| node::render_table(&report.node, &mut out)),
    };
    match written {
        Ok(()) => Outcome::Done,
        Err(e) => {
            eprintln!("vmrecover status: cannot write output: {e}");
            Outcome::Error
        }
    }
}
