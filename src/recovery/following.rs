//! The shell around [`super::follow`]: after a run's changes, looks at each recovered VM
//! until its outcome is known or the bound ends, then reads why the ones not back are not
//! (the new launcher pod, the Longhorn volumes). Read-only: one GET of the VM and of its VMI
//! per VM per look, the looks 1 s apart at first and backing off to 10 s; at the bound one
//! list of the new VMI's launcher pods and one GET per Longhorn volume. A read that fails is
//! retried at the next look and named in the outcome if the bound ends on it.

use std::time::{Duration, Instant};

use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::Client;
use serde_json::Value;

use super::follow::{
    expectation, judge, why_not_back, Condition, Expectation, FollowOutcome, FollowedPod,
    FollowedVm, FollowedVmi, FollowedVolume, Observation,
};
use super::model::Plan;
use super::report::{RunReport, VmResult};
use crate::cluster::{describe, EventRecorder, Regarding, RequestFailed};

/// How soon a followed VM is looked at again: first after a second, then twice as long each
/// time up to [`LOOK_AT_MOST_EVERY`] — two GETs per VM per look, so a node with 100 recovered
/// VMs makes ~35 looks in 5 minutes rather than 300.
const LOOK_FIRST: Duration = Duration::from_secs(1);

/// The longest pause between two looks.
const LOOK_AT_MOST_EVERY: Duration = Duration::from_secs(10);

/// One recovered VM to follow.
#[derive(Debug, Clone)]
struct Target {
    namespace: String,
    name: String,
    vm_uid: Option<String>,
    old_vmi_uid: String,
    old_phase: String,
    old_deleting: bool,
    volumes: Vec<String>,
    expect: Option<Expectation>,
}

/// Follows every VM the report recovered (or handed to its controller) for at most
/// `bound`, writes each outcome into the report and records an Event on each VM that is
/// back or not back in time. `cancel` ends the following early (what is known is kept).
pub async fn follow_report(
    client: &Client,
    events: &EventRecorder,
    longhorn_ns: &str,
    report: &mut RunReport,
    bound: Duration,
    mut progress: impl FnMut(&str, &FollowOutcome),
    cancel: tokio::sync::watch::Receiver<bool>,
) {
    let mut targets = targets(&report.plan, report);
    let started = Instant::now();
    let mut last: Vec<Option<Observation>> = vec![None; targets.len()];
    let mut done: Vec<Option<FollowOutcome>> = vec![None; targets.len()];
    let mut pause = LOOK_FIRST;
    loop {
        for (i, t) in targets.iter_mut().enumerate() {
            if done[i].is_some() {
                continue;
            }
            let Ok(obs) = observe(client, t).await else {
                continue;
            };
            let expect = t
                .expect
                .get_or_insert_with(|| expectation(obs.vm.as_ref(), &t.old_phase, t.old_deleting));
            let secs = started.elapsed().as_secs();
            if let Some(o) = judge(expect, &t.old_vmi_uid, &obs, secs) {
                progress(&format!("{}/{}", t.namespace, t.name), &o);
                done[i] = Some(o);
            }
            last[i] = Some(obs);
        }
        if done.iter().all(Option::is_some) || *cancel.borrow() || started.elapsed() >= bound {
            break;
        }
        tokio::time::sleep(pause.min(bound.saturating_sub(started.elapsed()))).await;
        pause = (pause * 2).min(LOOK_AT_MOST_EVERY);
    }
    let secs = bound.as_secs();
    for (i, t) in targets.iter().enumerate() {
        let outcome = match done[i].take() {
            Some(o) => o,
            None => {
                let obs = last[i].take().unwrap_or_default();
                let expect = t.expect.clone().unwrap_or(Expectation::RunAgain);
                let why = explain(client, longhorn_ns, t, &expect, &obs).await;
                let o = FollowOutcome::NotBack { seconds: secs, why };
                progress(&format!("{}/{}", t.namespace, t.name), &o);
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
                expect: None,
            })
        })
        .collect()
}

fn kubevirt(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "kubevirt.io".into(),
        version: "v1".into(),
        api_version: "kubevirt.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
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

fn vm_view(v: &DynamicObject) -> FollowedVm {
    let d = &v.data;
    let run_strategy = match d.pointer("/spec/runStrategy").and_then(Value::as_str) {
        Some(s) => s.to_string(),
        None if d.pointer("/spec/running").and_then(Value::as_bool) == Some(true) => {
            "Always".into()
        }
        None => "Halted".into(),
    };
    FollowedVm {
        deleting: v.metadata.deletion_timestamp.is_some(),
        run_strategy,
        first_request: d
            .pointer("/status/stateChangeRequests/0/action")
            .and_then(Value::as_str)
            .map(String::from),
        finalizers: v.metadata.finalizers.clone().unwrap_or_default(),
    }
}

fn vmi_view(v: &DynamicObject) -> FollowedVmi {
    let d = &v.data;
    FollowedVmi {
        uid: v.metadata.uid.clone().unwrap_or_default(),
        phase: str_at(d, "/status/phase"),
        node: d
            .pointer("/status/nodeName")
            .and_then(Value::as_str)
            .map(String::from),
        conditions: conditions(d),
    }
}

fn str_at(d: &Value, p: &str) -> String {
    d.pointer(p)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn conditions(d: &Value) -> Vec<Condition> {
    d.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| Condition {
            kind: str_at(c, "/type"),
            status: str_at(c, "/status"),
            reason: str_at(c, "/reason"),
            message: str_at(c, "/message"),
        })
        .collect()
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
        for name in &t.volumes {
            match api.get_opt(name).await {
                Ok(Some(v)) => volumes.push(FollowedVolume {
                    name: name.clone(),
                    namespace: longhorn_ns.to_string(),
                    robustness: str_at(&v.data, "/status/robustness"),
                    state: str_at(&v.data, "/status/state"),
                    replicas_on_down_nodes: Vec::new(),
                }),
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
