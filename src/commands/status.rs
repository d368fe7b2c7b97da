//! `vmrecover status`: what this node's agent sees and decides, per VM, with reasons.
//! Works without the cluster: it says which evidence it could not read.

use std::io::Write;

use serde::Serialize;

use crate::agent::{is_alive, AgentStatus, AgentStatusFile, Phase};
use crate::boot::{self, BootFacts};
use crate::cli::OutputFormat;
use crate::config::Config;
use crate::evidence::Gathered;
use crate::exit::Outcome;
use crate::node::{self, NodeFacts};
use crate::pipeline;
use crate::recovery::{
    plan, render_decision, render_plan, render_plan_table, render_report, shorten, Action, Blocker,
    Plan, ReportStore, RunReport, VmResult,
};

/// The status document, as `--output json` prints it.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// When the facts were gathered.
    pub now: jiff::Timestamp,
    /// This node.
    pub node: String,
    /// Boot evidence and verdict.
    pub boot: BootFacts,
    /// Node evidence.
    pub local: NodeFacts,
    /// Whether the cluster could be read, and if not why.
    pub cluster: Gathered<()>,
    /// The current decision per VM.
    pub plan: Plan,
    /// The last run on this node.
    pub last_run: Gathered<Option<RunReport>>,
    /// The agent's phase, when an agent uses this state directory.
    pub agent: Gathered<Option<AgentStatus>>,
    /// Whether that agent process is alive (false: the file is from a stopped agent).
    pub agent_alive: bool,
    /// Whether the cluster serves admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy
    /// (Kubernetes 1.30+), which vmrecover's node restriction needs (docs/safety.md): `false`
    /// on Harvester 1.4.0 (Kubernetes 1.29), where nothing but RBAC bounds an agent to its node.
    pub node_restriction_api: Gathered<bool>,
}

/// The compact status's line when the cluster cannot hold vmrecover's node restriction.
const NO_NODE_RESTRICTION: &str = "node restriction: MISSING — this cluster serves no \
     ValidatingAdmissionPolicy (Kubernetes < 1.30): nothing but RBAC bounds an agent to its own \
     node's VMs; upgrade to Harvester 1.4.1+ (docs/safety.md)";

/// Gathers and prints the status: at a glance, `-o wide` in full, or one VM in full.
pub async fn run(cfg: &Config, vm: Option<&str>) -> Outcome {
    let g = pipeline::gather(cfg, None).await;
    let report = StatusReport {
        now: g.facts.now,
        node: cfg.node.clone(),
        cluster: match &g.client {
            Ok(_) => Gathered::read(()),
            Err(e) => Gathered::unreadable("the Kubernetes API", e.to_string()),
        },
        plan: plan(&g.facts, &cfg.policy),
        boot: g.boot,
        local: g.facts.local,
        last_run: ReportStore::new(&cfg.state_dir).load(),
        agent_alive: false,
        agent: AgentStatusFile::new(&cfg.state_dir).load(),
        node_restriction_api: match &g.client {
            Ok(c) => match crate::check::policy_api_served(c).await {
                Ok(served) => Gathered::read(served),
                Err(e) => Gathered::unreadable(
                    "the API group admissionregistration.k8s.io/v1",
                    e.to_string(),
                ),
            },
            Err(e) => Gathered::unreadable("the Kubernetes API", e.to_string()),
        },
    };
    let report = StatusReport {
        agent_alive: report
            .agent
            .value()
            .and_then(|a| a.as_ref())
            .is_some_and(|a| a.phase != Phase::Stopped && is_alive(a.pid)),
        ..report
    };
    let mut out = crate::style::stdout().lock();
    let written = match cfg.output {
        OutputFormat::Json => serde_json::to_writer_pretty(&mut out, &report)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out)),
        OutputFormat::Table | OutputFormat::Wide if vm.is_some() => {
            one_vm(&report, vm.unwrap_or_default(), &mut out)
        }
        OutputFormat::Table => compact(&report, &mut out),
        OutputFormat::Wide => table(&report, &mut out),
    };
    match written {
        Ok(()) => status_outcome(&report),
        Err(e) => {
            eprintln!("vmrecover status: cannot write output: {e}");
            Outcome::Error
        }
    }
}

