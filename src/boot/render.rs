//! The boot section of `vmrecover status` as an operator-readable table.

use std::io::{self, Write};

use super::records::{short_id, BootEnd};
use super::verdict::Says;
use super::{BootFacts, Verdict};
use crate::evidence::Gathered;

/// How many boots of the history the table shows.
const HISTORY_ROWS: usize = 10;

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Unclean => "UNCLEAN",
        Verdict::Clean => "CLEAN",
        Verdict::Unknown => "UNKNOWN",
    }
}

fn says_tag(s: Says) -> &'static str {
    match s {
        Says::Clean => "clean",
        Says::Unclean => "unclean",
        Says::HintUnclean => "hint",
        Says::NoEvidence => "no evidence",
        Says::Unreadable => "unreadable",
    }
}

fn gathered<T>(g: &Gathered<T>, show: impl Fn(&T) -> String) -> String {
    match g {
        Gathered::Read { value } => show(value),
        Gathered::Unreadable { source, reason } => format!("unknown ({source}: {reason})"),
    }
}

fn time(t: Option<jiff::Timestamp>) -> String {
    t.map_or_else(
        || "-".to_string(),
        |t| {
            t.round(jiff::Unit::Second)
                .map_or_else(|_| t.to_string(), |r| r.to_string())
        },
    )
}

/// Writes the boot section (the caller prints the section heading).
pub fn render(facts: &BootFacts, out: &mut dyn Write) -> io::Result<()> {
    let v = &facts.verdict;
    writeln!(
        out,
        "  Verdict:    {} — {}",
        verdict_word(v.verdict),
        v.summary
    )?;
    if let Some(by) = v.decided_by {
        writeln!(out, "  Decided by: {}", by.label())?;
    }
    writeln!(out, "  Evidence:")?;
    for e in &v.evidence {
        writeln!(
            out,
            "    {:<13} {:<13} {}",
            format!("[{}]", says_tag(e.says)),
            e.source.label(),
            e.finding
        )?;
        if !e.detail.is_empty() {
            writeln!(out, "    {:<13} {:<13} {}", "", "", e.detail)?;
        }
    }
    if !v.conflicts.is_empty() {
        writeln!(out, "  Conflicts:")?;
        for c in &v.conflicts {
            writeln!(out, "    ! {c}")?;
        }
    }
    writeln!(
        out,
        "  This boot:  {}",
        gathered(&facts.boot_id, String::clone)
    )?;
    writeln!(
        out,
        "  Started:    {}",
        gathered(&facts.boot_time, |t| time(Some(*t)))
    )?;
    writeln!(
        out,
        "  Uptime:     {}",
        gathered(&facts.uptime_secs, |s| humantime::format_duration(
            std::time::Duration::from_secs(*s)
        )
        .to_string())
    )?;
    writeln!(out, "  Records:    {}", facts.records.path)?;
    writeln!(out, "  Journal:    {}", facts.journal.source)?;
    match &facts.history {
        Gathered::Read { value } if value.is_empty() => {
            writeln!(out, "  Recent boots: none recorded")?;
        }
        Gathered::Read { value } => {
            writeln!(out, "  Recent boots (newest first):")?;
            writeln!(
                out,
                "    {:<9} {:<21} {:<21} ENDED",
                "BOOT", "STARTED", "STOPPED"
            )?;
            for b in value.iter().take(HISTORY_ROWS) {
                let ended = match b.ended {
                    BootEnd::Running => "running (this boot)",
                    BootEnd::Clean => "cleanly",
                    BootEnd::Unclean => "UNCLEANLY (never marked stopped)",
                    BootEnd::NotStopped => "not marked stopped",
                };
                writeln!(
                    out,
                    "    {:<9} {:<21} {:<21} {ended}",
                    short_id(&b.boot_id),
                    time(b.boot_time.or(b.started_at)),
                    time(b.stopped_at)
                )?;
            }
            if value.len() > HISTORY_ROWS {
                writeln!(
                    out,
                    "    … {} older boot(s) in the records",
                    value.len() - HISTORY_ROWS
                )?;
            }
        }
        Gathered::Unreadable { source, reason } => {
            writeln!(out, "  Recent boots: unreadable ({source}: {reason})")?;
        }
    }
    let notes: Vec<&String> = facts
        .records
        .notes
        .iter()
        .chain(&facts.journal.notes)
        .chain(&facts.notes)
        .collect();
    if !notes.is_empty() {
        writeln!(out, "  Notes:")?;
        for n in notes {
            writeln!(out, "    - {n}")?;
        }
    }
    Ok(())
}
