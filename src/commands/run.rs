//! `vmrecover run [--dry-run]`: plan, show, confirm, take the Lease, apply, report.

use std::io::{BufRead, IsTerminal, Write};

use crate::cli::{GlobalArgs, OutputFormat, RunArgs};
use crate::config::Policy;
use crate::exit::Outcome;
use crate::pipeline;
use crate::recovery::model::Plan;
use crate::recovery::plan::plan;
use crate::recovery::render;
use crate::recovery::report::RunReport;
use crate::recovery::session::Session;

/// Runs `vmrecover run`.
pub async fn run(global: &GlobalArgs, args: &RunArgs) -> Outcome {
    let node = match pipeline::node_name(global) {
        Ok(n) => n,
        Err(e) => return fail(&e),
    };
    let started = jiff::Timestamp::now();
    let policy = Policy::from_args(&global.policy, &args.only, args.kill_orphans);
    let gathering = pipeline::gather(global, &node, None).await;
    let client = match gathering.client {
        Ok(c) => c,
        Err(e) => {
            return fail(&format!(
                "cannot reach the cluster, nothing was changed: {e}"
            ))
        }
    };
    let plan = plan(&gathering.facts, &policy);

    if args.dry_run {
        return print_plan(&plan, global.output)
            .map_or_else(|e| fail(&e), |()| plan_outcome(&plan));
    }
    if !plan.has_work() {
        if let Err(e) = print_plan(&plan, global.output) {
            return fail(&e);
        }
        if global.output == OutputFormat::Table {
            println!("\nNothing to apply on node {node}.");
        }
        return plan_outcome(&plan);
    }
    if global.output == OutputFormat::Table {
        if let Err(e) = print_plan(&plan, global.output) {
            return fail(&e);
        }
    }
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return fail("stdin is not a terminal: review the plan with --dry-run, then pass --yes to apply it");
        }
        match confirm(&plan) {
            Ok(true) => {}
            Ok(false) => {
                eprintln!("vmrecover: not applied; nothing was changed");
                return Outcome::Done;
            }
            Err(e) => return fail(&format!("cannot read the answer: {e}")),
        }
    }

    let session = Session {
        client,
        node: node.clone(),
        namespace: global.namespace.clone(),
        state_dir: global.state_dir.clone(),
        host_root: global.host_root.clone(),
        mode: "manual",
        lease_wait: args.lease_wait,
        cancel: stop_on_signal(),
    };
    let report = match session.apply(plan, started).await {
        Ok(r) => r,
        Err(e) => return fail(&format!("{e}; nothing was changed")),
    };
    let printed = match global.output {
        OutputFormat::Json => serde_json::to_string_pretty(&report)
            .map(|s| println!("{s}"))
            .map_err(|e| e.to_string()),
        OutputFormat::Table => {
            let mut out = std::io::stdout().lock();
            writeln!(out)
                .and_then(|()| render::report(&report, &mut out))
                .map_err(|e| e.to_string())
        }
    };
    if let Err(e) = printed {
        return fail(&format!("cannot write the report: {e}"));
    }
    report_outcome(&report)
}

/// A flag that turns true on SIGTERM or Ctrl-C, so a run stops between steps and
/// releases its Lease instead of dying mid-step.
pub fn stop_on_signal() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::warn!("asked to stop: finishing the current step, then releasing the lease");
        let _ = tx.send(true);
    });
    rx
}

fn print_plan(plan: &Plan, output: OutputFormat) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    match output {
        OutputFormat::Json => serde_json::to_writer_pretty(&mut out, plan)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out)),
        OutputFormat::Table => render::plan(plan, &mut out),
    }
    .map_err(|e| format!("cannot write the plan: {e}"))
}

fn confirm(plan: &Plan) -> std::io::Result<bool> {
    let n = plan.actionable().count();
    eprint!(
        "\nApply this plan to {n} VM(s) on node {}? [y/N] ",
        plan.node
    );
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES"))
}

/// Exit code for a plan that is only shown.
pub fn plan_outcome(plan: &Plan) -> Outcome {
    if plan.has_blocked() {
        Outcome::Blocked
    } else {
        Outcome::Done
    }
}

/// Exit code after applying: 1 when a VM failed with an error, 3 when any VM is left
/// for a person, else 0.
pub fn report_outcome(report: &RunReport) -> Outcome {
    if report.failed() > 0 || report.stopped.is_some() {
        Outcome::Error
    } else if report.aborted() > 0 || report.plan.has_blocked() {
        Outcome::Blocked
    } else {
        Outcome::Done
    }
}

fn fail(msg: &str) -> Outcome {
    eprintln!("vmrecover run: {msg}");
    Outcome::Error
}
