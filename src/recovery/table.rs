//! The plan at a glance (kubectl's `get` to [`super::render`]'s `describe`): one row per
//! VM that needs attention — blocked first, always shown — then the notes that concern
//! the node or several VMs, each once, then a total. Healthy VMs are only counted.

use std::collections::BTreeMap;
use std::io::{self, Write};

use super::blocker::Blocker;
use super::finalizers::KNOWN_FINALIZERS;
use super::model::{Action, Decision, Plan, Step};

/// The longest cell of the WHY and NEXT STEP columns, and of a name.
const WHY_WIDTH: usize = 34;
const NEXT_WIDTH: usize = 52;
const NAME_WIDTH: usize = 36;

/// Writes the plan as a table, its notes and a total line.
pub fn plan(p: &Plan, out: &mut dyn Write) -> io::Result<()> {
    let rows: Vec<[String; 6]> = rows(p);
    if rows.is_empty() {
        writeln!(out, "No VM on this node needs anything.")?;
    } else {
        let header = [
            "NAMESPACE",
            "NAME",
            "STATE (VMI/VM)",
            "DECISION",
            "WHY",
            "NEXT STEP",
        ]
        .map(String::from);
        let mut widths = [0usize; 6];
        for r in std::iter::once(&header).chain(&rows) {
            for (w, cell) in widths.iter_mut().zip(r) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for (n, r) in std::iter::once(&header).chain(&rows).enumerate() {
            let mut line = String::new();
            for (i, (w, cell)) in widths.iter().zip(r).enumerate() {
                if i + 1 == r.len() {
                    line.push_str(cell);
                } else if i == 3 && n > 0 {
                    // The decision in its colour, padded outside the style.
                    line.push_str(&crate::style::paint(crate::style::decision(cell), cell));
                    line.push_str(&" ".repeat(w - cell.chars().count() + 2));
                } else {
                    line.push_str(&format!("{cell:<w$}  "));
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
    }
    for n in notes(p) {
        writeln!(out, "note: {n}")?;
    }
    writeln!(out, "{}", total(p))
}

/// The rows, blocked first, then what vmrecover will do, then what waits; VMs that are
/// healthy or another node's are left out unless they are deleting here.
fn rows(p: &Plan) -> Vec<[String; 6]> {
    let rank = |d: &Decision| match d.action {
        Action::Blocked => 0,
        Action::Recover { .. } => 1,
        Action::Waiting { .. } => 2,
        Action::NotMine => 3,
        Action::Healthy => 4,
    };
    let mut shown: Vec<&Decision> = p
        .decisions
        .iter()
        .filter(|d| match d.action {
            Action::Healthy => false,
            Action::NotMine => d.phase.contains("deleting"),
            _ => true,
        })
        .collect();
    shown.sort_by_key(|d| (rank(d), d.namespace.clone(), d.name.clone()));
    shown
        .into_iter()
        .map(|d| {
            [
                d.namespace.clone(),
                shorten(&d.name, NAME_WIDTH),
                state(&d.phase),
                d.action.label().to_string(),
                shorten(&why(d), WHY_WIDTH),
                shorten(&next_step(d), NEXT_WIDTH),
            ]
        })
        .collect()
}

/// `vmi Running (deleting), vm Terminating` → `Running (deleting)/Terminating`.
fn state(phase: &str) -> String {
    let mut vmi = "-".to_string();
    let mut vm = "-".to_string();
    for part in phase.split(", ") {
        if let Some(v) = part.strip_prefix("vmi ") {
            vmi = v.to_string();
        } else if let Some(v) = part.strip_prefix("vm ") {
            vm = v.to_string();
        }
    }
    if vmi == "-" && vm == "-" {
        return shorten(phase, 30);
    }
    format!("{vmi}/{vm}")
}

/// Why, in a few words: the first blocker, or what the recovery is about.
fn why(d: &Decision) -> String {
    match &d.action {
        Action::Recover { steps } => {
            let clears = steps
                .iter()
                .any(|s| matches!(s, Step::ClearFinalizers { .. }));
            if clears {
                "stuck; nothing of it here".into()
            } else {
                "launcher pod lingers".into()
            }
        }
        Action::Waiting { .. } => d
            .reasons
            .first()
            .map(|r| first_clause(&r.text))
            .unwrap_or_else(|| "not stuck yet".into()),
        _ => match d.blockers().first() {
            Some(b) => blocker_words(*b).into(),
            None => d
                .reasons
                .first()
                .map(|r| first_clause(&r.text))
                .unwrap_or_default(),
        },
    }
}

/// What happens next, or what the operator does.
fn next_step(d: &Decision) -> String {
    match &d.action {
        Action::Recover { steps } => {
            let mut parts = Vec::new();
            let mut clear = 0;
            for s in steps {
                match s {
                    Step::ForceDeletePod { .. } => parts.push("free pod".to_string()),
                    Step::WaitForControllers { grace } => {
                        parts.push(format!("wait {}", humantime::format_duration(*grace)))
                    }
                    Step::ClearFinalizers { remove, .. } => clear += remove.len(),
                }
            }
            if clear > 0 {
                parts.push(format!("clear {clear} finalizers"));
            }
            parts.join(" → ")
        }
        Action::Waiting { until: Some(t) } => format!("wait until {}", t.strftime("%H:%M:%S")),
        Action::Waiting { until: None } => "wait".into(),
        Action::Healthy => "-".into(),
        _ => match d.blockers().first() {
            Some(Blocker::UnknownFinalizer) => match d.kept_finalizers.first() {
                Some(f) => format!("review {f} (--also-finalizer)"),
                None => "review the unknown finalizer".into(),
            },
            Some(b) => operator_step(*b).into(),
            None => format!("status {}/{}", d.namespace, d.name),
        },
    }
}

/// A blocker in a few words.
fn blocker_words(b: Blocker) -> &'static str {
    match b {
        Blocker::LiveProcess => "still runs on this node",
        Blocker::DiskHeld => "a disk is held here",
        Blocker::DiskAttachedElsewhere => "a disk is attached elsewhere",
        Blocker::UnknownFinalizer => "unknown finalizer",
        Blocker::EvidenceMissing => "evidence unreadable",
        Blocker::ClusterUnreadable => "cluster unreadable",
        Blocker::NotThisNode => "another node's",
        Blocker::Migrating => "migrating",
        Blocker::NodeDisagreement => "label and status disagree",
        Blocker::IdentityMismatch => "--node is not this machine",
        Blocker::BootNotReported => "kubelet has not reported this boot",
        Blocker::PlanRefused => "plan refused",
        Blocker::NotSelected => "not selected (--only)",
        Blocker::Paused => "paused",
        Blocker::UpgradeInProgress => "Harvester Upgrade running",
        Blocker::NotFenced => "node not fenced",
        Blocker::FencedNodeAlive => "fenced node shows life",
        Blocker::PlanChanged => "changed since the plan",
        Blocker::LeaseLost => "node Lease lost",
        Blocker::Interrupted => "run interrupted",
    }
}

/// What a person does about a blocker.
fn operator_step(b: Blocker) -> &'static str {
    match b {
        Blocker::LiveProcess => "check the VM's process here (-o wide)",
        Blocker::DiskHeld => "find the holder (-o wide), free it",
        Blocker::DiskAttachedElsewhere => "detach it on the other node",
        Blocker::EvidenceMissing | Blocker::ClusterUnreadable => "fix the read named in -o wide",
        Blocker::NotThisNode | Blocker::Migrating => "that node's vmrecover decides",
        Blocker::NodeDisagreement => "check the VMI's node (-o wide)",
        Blocker::IdentityMismatch => "run with --node of this machine",
        Blocker::BootNotReported => "wait for the kubelet",
        Blocker::PlanRefused => "raise --max-vms or use --only",
        Blocker::NotSelected => "-",
        Blocker::Paused => "remove the pause when safe",
        Blocker::UpgradeInProgress => "wait for the Upgrade to end",
        Blocker::NotFenced => "see the runbook: fenced node",
        Blocker::FencedNodeAlive => "make sure the node is powered off",
        Blocker::UnknownFinalizer => "review the unknown finalizer",
        Blocker::PlanChanged | Blocker::LeaseLost | Blocker::Interrupted => "run again",
    }
}

/// The notes that concern the node or several VMs, each once.
fn notes(p: &Plan) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(why) = &p.refused {
        notes.push(format!("REFUSED: {why}"));
    }
    notes.extend(p.harvester.iter().map(|n| format!("Harvester: {n}")));
    if let Some(n) = super::render::stuck_left_alone(p) {
        notes.push(n);
    }
    // Side effects clearing a finalizer skips, once per finalizer with the VMs it concerns.
    let mut skips: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in p
        .decisions
        .iter()
        .filter(|d| matches!(d.action, Action::Recover { .. }))
    {
        for s in &d.skipped_side_effects {
            skips
                .entry(skip_key(s))
                .or_default()
                .push(format!("{}/{}", d.namespace, d.name));
        }
    }
    for (what, vms) in skips {
        notes.push(format!(
            "{what} — {} VM(s): {}",
            vms.len(),
            super::plan::summarise(&vms, 6)
        ));
    }
    for o in &p.orphans {
        notes.push(format!(
            "orphan {} pid {} claiming {}: {}",
            o.kind.as_str(),
            o.pid,
            o.claims,
            o.reason
        ));
    }
    notes
}

/// A skipped side effect without the VM's own names: `<finalizer>: skips <what>` from the
/// table of known finalizers, or the text itself when the finalizer is not in it.
fn skip_key(text: &str) -> String {
    let finalizer = text.split(" on the ").next().unwrap_or(text);
    match KNOWN_FINALIZERS
        .iter()
        .find(|k| k.name == finalizer)
        .and_then(|k| k.skipped)
    {
        Some(generic) => format!("clearing {finalizer} skips {generic}"),
        None => text.to_string(),
    }
}

/// The total line: counts per decision, and what the operator does next.
fn total(p: &Plan) -> String {
    let count = |label: &str| {
        p.decisions
            .iter()
            .filter(|d| d.action.label() == label)
            .count()
    };
    let mut parts = Vec::new();
    for (label, words) in [
        ("recover", "to recover"),
        ("blocked", "blocked"),
        ("waiting", "waiting"),
        ("healthy", "healthy"),
        ("not-mine", "not this node's"),
    ] {
        let n = count(label);
        if n > 0 {
            parts.push(format!("{n} {words}"));
        }
    }
    let all = if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(", ")
    };
    format!(
        "{} VM(s) on {}: {all}. Verdict {:?}. Every VM's proof: -o wide, or `status NS/NAME`.",
        p.decisions.len(),
        p.node,
        p.verdict
    )
}

