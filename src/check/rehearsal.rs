//! Every write kind vmrecover sends, rehearsed with server-side dry-run (`dryRun=All`:
//! authentication, RBAC, mutating and validating admission — webhooks and policies — and
//! validation run; nothing is stored): the node Lease, an Event, the node summary, a launcher
//! pod's force-delete, and the finalizer patch on a VMI of this node that is *not* deleting,
//! which the admission policy must deny.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Client};
use serde_json::json;

use super::Check;
use crate::cluster::{describe, summary_name, VirtualMachineInstance, LABEL_SUMMARY};
use crate::config::Config;

/// The policy the chart installs (charts/vmrecover/templates/admissionpolicy.yaml).
const POLICY: &str = "vmrecover-node-restriction";

fn dry_post() -> PostParams {
    PostParams {
        dry_run: true,
        field_manager: None,
    }
}

fn verdict(name: &str, what: &str, r: Result<(), kube::Error>, verb: &str) -> Check {
    match r {
        Ok(()) => Check::ok(name, format!("{what}: admitted (dry run)")),
        Err(e) => Check::fail(
            name,
            format!("{what}: {}", describe(&e, verb, what)),
            fix_for(&e),
        ),
    }
}

fn fix_for(e: &kube::Error) -> String {
    let msg = e.to_string();
    if msg.contains("admission webhook") {
        "a webhook refuses this write: check that webhook's service and rules (see the message)"
            .into()
    } else if msg.contains("ValidatingAdmissionPolicy") {
        "the admission policy refuses this write: run with the agent's pod-bound token and --node of this pod's node".into()
    } else if crate::cluster::status_code(e) == Some(403) {
        "grant the permission named (the chart's RBAC)".into()
    } else {
        "see the message; the real write would fail the same way".into()
    }
}

/// All rehearsals.
pub async fn checks(cfg: &Config, client: &Client) -> Vec<Check> {
    let vmis = Api::<VirtualMachineInstance>::all(client.clone());
    let lp = ListParams::default().labels(&format!("kubevirt.io/nodeName={}", cfg.node));
    let vmis = vmis.list(&lp).await.map(|l| l.items);
    vec![
        lease(cfg, client).await,
        event(cfg, client, vmis.as_ref().ok().and_then(|v| v.first())).await,
        summary(cfg, client).await,
        launcher_delete(cfg, client).await,
        finalizer_patch(client, vmis).await,
    ]
}

async fn lease(cfg: &Config, client: &Client) -> Check {
    const NAME: &str = "rehearse.lease";
    let ns = &cfg.cluster.namespace;
    let name = format!("vmrecover-{}", cfg.node);
    let what = format!("leases/{name} in {ns}");
    let api = Api::<Lease>::namespaced(client.clone(), ns);
    let now = MicroTime(jiff::Timestamp::now());
    match api.get_opt(&name).await {
        Err(e) => Check::fail(NAME, describe(&e, "get", &what), fix_for(&e)),
        Ok(Some(mut l)) => {
            let spec = l.spec.get_or_insert_with(LeaseSpec::default);
            spec.renew_time = Some(now);
            let r = api.replace(&name, &dry_post(), &l).await.map(|_| ());
            verdict(NAME, &format!("renew {what}"), r, "update")
        }
        Ok(None) => {
            let l = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(format!("vmrecover-check-{}", cfg.node)),
                    lease_duration_seconds: Some(15),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            let r = api.create(&dry_post(), &l).await.map(|_| ());
            verdict(NAME, &format!("take {what}"), r, "create")
        }
    }
}