/// The status at a glance: four lines about the node, the plan's table, what the exit
/// code says.
fn compact(r: &StatusReport, out: &mut dyn Write) -> std::io::Result<()> {
    let b = &r.boot.verdict;
    writeln!(
        out,
        "vmrecover status · node {} · {}",
        r.node,
        r.now.strftime("%Y-%m-%d %H:%M:%SZ")
    )?;
    writeln!(
        out,
        "boot:      {} — {}",
        {
            let word = format!("{:?}", b.verdict).to_uppercase();
            crate::style::paint(crate::style::verdict(&word), &word)
        },
        shorten(&b.summary, 110)
    )?;
    if let Some(line) = r
        .boot
        .history
        .value()
        .and_then(|h| crate::boot::power_cuts(h, r.now).line())
    {
        writeln!(out, "power:     {line} (check its power supply and UPS)")?;
    }
    let processes = match &r.local.processes {
        Gathered::Read { value } => format!("{} VM process(es)", value.len()),
        Gathered::Unreadable { source, .. } => format!("processes unreadable ({source})"),
    };
    let volumes = match &r.local.disks.devices {
        Gathered::Read { value } => format!("{} Longhorn device(s)", value.len()),
        Gathered::Unreadable { source, .. } => format!("devices unreadable ({source})"),
    };
    let identity = match &r.local.identity {
        Gathered::Read { value } => format!("machine-id {}", shorten(&value.machine_id, 12)),
        Gathered::Unreadable { source, .. } => format!("identity could not be read ({source})"),
    };
    writeln!(out, "this node: {identity}; {processes}, {volumes}")?;
    let agent = match &r.agent {
        Gathered::Read { value: None } => "none has run with this state directory".to_string(),
        Gathered::Read { value: Some(a) } => format!(
            "{} (pid {}), {} since {}{}",
            if r.agent_alive {
                "running"
            } else {
                "not running"
            },
            a.pid,
            a.phase.as_str(),
            a.since.strftime("%H:%M:%SZ"),
            match &a.config {
                Some(c) if c.refused.is_some() => "; its new configuration was REFUSED (-o wide)",
                _ => "",
            }
        ),
        Gathered::Unreadable { source, .. } => format!("unreadable ({source})"),
    };
    writeln!(out, "agent:     {agent}")?;
    let last = match &r.last_run {
        Gathered::Read { value: None } => "none on this node".to_string(),
        Gathered::Read { value: Some(run) } => format!(
            "{} {} at {}: {} recovered, {} handed over, {} left alone, {} failed",
            run.mode,
            if run.dry_run { "dry-run" } else { "run" },
            run.started.strftime("%Y-%m-%d %H:%M:%SZ"),
            run.recovered(),
            run.handed_over(),
            run.aborted(),
            run.failed()
        ),
        Gathered::Unreadable { source, .. } => format!("unreadable ({source})"),
    };
    writeln!(out, "last run:  {last}")?;
    if let Gathered::Read { value: Some(run) } = &r.last_run {
        if let Some(a) = crate::agent::after_run(run, None) {
            writeln!(
                out,
                "afterwards: {} running again, {} not back in time, {} stopped as asked, {} gone{}",
                a.running_again,
                a.not_back_total,
                a.stopped_as_asked,
                a.gone,
                if a.not_back_total > 0 {
                    format!(" ({})", a.not_back.join("; "))
                } else {
                    String::new()
                }
            )?;
        }
    }
    if let Gathered::Unreadable { source, reason } = &r.cluster {
        writeln!(
            out,
            "cluster not reachable ({source}: {reason}); no VM is touched without it"
        )?;
    }
    if matches!(r.node_restriction_api, Gathered::Read { value: false }) {
        writeln!(out, "{NO_NODE_RESTRICTION}")?;
    }
    render_plan_table(&r.plan, out)?;
    let meaning = match status_outcome(r) {
        Outcome::Done => "exit 0: nothing needs a person",
        Outcome::Blocked => "exit 3: a VM or the plan needs a person (NEXT STEP above)",
        _ => "exit 1: evidence or the cluster could not be read (-o wide says which)",
    };
    writeln!(out, "{meaning}")
}

/// One VM in full: the decision with its proof, and what the last run did to it and what
/// became of it afterwards (a VM the run recovered may be gone now: its history still shows).
fn one_vm(r: &StatusReport, which: &str, out: &mut dyn Write) -> std::io::Result<()> {
    let matches = |ns: &str, name: &str| format!("{ns}/{name}") == which || name == which;
    let decision = r
        .plan
        .decisions
        .iter()
        .find(|d| matches(&d.namespace, &d.name));
    let last = match &r.last_run {
        Gathered::Read { value: Some(run) } => run
            .outcomes
            .iter()
            .find(|o| matches(&o.namespace, &o.name))
            .map(|o| (run, o)),
        _ => None,
    };
    match (decision, last) {
        (None, None) => {
            return writeln!(
                out,
                "{which}: no VM of that name on node {} (as NAMESPACE/NAME; `status` lists them)",
                r.node
            )
        }
        (Some(d), _) => render_decision(d, out)?,
        (None, Some((_, o))) => writeln!(
            out,
            "{}/{}: no longer on node {}; what the last run did to it:",
            o.namespace, o.name, r.node
        )?,
    }
    if let Some((run, o)) = last {
        writeln!(
            out,
            "  last run ({} at {}): {}{}",
            run.mode,
            run.started,
            match &o.result {
                VmResult::Recovered => "Recovered",
                VmResult::FinishedByController => "FinishedByController",
                VmResult::HandedToController => "HandedToController",
                VmResult::Aborted(_) => "Aborted",
                VmResult::Failed { .. } => "Failed",
            },
            o.result
                .reason()
                .map(|w| format!(" — {w}"))
                .unwrap_or_default()
        )?;
        for s in &o.steps {
            writeln!(out, "    - {}: {}", s.step, s.result)?;
        }
        match &o.follow {
            Some(f) => writeln!(out, "  afterwards: {}", f.line())?,
            None => writeln!(out, "  afterwards: not followed (run --follow)")?,
        }
    }
    Ok(())
}

