//! `vmrecover status --all-nodes`: the whole site at once, from two lists (every Node, and
//! every agent's summary ConfigMap): which nodes have an agent, which are down or fenced,
//! which VMs are stuck where and why, and what a person should do next.

use std::collections::BTreeMap;
use std::io::Write;

use k8s_openapi::api::core::v1::Node;
use kube::api::ListParams;
use kube::Api;
use serde::Serialize;

use crate::cli::OutputFormat;
use crate::cluster::{
    self, BadSummary, HarvesterFacts, NodeSummary, SummaryProblem, SUMMARY_PREFIX,
};
use crate::config::Config;
use crate::exit::Outcome;

/// One node as `--all-nodes` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeRow {
    /// The node.
    pub node: String,
    /// `Ready`, `NotReady` or `Unknown` (the Ready condition), `?` when the Node has none.
    pub ready: String,
    /// Whether the node carries `node.kubernetes.io/out-of-service` (Harvester ≥ 1.7 or a
    /// person: not proof of power-off).
    pub out_of_service: bool,
    /// Harvester's `Drained` condition status, if set.
    pub drained: Option<String>,
    /// The agent's summary, when one was published.
    pub summary: Option<NodeSummary>,
    /// Why the summary could not be read, when it could not.
    pub summary_error: Option<String>,
    /// Whether the summary is older than the staleness limit.
    pub stale: bool,
    /// What a person should do next.
    pub next: String,
}

/// The `--output json` document.
#[derive(Debug, Serialize)]
pub struct SiteReport {
    /// When it was read.
    pub now: jiff::Timestamp,
    /// Every node, sorted by name.
    pub nodes: Vec<NodeRow>,
    /// Summaries for nodes that no longer exist.
    pub orphan_summaries: Vec<String>,
}

/// Reads the site and prints it.
pub async fn run(cfg: &Config) -> Outcome {
    let client = match cluster::connect(&cfg.cluster).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vmrecover status --all-nodes: cannot reach the cluster: {e}");
            return Outcome::Error;
        }
    };
    let nodes_api = Api::<Node>::all(client.clone());
    let lp = ListParams::default();
    let (nodes, summaries) = tokio::join!(
        nodes_api.list(&lp),
        cluster::list_summaries(&client, &cfg.cluster.namespace)
    );
    let nodes = match nodes {
        Ok(l) => l.items,
        Err(e) => {
            eprintln!(
                "vmrecover status --all-nodes: {}",
                cluster::describe(&e, "list", "nodes")
            );
            return Outcome::Error;
        }
    };
    let summaries = match summaries {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vmrecover status --all-nodes: {e}");
            return Outcome::Error;
        }
    };
    let report = site(jiff::Timestamp::now(), &nodes, summaries);
    let mut out = crate::style::stdout().lock();
    let written = match cfg.output {
        OutputFormat::Json => serde_json::to_writer_pretty(&mut out, &report)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out)),
        OutputFormat::Table | OutputFormat::Wide => table(&report, &mut out),
    };
    if let Err(e) = written {
        eprintln!("vmrecover status --all-nodes: cannot write output: {e}");
        return Outcome::Error;
    }
    let attention = report.nodes.iter().any(|n| {
        n.stale
            || n.summary.is_none()
            || n.summary
                .as_ref()
                .is_some_and(|s| s.blocked_total > 0 || s.refused_by.is_some() || not_ready(s))
    });
    if attention {
        Outcome::Blocked
    } else {
        Outcome::Done
    }
}