/// An Event as vmrecover records one: about a VMI of this node in its namespace (the
/// apiserver wants an Event in its object's namespace; about the Node, `default`).
async fn event(cfg: &Config, client: &Client, vmi: Option<&VirtualMachineInstance>) -> Check {
    let regarding = match vmi {
        Some(v) => ObjectReference {
            api_version: Some("kubevirt.io/v1".into()),
            kind: Some("VirtualMachineInstance".into()),
            namespace: v.metadata.namespace.clone(),
            name: v.metadata.name.clone(),
            uid: v.metadata.uid.clone(),
            ..ObjectReference::default()
        },
        None => ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(cfg.node.clone()),
            ..ObjectReference::default()
        },
    };
    let ns = regarding
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let ns = &ns;
    let api = Api::<Event>::namespaced(client.clone(), ns);
    let ev = Event {
        metadata: ObjectMeta {
            generate_name: Some("vmrecover-check-".into()),
            namespace: Some(ns.clone()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(jiff::Timestamp::now())),
        reporting_controller: Some("vmrecover".into()),
        reporting_instance: Some(
            format!("vmrecover-{}", cfg.node)
                .chars()
                .take(128)
                .collect(),
        ),
        action: Some("Check".into()),
        reason: Some("Rehearsal".into()),
        type_: Some("Normal".into()),
        note: Some("vmrecover check: a dry-run Event, never stored".into()),
        regarding: Some(regarding),
        ..Event::default()
    };
    let r = api.create(&dry_post(), &ev).await.map(|_| ());
    verdict(
        "rehearse.event",
        &format!("events.events.k8s.io in {ns}"),
        r,
        "create",
    )
}

async fn summary(cfg: &Config, client: &Client) -> Check {
    let ns = &cfg.cluster.namespace;
    let name = summary_name(&cfg.node);
    let body = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns,
                     "labels": {LABEL_SUMMARY: "true", "app.kubernetes.io/name": "vmrecover"}},
    });
    let api = Api::<ConfigMap>::namespaced(client.clone(), ns);
    let mut pp = PatchParams::apply("vmrecover").force();
    pp.dry_run = true;
    let r = api
        .patch(&name, &pp, &Patch::Apply(&body))
        .await
        .map(|_| ());
    verdict(
        "rehearse.summary",
        &format!("configmaps {ns}/{name}"),
        r,
        "patch",
    )
}

async fn launcher_delete(cfg: &Config, client: &Client) -> Check {
    const NAME: &str = "rehearse.launcher-delete";
    let pods = Api::<Pod>::all(client.clone());
    let lp = ListParams::default()
        .labels("kubevirt.io=virt-launcher")
        .fields(&format!("spec.nodeName={}", cfg.node));
    let list = match pods.list(&lp).await {
        Ok(l) => l,
        Err(e) => return Check::fail(NAME, describe(&e, "list", "pods"), fix_for(&e)),
    };
    let Some(pod) = list.items.first() else {
        return Check::ok(
            NAME,
            "no launcher pod on this node: the force-delete was not rehearsed (its permission is reviewed above)",
        );
    };
    let (ns, name) = (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    let dp = DeleteParams {
        dry_run: true,
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let r = Api::<Pod>::namespaced(client.clone(), &ns)
        .delete(&name, &dp)
        .await
        .map(|_| ());
    verdict(NAME, &format!("force-delete pods {ns}/{name}"), r, "delete")
}

/// Whether the cluster serves admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy
/// (Kubernetes >= 1.30): where it does not, vmrecover's node restriction cannot exist.
pub async fn policy_api_served(client: &Client) -> Result<bool, kube::Error> {
    let list = client
        .list_api_group_resources("admissionregistration.k8s.io/v1")
        .await;
    match list {
        Ok(l) => Ok(l
            .resources
            .iter()
            .any(|r| r.name == "validatingadmissionpolicies")),
        Err(e) if crate::cluster::status_code(&e) == Some(404) => Ok(false),
        Err(e) => Err(e),
    }
}

async fn finalizer_patch(
    client: &Client,
    vmis: Result<Vec<VirtualMachineInstance>, kube::Error>,
) -> Check {
    const NAME: &str = "rehearse.finalizer-patch";
    let served = match policy_api_served(client).await {
        Ok(s) => s,
        Err(e) => {
            return Check::fail(
                NAME,
                describe(&e, "get", "/apis/admissionregistration.k8s.io/v1"),
                "see the message",
            )
        }
    };
    let list = match vmis {
        Ok(l) => l,
        Err(e) => {
            return Check::fail(
                NAME,
                describe(&e, "list", "virtualmachineinstances"),
                fix_for(&e),
            )
        }
    };
    let Some(vmi) = list
        .iter()
        .find(|v| v.metadata.deletion_timestamp.is_none())
    else {
        return Check::warn(
            NAME,
            "not rehearsed: no running VMI on this node",
            "run check again while a VM runs on this node",
        );
    };
    let ns = vmi.metadata.namespace.clone().unwrap_or_default();
    let name = vmi.metadata.name.clone().unwrap_or_default();
    let finalizers = vmi.metadata.finalizers.clone().unwrap_or_default();
    let keep: Vec<&String> = finalizers.iter().skip(1).collect();
    let patch: json_patch::Patch = match serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/uid", "value": vmi.metadata.uid},
        {"op": "test", "path": "/metadata/resourceVersion", "value": vmi.metadata.resource_version},
        {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
        {"op": "replace", "path": "/metadata/finalizers", "value": keep},
    ])) {
        Ok(p) => p,
        Err(e) => {
            return Check::fail(
                NAME,
                format!("cannot build the patch: {e}"),
                "a bug: report it",
            )
        }
    };
    let pp = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    let what = format!("virtualmachineinstances {ns}/{name} (running, not deleting)");
    let r = Api::<VirtualMachineInstance>::namespaced(client.clone(), &ns)
        .patch(&name, &pp, &Patch::Json::<()>(patch))
        .await;
    judge_policy(NAME, &what, served, r.map(|_| ()))
}

