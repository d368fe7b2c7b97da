//! The shell around [`super::follow`]: after a run's changes, looks at each recovered VM
//! until its outcome is known or the bound ends, then reads why the ones not back are not
//! (the new launcher pod, the Longhorn volumes). Read-only. A VM the run saw deleted (the API
//! server's answer to the last finalizer patch, or the controller wait) is gone without a
//! read. The others are looked at by GETs (`run --follow`: one of the VM and one of its VMI
//! per look, 1 s apart at first and backing off to 10 s) or through two watches (the agent:
//! `follow_watch`); at the bound one list of the new VMI's launcher pods and one GET per
//! Longhorn volume of each VM not back. A read that fails is retried at the next look and
//! named in the outcome if the bound ends on it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::Client;
use serde_json::Value;

use super::follow::{
    why_not_back, Expectation, FollowOutcome, FollowedPod, FollowedVolume, Observation,
};
use super::follow_state::{conditions, kubevirt, str_at, vm_view, vmi_view, Following, Target};
use super::model::Plan;
use super::report::{RunReport, VmResult};
use crate::cluster::{describe, EventRecorder, Regarding, RequestFailed};

/// How soon a followed VM is looked at again when polling: first after a second, then
/// twice as long each time up to [`LOOK_AT_MOST_EVERY`] — two GETs per VM per look, so a node
/// with 100 recovered VMs makes ~35 looks in 5 minutes rather than 300.
const LOOK_FIRST: Duration = Duration::from_secs(1);

/// The longest pause between two looks.
const LOOK_AT_MOST_EVERY: Duration = Duration::from_secs(10);

/// How the follow learns what became of the VMs.
#[derive(Clone)]
pub enum Looks {
    /// A GET of each VM and of its VMI per look, the looks backing off (`run --follow`).
    Polling,
    /// One watch of the cluster's VMs and one of its VMIs for the follow's duration, however
    /// many VMs are followed (the agent). `timeout_secs`: each watch request's server timeout.
    Watching {
        /// The client for watches (its reads may wait as long as a watch lasts).
        client: Client,
        /// The server-side timeout of each watch request.
        timeout_secs: u32,
    },
}

/// Follows every VM the report recovered (or handed to its controller) for at most
/// `bound`, writes each outcome into the report and records an Event on each VM that is
/// back or not back in time. A VM the run already saw deleted is gone without a read.
/// `cancel` ends the following early (what is known is kept).
#[allow(clippy::too_many_arguments)]
pub async fn follow_report(
    client: &Client,
    events: &EventRecorder,
    longhorn_ns: &str,
    report: &mut RunReport,
    bound: Duration,
    progress: impl FnMut(&str, &FollowOutcome),
    cancel: tokio::sync::watch::Receiver<bool>,
    looks: Looks,
) {
    let targets = targets(&report.plan, report);
    let n = targets.len();
    let mut f = Following {
        targets,
        last: vec![None; n],
        done: vec![None; n],
        started: Instant::now(),
        progress,
        failed: None,
    };
    for i in 0..n {
        if f.targets[i].known_gone {
            let t = &f.targets[i];
            (f.progress)(&format!("{}/{}", t.namespace, t.name), &FollowOutcome::Gone);
            f.done[i] = Some(FollowOutcome::Gone);
        }
    }
    if !f.all_done() {
        let deadline = f.started + bound;
        match looks {
            Looks::Polling => poll(client, &mut f, deadline, &cancel).await,
            Looks::Watching {
                client: watch_client,
                timeout_secs,
            } => {
                super::follow_watch::watch(&watch_client, timeout_secs, &mut f, deadline, cancel)
                    .await
            }
        }
    }
    let secs = bound.as_secs();
    for (i, t) in f.targets.iter().enumerate() {
        let outcome = match f.done[i].take() {
            Some(o) => o,
            None => {
                let why = match f.last[i].take() {
                    Some(obs) => {
                        let expect = t.expect.clone().unwrap_or(Expectation::RunAgain);
                        explain(client, longhorn_ns, t, &expect, &obs).await
                    }
                    // Never seen: say why rather than guess from nothing (fail closed).
                    None => vec![format!(
                        "could not read: {}",
                        f.failed.as_deref().unwrap_or("no look at it succeeded")
                    )],
                };
                let o = FollowOutcome::NotBack { seconds: secs, why };
                (f.progress)(&format!("{}/{}", t.namespace, t.name), &o);
                o
            }
        };
        record_event(events, t, &outcome).await;
        if let Some(vo) = report
            .outcomes
            .iter_mut()
            .find(|o| o.namespace == t.namespace && o.name == t.name)
        {
            vo.follow = Some(outcome);
        }
    }
}