/// The site from the Nodes and the summaries (pure).
pub fn site(
    now: jiff::Timestamp,
    nodes: &[Node],
    summaries: Vec<Result<NodeSummary, BadSummary>>,
) -> SiteReport {
    let mut by_node: BTreeMap<String, Result<NodeSummary, SummaryProblem>> = BTreeMap::new();
    for s in summaries {
        match s {
            Ok(s) => by_node.insert(s.node.clone(), Ok(s)),
            Err(bad) => by_node.insert(bad.node, Err(bad.why)),
        };
    }
    let mut rows: Vec<NodeRow> = nodes
        .iter()
        .map(|n| {
            let name = n.metadata.name.clone().unwrap_or_default();
            let h = HarvesterFacts::of_node(n);
            let ready = match h.ready.as_ref().map(|r| r.status.as_str()) {
                Some("True") => "Ready",
                Some("False") => "NotReady",
                Some("Unknown") => "Unknown",
                _ => "?",
            }
            .to_string();
            let (summary, summary_error) = match by_node.remove(&name) {
                Some(Ok(s)) => (Some(s), None),
                Some(Err(e)) => (None, Some(e.to_string())),
                None => (None, None),
            };
            let stale = summary.as_ref().is_some_and(|s| s.is_stale(now));
            let mut row = NodeRow {
                node: name,
                ready,
                out_of_service: h.out_of_service_taint,
                drained: h.drained.map(|d| d.status),
                summary,
                summary_error,
                stale,
                next: String::new(),
            };
            row.next = next_step(&row);
            row
        })
        .collect();
    rows.sort_by_key(|r| natural_key(&r.node));
    SiteReport {
        now,
        nodes: rows,
        orphan_summaries: by_node
            .into_keys()
            .map(|n| format!("{SUMMARY_PREFIX}{n}"))
            .collect(),
    }
}

/// `node-2` before `node-10`: runs of digits compare as numbers.
fn natural_key(name: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut digits = String::new();
    for c in name.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            if !digits.is_empty() {
                out.push((
                    std::mem::take(&mut text),
                    digits.parse().unwrap_or(u64::MAX),
                ));
                digits.clear();
            }
            text.push(c);
        }
    }
    out.push((text, digits.parse().unwrap_or(0)));
    out
}

/// What a person should do next about one node.
fn next_step(r: &NodeRow) -> String {
    let down = r.ready != "Ready";
    match &r.summary {
        None if down && r.out_of_service => "node down and tainted out-of-service: power it \
             on; if it is gone for good and you know it is off: vmrecover run --fenced-node (docs/runbook.md)"
            .to_string(),
        None if down => "node down: power it on; its agent reports once it is back".to_string(),
        None => match &r.summary_error {
            Some(e) => format!("its summary is unreadable ({e}): vmrecover status on the node"),
            None => {
                "no vmrecover agent reports here: check the DaemonSet pod on this node".to_string()
            }
        },
        Some(s) if r.stale => format!(
            "summary stale (last written {}): the agent is down or cannot write; kubectl logs \
             its pod{}",
            s.updated,
            if down { ", and the node is down" } else { "" }
        ),
        Some(s) if s.paused.is_some() => format!(
            "paused ({}): remove the pause when the work is done",
            s.paused.as_deref().unwrap_or("")
        ),
        Some(s) if s.refused_by.as_deref() == Some("upgrade_in_progress") => {
            "a Harvester Upgrade is in progress: wait for it".to_string()
        }
        Some(s) if s.blocked_total > 0 => format!(
            "{} VM(s) blocked: read each reason (vmrecover status on {}), fix the cause, the \
             agent retries",
            s.blocked_total, s.node
        ),
        Some(s) if s.refused_by.is_some() => format!(
            "plan refused ({}): vmrecover status on {}",
            s.refused_by.as_deref().unwrap_or(""),
            s.node
        ),
        Some(s)
            if s.counts.get("recover").copied().unwrap_or(0) > 0
                || s.counts.get("waiting").copied().unwrap_or(0) > 0 =>
        {
            "recovering: nothing to do".to_string()
        }
        Some(s) if not_ready(s) => format!(
            "not ready for the next outage: check(s) {} fail (vmrecover check on {})",
            s.readiness
                .as_ref()
                .map(|r| r.failing.join(", "))
                .unwrap_or_default(),
            s.node
        ),
        Some(_) => "nothing to do".to_string(),
    }
}

/// Whether the agent's last readiness checks had a check in `fail`.
fn not_ready(s: &NodeSummary) -> bool {
    s.readiness.as_ref().is_some_and(|r| !r.failing.is_empty())
}

fn count(s: &NodeSummary, label: &str) -> usize {
    s.counts.get(label).copied().unwrap_or(0)
}

