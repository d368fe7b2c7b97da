//! Plans and run reports as text for operators.

use std::io::{self, Write};

use super::model::{Action, Decision, Plan, Step};
use super::report::{RunReport, VmResult};

/// Writes the plan: a summary line, then each VM with its decision, reasons, proof and steps.
pub fn plan(p: &Plan, out: &mut dyn Write) -> io::Result<()> {
    let count = |label: &str| {
        p.decisions
            .iter()
            .filter(|d| d.action.label() == label)
            .count()
    };
    writeln!(
        out,
        "Plan for node {} at {} (boot verdict: {:?}): {} VM(s): {} recover, {} blocked, {} waiting, {} healthy, {} not mine",
        p.node,
        p.at,
        p.verdict,
        p.decisions.len(),
        count("recover"),
        count("blocked"),
        count("waiting"),
        count("healthy"),
        count("not-mine"),
    )?;
    if let Some(note) = stuck_left_alone(p) {
        writeln!(out, "{note}")?;
    }
    if let Some(why) = &p.refused {
        writeln!(out, "REFUSED: {why}")?;
    }
    if !p.harvester.is_empty() {
        writeln!(out, "Harvester:")?;
        for note in &p.harvester {
            writeln!(out, "  {note}")?;
        }
    }
    for d in &p.decisions {
        writeln!(out)?;
        decision(d, out)?;
    }
    if !p.orphans.is_empty() {
        writeln!(out, "\nOrphan VM processes (no VMI on this node):")?;
        for o in &p.orphans {
            writeln!(
                out,
                "  pid {} {} claiming {}: {}",
                o.pid,
                o.kind.as_str(),
                o.claims,
                o.reason
            )?;
        }
    }
    Ok(())
}

/// One line about VMs that are deleting but left alone as another node's, migrating or
/// in doubt, so a run that changes nothing does not look like nothing is stuck.
pub fn stuck_left_alone(p: &Plan) -> Option<String> {
    let stuck: Vec<String> = p
        .decisions
        .iter()
        .filter(|d| matches!(d.action, Action::NotMine) && d.phase.contains("deleting"))
        .map(|d| format!("{}/{}", d.namespace, d.name))
        .collect();
    (!stuck.is_empty()).then(|| {
        format!(
            "{} deleting VM(s) left alone here as another node's or migrating: {} (see each \
             reason; that node's vmrecover decides them)",
            stuck.len(),
            super::plan::summarise(&stuck, 5)
        )
    })
}

/// Writes one decision in full: why, proof, steps, kept finalizers, skipped side effects.
pub fn decision(d: &Decision, out: &mut dyn Write) -> io::Result<()> {
    let until = match &d.action {
        Action::Waiting { until: Some(t) } => format!(" until {t}"),
        _ => String::new(),
    };
    writeln!(
        out,
        "{}/{}  [{}{}]  {}",
        d.namespace,
        d.name,
        d.action.label(),
        until,
        d.phase
    )?;
    let why: Vec<String> = d.reasons.iter().map(|r| r.text.clone()).collect();
    list(out, "why", &why)?;
    list(out, "proof", &d.evidence)?;
    if let Action::Recover { steps } = &d.action {
        let steps: Vec<String> = steps
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{}. {}", i + 1, step(s)))
            .collect();
        list(out, "steps", &steps)?;
    }
    list(out, "kept", &d.kept_finalizers)?;
    list(out, "skips", &d.skipped_side_effects)
}

/// One step in words.
pub fn step(s: &Step) -> String {
    match s {
        Step::ForceDeletePod { pod } => format!(
            "force-delete leftover launcher pod {} (grace 0, uid {})",
            pod.name, pod.uid
        ),
        Step::WaitForControllers { grace } => format!(
            "wait up to {} for virt-controller/Harvester to clear their own finalizers",
            humantime::format_duration(*grace)
        ),
        Step::ClearFinalizers {
            kind,
            object,
            remove,
            ..
        } => format!(
            "remove from {kind} {} (resourceVersion {}): {}",
            object.name,
            object.resource_version,
            remove.join(", ")
        ),
    }
}

fn list(out: &mut dyn Write, label: &str, items: &[String]) -> io::Result<()> {
    for (i, item) in items.iter().enumerate() {
        let head = if i == 0 {
            format!("{label}:")
        } else {
            String::new()
        };
        writeln!(out, "  {head:<7}{item}")?;
    }
    Ok(())
}

/// Writes a run report: what happened to each VM, then a summary line.
pub fn report(r: &RunReport, out: &mut dyn Write) -> io::Result<()> {
    for o in &r.outcomes {
        let result = match &o.result {
            VmResult::Recovered => "recovered",
            VmResult::FinishedByController => "finished by the controllers",
            VmResult::HandedToController => "launcher pod freed; the VM controller finishes it",
            VmResult::Aborted(_) => "left alone",
            VmResult::Failed { .. } => "FAILED",
        };
        writeln!(out, "{}/{}: {result}", o.namespace, o.name)?;
        if let Some(why) = o.result.reason() {
            writeln!(out, "  why:   {why}")?;
        }
        for s in &o.steps {
            writeln!(out, "  - {}: {}", s.step, s.result)?;
        }
        if let Some(f) = &o.follow {
            writeln!(out, "  after: {}", f.line())?;
        }
    }
    for o in &r.orphans {
        writeln!(out, "orphan pid {}: {}", o.pid, o.result)?;
    }
    if let Some(why) = &r.stopped {
        writeln!(out, "stopped: {why}")?;
    }
    for line in &r.pruned_intents {
        writeln!(out, "pruned: {line}")?;
    }
    let blocked = r
        .plan
        .decisions
        .iter()
        .filter(|d| matches!(d.action, Action::Blocked))
        .count();
    writeln!(
        out,
        "Run on node {} {}: {} recovered, {} handed to the VM controller, {} left alone, {} failed, {} blocked by evidence",
        r.plan.node,
        if r.dry_run { "(dry-run)" } else { "finished" },
        r.recovered(),
        r.handed_over(),
        r.aborted(),
        r.failed(),
        blocked
    )?;
    let followed: Vec<&str> = r
        .outcomes
        .iter()
        .filter_map(|o| o.follow.as_ref().map(|f| f.label()))
        .collect();
    if !followed.is_empty() {
        let n = |l: &str| followed.iter().filter(|x| **x == l).count();
        writeln!(
            out,
            "Afterwards: {} running again, {} not back in time, {} stopped as asked, {} gone.",
            n("running_again"),
            n("not_back"),
            n("stopped_as_asked"),
            n("gone")
        )?;
    }
    Ok(())
}