/// Looks by GETs until every outcome is known, `deadline` passes or a stop is asked.
async fn poll<P: FnMut(&str, &FollowOutcome)>(
    client: &Client,
    f: &mut Following<P>,
    deadline: Instant,
    cancel: &tokio::sync::watch::Receiver<bool>,
) {
    let mut pause = LOOK_FIRST;
    loop {
        for i in 0..f.targets.len() {
            if f.is_done(i) {
                continue;
            }
            match observe(client, &f.targets[i]).await {
                Ok(obs) => f.look(i, obs),
                Err(e) => f.failed = Some(e.to_string()),
            }
        }
        let now = Instant::now();
        if f.all_done() || *cancel.borrow() || now >= deadline {
            return;
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(LOOK_AT_MOST_EVERY);
    }
}

/// The VMs a report recovered, with what the plan knew of their VMI.
fn targets(plan: &Plan, report: &RunReport) -> Vec<Target> {
    report
        .outcomes
        .iter()
        .filter(|o| {
            matches!(
                o.result,
                VmResult::Recovered | VmResult::FinishedByController | VmResult::HandedToController
            )
        })
        .filter_map(|o| {
            let d = plan
                .decisions
                .iter()
                .find(|d| d.namespace == o.namespace && d.name == o.name)?;
            let vmi_part = d
                .phase
                .strip_prefix("vmi ")
                .and_then(|s| s.split(", vm").next())
                .unwrap_or("");
            Some(Target {
                namespace: o.namespace.clone(),
                name: o.name.clone(),
                vm_uid: d.vm.as_ref().map(|k| k.uid.clone()),
                old_vmi_uid: d.vmi.as_ref().map(|k| k.uid.clone()).unwrap_or_default(),
                old_phase: vmi_part.trim_end_matches(" (deleting)").to_string(),
                old_deleting: vmi_part.ends_with("(deleting)"),
                volumes: d.disks.iter().map(|k| k.handle.clone()).collect(),
                known_gone: o.vm_deleted,
                expect: None,
            })
        })
        .collect()
}

/// One look: the VM and the VMI of its name.
async fn observe(client: &Client, t: &Target) -> Result<Observation, RequestFailed> {
    let vms = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        &t.namespace,
        &kubevirt("VirtualMachine", "virtualmachines"),
    );
    let vmis = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        &t.namespace,
        &kubevirt("VirtualMachineInstance", "virtualmachineinstances"),
    );
    let what = format!("{}/{}", t.namespace, t.name);
    let vm = vms
        .get_opt(&t.name)
        .await
        .map_err(|e| RequestFailed::new("get", format!("virtualmachine {what}"), e))?;
    // A VM recreated under the same name is not the one recovered: for this follow it is gone.
    let vm = vm.filter(|v| t.vm_uid.is_none() || v.metadata.uid == t.vm_uid);
    let vmi = vmis
        .get_opt(&t.name)
        .await
        .map_err(|e| RequestFailed::new("get", format!("virtualmachineinstance {what}"), e))?;
    Ok(Observation {
        vm: vm.map(|v| vm_view(&v)),
        vmi: vmi.map(|v| vmi_view(&v)),
    })
}

/// Why a VM is not back: its new launcher pod and its Longhorn volumes, read once.
async fn explain(
    client: &Client,
    longhorn_ns: &str,
    t: &Target,
    expect: &Expectation,
    obs: &Observation,
) -> Vec<String> {
    let mut unread = Vec::new();
    let new_vmi = obs.vmi.as_ref().filter(|v| v.uid != t.old_vmi_uid);
    let pod = match new_vmi {
        Some(v) => match launcher_pod(client, &t.namespace, &v.uid).await {
            Ok(p) => p,
            Err(e) => {
                unread.push(e.to_string());
                None
            }
        },
        None => None,
    };
    let mut volumes = Vec::new();
    if !matches!(expect, Expectation::Gone) {
        let ar = ApiResource {
            group: "longhorn.io".into(),
            version: "v1beta2".into(),
            api_version: "longhorn.io/v1beta2".into(),
            kind: "Volume".into(),
            plural: "volumes".into(),
        };
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), longhorn_ns, &ar);
        let mut ready: Option<BTreeMap<String, bool>> = None;
        for name in &t.volumes {
            match api.get_opt(name).await {
                Ok(Some(v)) => {
                    let robustness = str_at(&v.data, "/status/robustness");
                    let replicas_on_down_nodes =
                        if robustness == "faulted" || robustness == "degraded" {
                            match down_replica_nodes(client, longhorn_ns, name, &mut ready).await {
                                Ok(nodes) => nodes,
                                Err(e) => {
                                    unread.push(e.to_string());
                                    Vec::new()
                                }
                            }
                        } else {
                            Vec::new()
                        };
                    volumes.push(FollowedVolume {
                        name: name.clone(),
                        namespace: longhorn_ns.to_string(),
                        robustness,
                        state: str_at(&v.data, "/status/state"),
                        replicas_on_down_nodes,
                    })
                }
                Ok(None) => {}
                Err(e) => unread.push(describe(
                    &e,
                    "get",
                    &format!("volumes.longhorn.io {longhorn_ns}/{name}"),
                )),
            }
        }
    }
    let mut why = why_not_back(expect, &t.old_vmi_uid, obs, pod.as_ref(), &volumes);
    why.extend(unread.into_iter().map(|e| format!("could not read: {e}")));
    why
}