/// What became of the node's last recovery: stuck → recovered → running again → not back
/// (why), and the time from boot until its last VM ran again.
fn after_lines(a: &cluster::AfterRun, out: &mut dyn Write) -> std::io::Result<()> {
    let back = a
        .back_after_boot_secs
        .map(|s| {
            format!(
                "; last VM running again {} after boot",
                humantime::format_duration(std::time::Duration::from_secs(s))
            )
        })
        .unwrap_or_default();
    writeln!(
        out,
        "    after the last run: {} stuck → {} recovered → {} running again, {} not back, {} stopped as asked, {} gone{back}",
        a.stuck, a.recovered, a.running_again, a.not_back_total, a.stopped_as_asked, a.gone
    )?;
    for nb in &a.not_back {
        writeln!(out, "      not back: {nb}")?;
    }
    if a.not_back_total > a.not_back.len() {
        writeln!(
            out,
            "      ... and {} more not back",
            a.not_back_total - a.not_back.len()
        )?;
    }
    Ok(())
}

/// The table: one line per node, the blocked VMs under their node, then the next step.
fn table(r: &SiteReport, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<20} {:<8} {:<17} {:<12} {:>7} {:>7} {:>7}  NEXT",
        "NODE", "READY", "HARVESTER", "AGENT", "RECOVER", "WAITING", "BLOCKED"
    )?;
    for n in &r.nodes {
        let harvester = match (n.out_of_service, n.drained.as_deref()) {
            (true, Some(d)) => format!("oos,drained={d}"),
            (true, None) => "out-of-service".to_string(),
            (false, Some(d)) => format!("drained={d}"),
            (false, None) => "-".to_string(),
        };
        let (agent, recover, waiting, blocked) = match &n.summary {
            Some(s) => (
                if n.stale {
                    "STALE".to_string()
                } else if s.paused.is_some() {
                    "paused".to_string()
                } else {
                    s.phase.clone()
                },
                count(s, "recover").to_string(),
                count(s, "waiting").to_string(),
                s.blocked_total.to_string(),
            ),
            None => ("none".into(), "-".into(), "-".into(), "-".into()),
        };
        writeln!(
            out,
            "{:<20} {:<8} {:<17} {:<12} {:>7} {:>7} {:>7}  {}",
            n.node, n.ready, harvester, agent, recover, waiting, blocked, n.next
        )?;
        if let Some(s) = &n.summary {
            for b in &s.blocked {
                writeln!(
                    out,
                    "    {} [{}]: {}",
                    b.vm,
                    b.blocker.as_deref().unwrap_or("-"),
                    b.reason
                )?;
            }
            if s.blocked_total > s.blocked.len() {
                writeln!(
                    out,
                    "    ... and {} more blocked (vmrecover status on {})",
                    s.blocked_total - s.blocked.len(),
                    s.node
                )?;
            }
            if let Some(line) = s.power_cuts.as_ref().and_then(|p| p.line()) {
                writeln!(out, "    power: {line}")?;
            }
            if let Some(a) = s.last_run.as_ref().and_then(|l| l.after.as_ref()) {
                after_lines(a, out)?;
            }
        }
    }
    let with_agent = r.nodes.iter().filter(|n| n.summary.is_some()).count();
    let down = r.nodes.iter().filter(|n| n.ready != "Ready").count();
    let blocked: usize = r
        .nodes
        .iter()
        .filter_map(|n| n.summary.as_ref())
        .map(|s| s.blocked_total)
        .sum();
    let lost_power = r
        .nodes
        .iter()
        .filter_map(|n| n.summary.as_ref()?.power_cuts.as_ref())
        .filter(|p| p.last_30_days > 0)
        .count();
    writeln!(
        out,
        "\n{} node(s): {} with an agent reporting, {} down, {} VM(s) blocked in all, {} lost power in the last 30 days.",
        r.nodes.len(),
        with_agent,
        down,
        blocked,
        lost_power
    )?;
    for o in &r.orphan_summaries {
        writeln!(
            out,
            "A summary with no Node: {o} (a removed node; delete it)"
        )?;
    }
    Ok(())
}