/// The text up to the first `;` or ` (`, shortened.
fn first_clause(s: &str) -> String {
    let end = [s.find("; "), s.find(" (")]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(s.len());
    s[..end].to_string()
}

/// `s` cut to `max` characters, with `…` where it was cut.
pub fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::fixtures;

    fn text(p: &Plan) -> String {
        let mut out = Vec::new();
        plan(p, &mut out).unwrap();
        // What a pipe or NO_COLOR sees (the stream strips the styles).
        anstream::adapter::strip_str(&String::from_utf8(out).unwrap()).to_string()
    }

    #[test]
    fn fifty_stuck_vms_fit_in_sixty_lines_with_blocked_first() {
        let p = fixtures::plan_with(47, 3);
        let t = text(&p);
        // 50 rows, a header, the notes and the total: room for status's own five lines.
        assert!(t.lines().count() <= 55, "{} lines:\n{t}", t.lines().count());
        let rows: Vec<&str> = t.lines().skip(1).take(50).collect();
        assert!(rows[..3].iter().all(|l| l.contains(" blocked ")), "{t}");
        assert!(
            rows[3..].iter().all(|l| !l.contains(" blocked ")),
            "blocked rows come first:\n{t}"
        );
        // One note for a side effect that concerns many VMs, not one per VM.
        assert_eq!(
            t.matches("skips Harvester's PVC clean-up").count(),
            1,
            "{t}"
        );
    }

    #[test]
    fn a_blocked_vm_is_never_hidden_and_says_what_to_do() {
        let p = fixtures::plan_with(0, 1);
        let t = text(&p);
        let row = t.lines().nth(1).unwrap();
        assert!(row.contains("blocked"), "{t}");
        assert!(row.contains("still runs on this node"), "{t}");
        assert!(row.contains("check the VM's process"), "{t}");
    }

    #[test]
    fn long_names_are_shortened_and_states_compact() {
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(
            state("vmi Running (deleting), vm Terminating"),
            "Running (deleting)/Terminating"
        );
        assert_eq!(state("vmi Failed"), "Failed/-");
    }
}