/// The nodes, not Ready, that hold a replica of Longhorn volume `volume`: one list of its
/// replicas (`replicas.longhorn.io`, label `longhornvolume=<volume>`, longhorn-manager's
/// `types.LonghornLabelVolume`; the node is `spec.nodeID`) and, once per follow, one list of
/// the Nodes (`ready`: each node's `Ready` condition is `True`). A replica's node that is not
/// a Node any more counts as down. Read-only.
async fn down_replica_nodes(
    client: &Client,
    longhorn_ns: &str,
    volume: &str,
    ready: &mut Option<BTreeMap<String, bool>>,
) -> Result<Vec<String>, RequestFailed> {
    let replicas = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        longhorn_ns,
        &ApiResource {
            group: "longhorn.io".into(),
            version: "v1beta2".into(),
            api_version: "longhorn.io/v1beta2".into(),
            kind: "Replica".into(),
            plural: "replicas".into(),
        },
    );
    let lp = ListParams::default().labels(&format!("longhornvolume={volume}"));
    let list = replicas.list(&lp).await.map_err(|e| {
        RequestFailed::new(
            "list",
            format!("replicas.longhorn.io in {longhorn_ns} of volume {volume}"),
            e,
        )
    })?;
    let on: BTreeSet<String> = list
        .items
        .iter()
        .map(|r| str_at(&r.data, "/spec/nodeID"))
        .filter(|n| !n.is_empty())
        .collect();
    if on.is_empty() {
        return Ok(Vec::new());
    }
    if ready.is_none() {
        let nodes = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone());
        let list = nodes
            .list(&ListParams::default())
            .await
            .map_err(|e| RequestFailed::new("list", "nodes", e))?;
        *ready = Some(
            list.items
                .iter()
                .map(|n| {
                    let is_ready = n
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .into_iter()
                        .flatten()
                        .any(|c| c.type_ == "Ready" && c.status == "True");
                    (n.metadata.name.clone().unwrap_or_default(), is_ready)
                })
                .collect(),
        );
    }
    let ready = ready.as_ref();
    Ok(on
        .into_iter()
        .filter(|n| !ready.and_then(|r| r.get(n)).copied().unwrap_or(false))
        .collect())
}

/// The new VMI's launcher pod (label `kubevirt.io/created-by=<VMI UID>`).
async fn launcher_pod(
    client: &Client,
    namespace: &str,
    vmi_uid: &str,
) -> Result<Option<FollowedPod>, RequestFailed> {
    let pods = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource {
            group: String::new(),
            version: "v1".into(),
            api_version: "v1".into(),
            kind: "Pod".into(),
            plural: "pods".into(),
        },
    );
    let lp = ListParams::default().labels(&format!("kubevirt.io/created-by={vmi_uid}"));
    let list = pods
        .list(&lp)
        .await
        .map_err(|e| RequestFailed::new("list", format!("pods in {namespace}"), e))?;
    Ok(list.items.first().map(|p| FollowedPod {
        name: p.metadata.name.clone().unwrap_or_default(),
        node: p
            .data
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .map(String::from),
        phase: str_at(&p.data, "/status/phase"),
        conditions: conditions(&p.data),
    }))
}

/// One Event on the VM: back (Normal) or not back in time (Warning). A VM that is gone or
/// stays stopped as asked gets none (nothing to tell about it).
async fn record_event(events: &EventRecorder, t: &Target, outcome: &FollowOutcome) {
    let (warning, reason) = match outcome {
        FollowOutcome::RunningAgain { .. } => (false, "RunningAgain"),
        FollowOutcome::NotBack { .. } => (true, "NotBack"),
        FollowOutcome::Gone | FollowOutcome::StoppedAsAsked { .. } => return,
    };
    let Some(uid) = &t.vm_uid else { return };
    let about = Regarding {
        api_version: "kubevirt.io/v1".into(),
        kind: "VirtualMachine".into(),
        namespace: t.namespace.clone(),
        name: t.name.clone(),
        uid: uid.clone(),
    };
    let note = format!("after vmrecover's recovery: {}", outcome.line());
    if let Err(e) = events
        .record(&about, warning, "FollowOutcome", reason, &note)
        .await
    {
        tracing::warn!(
            "could not record the outcome Event on {}/{}: {e}",
            t.namespace,
            t.name
        );
    }
}
