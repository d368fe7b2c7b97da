//! `vmrecover run [--dry-run]`: plan, show, confirm, take the Lease, apply, report.

use std::io::{BufRead, IsTerminal, Write};

use crate::cli::OutputFormat;
use crate::cluster::EventRecorder;
use crate::config::{Config, RunConfig};
use crate::exit::Outcome;
use crate::pipeline;
use crate::recovery::{
    follow_report, plan, render_plan, render_plan_table, render_report, Looks, Mode, Plan,
    ReportStore, RunReport, Session,
};
use crate::shutdown::stop_on_signal;

/// Runs `vmrecover run`.
pub async fn run(cfg: &Config, args: &RunConfig) -> Outcome {
    let node = &cfg.node;
    let started = jiff::Timestamp::now();
    let policy = &cfg.policy;
    if policy.fenced {
        // A fenced node's run keeps its own intents and report, apart from this machine's.
        if let Err(e) = std::fs::create_dir_all(&cfg.state_dir) {
            return fail(&format!(
                "cannot create {}: {e}; nothing was changed",
                cfg.state_dir.display()
            ));
        }
    }
    let gathering = pipeline::gather(cfg, None).await;
    let client = match gathering.client {
        Ok(c) => c,
        Err(e) => {
            return fail(&format!(
                "cannot reach the cluster, nothing was changed: {e}"
            ))
        }
    };
    let plan = plan(&gathering.facts, policy);

    if args.dry_run {
        return print_plan(&plan, cfg.output)
            .map_or_else(|e| fail(&e.to_string()), |()| plan_outcome(&plan));
    }
    pipeline::record_seen(cfg, &gathering.facts);
    if !plan.has_work() {
        if let Err(e) = print_plan(&plan, cfg.output) {
            return fail(&e.to_string());
        }
        if cfg.output != OutputFormat::Json {
            let blocked = plan
                .decisions
                .iter()
                .filter(|d| matches!(d.action, crate::recovery::Action::Blocked))
                .count();
            println!(
                "\nNothing to apply on node {node}{}.",
                if blocked > 0 {
                    format!("; {blocked} VM(s) blocked and left for a person (see why above)")
                } else {
                    String::new()
                }
            );
        }
        return plan_outcome(&plan);
    }
    if cfg.output != OutputFormat::Json {
        if let Err(e) = print_plan(&plan, cfg.output) {
            return fail(&e.to_string());
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

    let follow_client = client.clone();
    let cancel = stop_on_signal();
    let regather = pipeline::Regatherer::new(cfg, client.clone());
    let mut session = Session::new(
        client,
        cfg,
        Mode::Manual,
        args.lease_wait,
        cancel.clone(),
        regather,
    );
    if cfg.output != OutputFormat::Json {
        // One line per VM as it starts and as it ends; styled on a terminal only.
        anstream::println!("\napplying:");
        session = session.with_progress(std::sync::Arc::new(|line: &str| {
            anstream::println!("  {line}");
        }));
    }
    let mut report = match session.apply(plan, started).await {
        Ok(r) => r,
        Err(e) => return fail(&format!("{e}; nothing was changed")),
    };
    let follow = args
        .follow
        .unwrap_or_else(|| std::io::stdout().is_terminal())
        && !cfg.follow_for.is_zero();
    if follow && report.stopped.is_none() {
        follow_outcomes(cfg, &follow_client, &mut report, cancel).await;
    }
    let printed = match cfg.output {
        OutputFormat::Json => serde_json::to_string_pretty(&report)
            .map(|s| println!("{s}"))
            .map_err(|e| e.to_string()),
        OutputFormat::Table | OutputFormat::Wide => {
            let mut out = crate::style::stdout().lock();
            writeln!(out)
                .and_then(|()| render_report(&report, &mut out))
                .map_err(|e| e.to_string())
        }
    };
    if let Err(e) = printed {
        return fail(&format!("cannot write the report: {e}"));
    }
    report_outcome(&report)
}

/// Follows the recovered VMs for `followFor`, printing each outcome as it is known (on
/// stderr: stdout keeps the report), and saves the report again with the outcomes.
async fn follow_outcomes(
    cfg: &Config,
    client: &kube::Client,
    report: &mut RunReport,
    cancel: tokio::sync::watch::Receiver<bool>,
) {
    let n = report.recovered() + report.handed_over();
    if n == 0 {
        return;
    }
    if cfg.output != OutputFormat::Json {
        eprintln!(
            "following {n} recovered VM(s) for up to {} (--no-follow skips this)",
            humantime::format_duration(cfg.follow_for)
        );
    }
    let json = cfg.output == OutputFormat::Json;
    let events = EventRecorder::new(client.clone(), &cfg.node);
    follow_report(
        client,
        &events,
        &cfg.longhorn_namespace,
        report,
        cfg.follow_for,
        |vm, outcome| {
            if !json {
                let style = crate::style::outcome(outcome.label());
                anstream::eprintln!("  {vm}: {}", crate::style::paint(style, &outcome.line()));
            }
        },
        cancel,
        Looks::Polling,
    )
    .await;
    if let Err(e) = ReportStore::new(&cfg.state_dir).save(report) {
        tracing::warn!("the run report could not be saved with the outcomes: {e:#}");
    }
}

/// The plan could not be written to standard output (a closed pipe, a full disk).
#[derive(Debug, thiserror::Error)]
#[error("cannot write the plan: {0}")]
struct CannotPrint(std::io::Error);

fn print_plan(plan: &Plan, output: OutputFormat) -> Result<(), CannotPrint> {
    let mut out = crate::style::stdout().lock();
    match output {
        OutputFormat::Json => serde_json::to_writer_pretty(&mut out, plan)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out)),
        OutputFormat::Table => render_plan_table(plan, &mut out),
        OutputFormat::Wide => render_plan(plan, &mut out),
    }
    .map_err(CannotPrint)
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

/// Exit code for a plan that is only shown: 1 when it is refused because evidence could
/// not be read (e.g. a corrupt intents file), 3 when anything is blocked, else 0.
pub fn plan_outcome(plan: &Plan) -> Outcome {
    if plan.refused_by().is_some_and(|b| b.is_unreadable()) {
        Outcome::Error
    } else if plan.has_blocked() {
        Outcome::Blocked
    } else {
        Outcome::Done
    }
}

/// Exit code after applying: 1 when a VM failed with an error, the run stopped (Lease
/// lost, asked to stop) or a re-check could not read its evidence; 3 when any VM is left
/// for a person (a pause, an Upgrade, a process back: the re-check's typed reason), else 0.
pub fn report_outcome(report: &RunReport) -> Outcome {
    let unreadable = report
        .outcomes
        .iter()
        .any(|o| o.result.blocker().is_some_and(|b| b.is_unreadable()));
    if report.failed() > 0 || report.stopped.is_some() || unreadable {
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