/// The verdict on the rehearsed patch of a VMI that is not deleting.
fn judge_policy(name: &str, what: &str, served: bool, r: Result<(), kube::Error>) -> Check {
    match r {
        Err(e) if e.to_string().contains(POLICY) => Check::ok(
            name,
            format!("{what}: denied by {POLICY}: policy in force"),
        ),
        Err(e) if e.to_string().contains("admission webhook") => Check::fail(
            name,
            format!("{what}: {}", describe(&e, "patch", what)),
            "a webhook refuses vmrecover's finalizer patch before the policy sees it: \
             check the named webhook (its pods, its rules); the real patch would fail the same way",
        ),
        Err(e) => Check::fail(name, format!("{what}: {}", describe(&e, "patch", what)), fix_for(&e)),
        Ok(()) if !served => Check::warn(
            name,
            format!("{what}: admitted; this cluster serves no ValidatingAdmissionPolicy API (Kubernetes < 1.30)"),
            "nothing stops a node's agent from touching other nodes' VMs until the cluster runs \
             Kubernetes >= 1.30 (Harvester >= 1.4.1) and the chart installs its policy",
        ),
        Ok(()) => Check::warn(
            name,
            format!("{what}: admitted: nothing stops a node's agent from touching other nodes' VMs"),
            format!("install the chart's admission policy {POLICY} (admissionPolicy.enabled) with its binding and params"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Status;

    #[test]
    fn an_admitted_patch_warns_and_says_whether_the_policy_api_exists() {
        let no_api = judge_policy("x", "vmi d/a", false, Ok(()));
        assert_eq!(no_api.status, Status::Warn);
        assert!(
            no_api.detail.contains("no ValidatingAdmissionPolicy API"),
            "{no_api:?}"
        );
        assert!(no_api.fix.contains(">= 1.30"), "{no_api:?}");
        let absent = judge_policy("x", "vmi d/a", true, Ok(()));
        assert_eq!(absent.status, Status::Warn);
        assert!(
            absent.detail.contains("nothing stops a node's agent"),
            "{absent:?}"
        );
        assert!(absent.fix.contains(POLICY), "{absent:?}");
    }
}