fn table(r: &StatusReport, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "vmrecover status for node {} at {}", r.node, r.now)?;
    writeln!(out, "\n== Boot")?;
    boot::render_table(&r.boot, out)?;
    writeln!(out, "\n== This node")?;
    node::render_table(&r.local, out)?;
    writeln!(out, "\n== VMs on this node")?;
    if let Gathered::Unreadable { source, reason } = &r.cluster {
        writeln!(
            out,
            "cluster not reachable ({source}: {reason}); no VM is touched without it"
        )?;
    }
    if matches!(r.node_restriction_api, Gathered::Read { value: false }) {
        writeln!(out, "{NO_NODE_RESTRICTION}")?;
    }
    render_plan(&r.plan, out)?;
    writeln!(out, "\n== Agent")?;
    match &r.agent {
        Gathered::Read { value: None } => {
            writeln!(out, "no agent has run with this state directory")?
        }
        Gathered::Read { value: Some(a) } => {
            let state = if r.agent_alive {
                "running"
            } else {
                "not running"
            };
            writeln!(
                out,
                "{state} (pid {}), phase {} since {}; verdict {:?}, --act-on {:?}: {}",
                a.pid,
                a.phase.as_str(),
                a.since,
                a.verdict,
                a.act_on,
                if a.acting {
                    "recovers stuck VMs"
                } else {
                    "reports only"
                }
            )?;
            if let Some(end) = a.window_ends {
                writeln!(out, "boot window ends {end}")?;
            }
            if let Some((at, summary)) = &a.last_pass {
                writeln!(out, "last pass {at}: {summary}")?;
            }
            if let Some(e) = &a.last_error {
                writeln!(out, "last API error: {e}")?;
            }
            if let Some(c) = &a.config {
                let file = c
                    .file
                    .as_ref()
                    .map_or("no configuration file".into(), |f| f.display().to_string());
                writeln!(out, "configuration: {file}, read {}", c.loaded)?;
                if let Some(why) = &c.refused {
                    writeln!(
                        out,
                        "configuration REFUSED (the one above stays in force): {why}"
                    )?;
                }
            }
        }
        Gathered::Unreadable { source, reason } => {
            writeln!(out, "could not read {source}: {reason}")?
        }
    }
    writeln!(out, "\n== Last run")?;
    match &r.last_run {
        Gathered::Read { value: None } => writeln!(out, "no run recorded on this node"),
        Gathered::Read { value: Some(run) } => {
            writeln!(
                out,
                "{} ({}), started {}",
                run.mode,
                if run.dry_run { "dry-run" } else { "applied" },
                run.started
            )?;
            render_report(run, out)
        }
        Gathered::Unreadable { source, reason } => {
            writeln!(out, "could not read {source}: {reason}")
        }
    }
}

/// The exit code of `status`, for monitoring (Nagios-style): 1 when the state could not
/// be read (the cluster, this host's identity, or evidence a decision needs), 3 when a VM
/// is blocked or the plan is refused and a person must look, 0 otherwise — VMs that are
/// only waiting (inside `--stuck-after`, the controller grace, or for the kubelet to
/// report this boot) are a normal recovery and do not alarm.
pub fn status_outcome(r: &StatusReport) -> Outcome {
    let unreadable = r.cluster.value().is_none()
        || r.plan.refused_by().is_some_and(Blocker::is_unreadable)
        || r.plan.decisions.iter().any(|d| {
            matches!(d.action, Action::Blocked) && d.blockers().iter().any(|b| b.is_unreadable())
        });
    if unreadable {
        return Outcome::Error;
    }
    let refused = r
        .plan
        .refused_by()
        .is_some_and(|b| b != Blocker::BootNotReported);
    if refused
        || r.plan
            .decisions
            .iter()
            .any(|d| matches!(d.action, Action::Blocked))
    {
        Outcome::Blocked
    } else {
        Outcome::Done
    }
}
