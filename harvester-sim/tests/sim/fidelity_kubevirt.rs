//! KubeVirt's side of the API as the simulator serves it: the VMI CRD has no status
//! subresource (kubevirt v1.4.0 `pkg/virt-operator/resource/generate/components/crds.go`
//! `NewVirtualMachineInstanceCrd` declares none, `NewVirtualMachineCrd` does), and virt-api's
//! VMI mutating webhook (`pkg/virt-api/webhooks/mutating-webhook/mutators/vmi-mutator.go`,
//! v1.4.0) sets status Pending on create and, on update, puts the old status back unless the
//! writer is one of KubeVirt's ServiceAccounts (`pkg/virt-api/webhooks/serviceaccounts.go`).
//! Without RBAC, the bearer token still says who writes; no token is the admin, whose status
//! writes are reverted like any other user's.

use crate::common::*;
use harvester_sim::Identity;
use serde_json::json;

const COLL: &str = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances";

#[tokio::test]
async fn vmi_status_subresource_is_404_and_vm_status_is_served() {
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    assert_eq!(h.post(COLL, &vmi("a", "node-up")).await.status, 201);
    let status = format!("{}/status", vmi_path("default", "a"));
    assert_eq!(h.get(&status).await.status, 404);
    let p = h
        .patch(
            &status,
            "application/merge-patch+json",
            r#"{"status":{"phase":"Failed"}}"#,
        )
        .await;
    assert_eq!(p.status, 404, "{}", p.text);
    let disc = h.get("/apis/kubevirt.io/v1").await;
    let names: Vec<String> = disc.body["resources"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["name"].as_str())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    assert!(
        names.contains(&"virtualmachines/status".to_string()),
        "{names:?}"
    );
    assert!(
        !names.contains(&"virtualmachineinstances/status".to_string()),
        "{names:?}"
    );
}

#[tokio::test]
async fn vmi_status_sticks_only_for_kubevirt_service_accounts() {
    let sim = sim_with("").await;
    let admin = Http::new(&sim);
    let mut v = vmi("a", "node-up");
    v["status"] = json!({"phase": "Running"});
    let c = admin.post(COLL, &v).await;
    assert_eq!(c.status, 201, "{}", c.text);
    assert_eq!(
        c.body["status"]["phase"], "Pending",
        "virt-api sets Pending on create"
    );
    let path = vmi_path("default", "a");
    let patch = r#"{"status":{"phase":"Failed"},"metadata":{"labels":{"touched":"yes"}}}"#;
    for who in [
        None,
        Some(Identity::service_account("harvester-system", "vmrecover")),
    ] {
        let h = match &who {
            Some(id) => Http::with_token(&sim, &id.token()),
            None => Http::new(&sim),
        };
        let r = h.patch(&path, "application/merge-patch+json", patch).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(
            r.body["status"]["phase"], "Pending",
            "{who:?}: status reverted"
        );
        assert_eq!(
            r.body["metadata"]["labels"]["touched"], "yes",
            "the rest sticks"
        );
    }
    for sa in [
        "kubevirt-controller",
        "kubevirt-handler",
        "kubevirt-apiserver",
    ] {
        let kv = Http::with_token(
            &sim,
            &Identity::service_account("harvester-system", sa).token(),
        );
        let phase = if sa == "kubevirt-handler" {
            "Running"
        } else {
            "Scheduled"
        };
        let r = kv
            .patch(
                &path,
                "application/merge-patch+json",
                &format!(r#"{{"status":{{"phase":"{phase}"}}}}"#),
            )
            .await;
        assert_eq!(r.body["status"]["phase"], phase, "{sa}: {}", r.text);
    }
    // The same name in another namespace is not KubeVirt.
    let other = Http::with_token(
        &sim,
        &Identity::service_account("default", "kubevirt-controller").token(),
    );
    let r = other
        .patch(
            &path,
            "application/merge-patch+json",
            r#"{"status":{"phase":"Failed"}}"#,
        )
        .await;
    assert_eq!(
        r.body["status"]["phase"], "Scheduled",
        "kubevirt-apiserver's write stays"
    );
    assert!(Identity::kubevirt_controller().is_kubevirt());
}
