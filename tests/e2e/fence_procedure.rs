//! The fenced-node procedure of docs/runbook.md ("A node that never comes back") under the
//! default install: `deploy/`'s RBAC and both admission policies in force, the power-loss
//! cluster with harvester-node-1 tainted out-of-service by a person who knows it is off. The
//! simulator runs no pods: the Job is run as its pod would run it (`fence_support::run_job`).
//!
//! Proven: the procedure recovers the fenced node's stuck VMs from another node; without the
//! params the same identity writes nothing; with the params for harvester-node-1 it cannot
//! touch another node's VMI, pod or Lease, nor write a ConfigMap; the old way (the run from
//! another node's agent pod) is refused by the agents' policy with its message, while its
//! dry-run rehearsal writes nothing; the runbook gives the procedure, not the old way.

use crate::admission_support::{client, send, AGENT_POD, SA_NS};
use crate::e2e_support::{names, NODE};
use crate::fence_support::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_procedure_recovers_the_fenced_nodes_vms_from_another_node() {
    let sim = fenced_cluster().await;
    let before = names(&sim, "VirtualMachineInstance");
    set_params(&sim, NODE);
    let t = pod_token(&sim, "vmrecover-fence", JOB_POD);
    let run = run_job(&sim, &t, None, &[]).await.expect("the Job starts");
    // vm-custom-01 carries an unknown finalizer: left for a person (exit 3).
    assert_eq!(run.code, 3, "{}", run.output);
    let left = names(&sim, "VirtualMachineInstance");
    for vmi in ["default/vm-web-01", "default/vm-db-01", "prod/vm-legacy-01"] {
        assert!(before.contains(vmi), "{vmi} was there: {before:?}");
        assert!(
            !left.contains(vmi),
            "{vmi} recovered: {left:?}\n{}",
            run.output
        );
    }
    let writes = run.writes();
    assert!(
        writes
            .iter()
            .any(|(m, p, s)| m == "PATCH" && p.contains("/virtualmachineinstances/") && *s == 200),
        "{writes:?}"
    );
    let refused: Vec<_> = writes.iter().filter(|w| w.2 >= 400 && w.2 != 409).collect();
    assert!(refused.is_empty(), "refused: {refused:?}\n{}", run.output);
    // Every object the run read or wrote was allowed by RBAC: no 403 at all.
    let forbidden: Vec<_> = run
        .requests
        .iter()
        .filter(|r| r.user.as_deref() == Some(FENCE_USER) && r.status == 403)
        .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
        .collect();
    assert!(forbidden.is_empty(), "{forbidden:?}");
    // The procedure's last step: the node is emptied, and with it every write of the identity.
    set_params(&sim, "");
    let (c, _d) = client(&sim, &t).await;
    let lease = send(
        &c,
        "PUT",
        &format!("/apis/coordination.k8s.io/v1/namespaces/{SA_NS}/leases/vmrecover-{NODE}"),
        "application/json",
        Some(
            sim.get(
                "coordination.k8s.io/v1",
                "Lease",
                SA_NS,
                &format!("vmrecover-{NODE}"),
            )
            .expect("lease"),
        ),
    )
    .await;
    let (code, _, msg) = lease.expect_err("no node in the params: refused");
    assert!(msg.contains("names no node"), "{code} {msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_params_the_fence_identity_writes_nothing() {
    let sim = fenced_cluster().await;
    let t = pod_token(&sim, "vmrecover-fence", JOB_POD);
    // The Job as shipped, no procedure running: an empty --fenced-node is refused before
    // anything is read or written.
    let before = names(&sim, "VirtualMachineInstance");
    let run = run_job(&sim, &t, None, &[]).await.expect("the Job starts");
    assert_eq!(run.code, 1, "{}", run.output);
    assert!(
        run.output.contains("--fenced-node needs the name"),
        "{}",
        run.output
    );
    assert!(run.writes().is_empty(), "{:?}", run.writes());
    // The same command with the node given by hand: every write is refused by the policy.
    let run = run_job(&sim, &t, Some(NODE), &[]).await.expect("runs");
    assert_ne!(run.code, 0, "{}", run.output);
    assert_eq!(names(&sim, "VirtualMachineInstance"), before);
    let writes = run.writes();
    assert!(!writes.is_empty(), "the run tried to take the Lease");
    for (m, p, s) in &writes {
        assert!(*s == 422 || *s == 403, "{m} {p} -> {s}");
    }
    assert!(
        run.output.contains("vmrecover-fence-restriction")
            && run.output.contains("names no node (data.node is empty)"),
        "{}",
        run.output
    );
    // The permanent binding restricts only the fence identity: a person's writes go through.
    person(&sim, &["label", "node", NODE, "example.com/checked=yes"]);
}

/// A deleting VMI of `node`.
fn vmi(name: &str, node: &str) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "namespace": "default",
                     "finalizers": ["kubevirt.io/foregroundDeleteVirtualMachine"],
                     "deletionTimestamp": "2026-01-01T00:00:00Z",
                     "labels": {"kubevirt.io/nodeName": node}},
        "spec": {"domain": {"devices": {}}},
        "status": {"phase": "Failed", "nodeName": node},
    })
}

fn launcher(name: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default",
                     "labels": {"kubevirt.io": "virt-launcher"}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
        "status": {"phase": "Failed"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_params_for_one_node_nothing_of_another_is_touched() {
    let sim = fenced_cluster().await;
    let mut live = vmi("own-live", NODE);
    live["metadata"]
        .as_object_mut()
        .map(|m| m.remove("deletionTimestamp"));
    let mut unknown = vmi("own-unknown", NODE);
    unknown["metadata"]["finalizers"] = json!(["example.com/unknown"]);
    for o in [
        vmi("own", NODE),
        live,
        unknown,
        vmi("other", RUNNER_NODE),
        launcher("virt-launcher-own-abcde", NODE),
        launcher("virt-launcher-other-abcde", RUNNER_NODE),
    ] {
        sim.put(o).expect("put");
    }
    set_params(&sim, NODE);
    let (c, _d) = client(&sim, &pod_token(&sim, "vmrecover-fence", JOB_POD)).await;
    let strip = json!([{"op": "test", "path": "/metadata/finalizers",
                        "value": ["kubevirt.io/foregroundDeleteVirtualMachine"]},
                       {"op": "replace", "path": "/metadata/finalizers", "value": []}]);
    let vmis = "/apis/kubevirt.io/v1/namespaces/default/virtualmachineinstances";
    let pods = "/api/v1/namespaces/default/pods";
    let who = format!("vmrecover-fence for node {NODE} may only");
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "vmrecover-fence-params", "namespace": SA_NS},
        "data": {"node": RUNNER_NODE}});
    let unknown_strip = json!([{"op": "test", "path": "/metadata/finalizers",
                        "value": ["example.com/unknown"]},
                       {"op": "replace", "path": "/metadata/finalizers", "value": []}]);
    let refused = [
        (
            "PATCH",
            format!("{vmis}/own-live"),
            JSON_PATCH,
            Some(strip.clone()),
            "that is being deleted".to_string(),
        ),
        (
            "PATCH",
            format!("{vmis}/own-unknown"),
            JSON_PATCH,
            Some(unknown_strip),
            "(alsoFinalizers), not: example.com/unknown".to_string(),
        ),
        (
            "PATCH",
            format!("{vmis}/other"),
            JSON_PATCH,
            Some(strip.clone()),
            format!("{who} change the VirtualMachineInstances of that node"),
        ),
        (
            "DELETE",
            format!("{pods}/virt-launcher-other-abcde"),
            "application/json",
            None,
            format!("{who} delete pods of that node"),
        ),
        (
            "POST",
            format!("/apis/coordination.k8s.io/v1/namespaces/{SA_NS}/leases"),
            "application/json",
            Some(
                json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                     "metadata": {"name": format!("vmrecover-{RUNNER_NODE}")}, "spec": {}}),
            ),
            format!("{who} write the Lease"),
        ),
        (
            "PUT",
            format!("/api/v1/namespaces/{SA_NS}/configmaps/vmrecover-fence-params"),
            "application/json",
            Some(cm),
            "vmrecover-fence may not UPDATE configmaps".into(),
        ),
    ];
    for (method, path, ct, body, message) in refused {
        let r = send(&c, method, &path, ct, body).await;
        let (code, _, msg) = r.expect_err(&format!("{method} {path} refused"));
        // RBAC refuses the ConfigMap update first (403); the policy the rest (422).
        assert!(
            msg.contains(&message) || (code == 403 && path.contains("configmaps")),
            "{method} {path}: {code} {msg}"
        );
    }
    // The same identity may do the fenced recovery's writes on NODE.
    send(&c, "PATCH", &format!("{vmis}/own"), JSON_PATCH, Some(strip))
        .await
        .expect("NODE's VMI");
    send(
        &c,
        "DELETE",
        &format!("{pods}/virt-launcher-own-abcde"),
        "application/json",
        None,
    )
    .await
    .expect("NODE's launcher pod");
    assert!(sim
        .get("v1", "Pod", "default", "virt-launcher-other-abcde")
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_way_from_another_nodes_agent_pod_is_refused() {
    let sim = fenced_cluster().await;
    // The agent's pod on another node than the fenced one (the runbook's old "from any node's
    // agent pod"): its token names that node.
    let mut pod = sim.get("v1", "Pod", SA_NS, AGENT_POD).expect("agent pod");
    pod["spec"]["nodeName"] = json!(RUNNER_NODE);
    sim.remove("v1", "Pod", SA_NS, AGENT_POD);
    sim.put(pod).expect("agent pod on node 2");
    let t = pod_token(&sim, "vmrecover", AGENT_POD);
    let before = names(&sim, "VirtualMachineInstance");
    let run = run_job(&sim, &t, Some(NODE), &[]).await.expect("runs");
    assert_ne!(run.code, 0, "{}", run.output);
    assert_eq!(names(&sim, "VirtualMachineInstance"), before);
    let msg = format!(
        "vmrecover on node {RUNNER_NODE} may only write its own Lease {SA_NS}/vmrecover-{RUNNER_NODE}"
    );
    assert!(run.output.contains(&msg), "{}", run.output);
    // The runbook's rehearsal from an agent pod (`--dry-run`) makes no write, so the agents'
    // policy has nothing to refuse: it shows the plan.
    let seen = sim.requests().len();
    let dry = run_job(&sim, &t, Some(NODE), &["--dry-run"])
        .await
        .expect("runs");
    assert!(matches!(dry.code, 0 | 3), "{}", dry.output);
    assert!(dry.output.contains("FENCED RUN"), "{}", dry.output);
    let writes: Vec<String> = dry.requests[seen..]
        .iter()
        .filter(|r| !r.internal && r.is_mutating())
        .map(|r| format!("{} {} {}", r.method, r.path, r.status))
        .collect();
    assert!(writes.is_empty(), "the dry run wrote: {writes:?}");
}

#[test]
fn the_runbook_gives_the_procedure_not_the_agent_pod() {
    let section = runbook_section();
    let job = rendered("fence-job.yaml", "CronJob");
    assert_eq!(job["spec"]["suspend"], true, "never on a schedule");
    let pod = &job["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert!(
        pod["tolerations"].is_null(),
        "the Job tolerates nothing: NODE's taints keep it off NODE"
    );
    let create = runbook_commands("create job", "harvester-node-1");
    assert_eq!(
        create,
        [words(
            "-n harvester-system create job vmrecover-fence-harvester-node-1 --from=cronjob/vmrecover-fence"
        )],
        "the runbook starts the shipped CronJob's Job"
    );
    assert!(
        !section.contains("from any node's agent pod"),
        "the agent pod's token names its own node: the policy refuses a fenced run from it"
    );
}

/// The fence policy lets go of exactly the finalizers the agents' policy does (one template
/// renders both: `vmrecover.vmiFinalizers`/`vmFinalizers`), which
/// admission_policy_e2e.rs keeps equal to the ones vmrecover knows.
#[test]
fn the_fence_policy_knows_the_same_finalizers_as_the_agents_policy() {
    let text = std::fs::read_to_string(repo().join("deploy/admissionpolicy.yaml")).expect("policy");
    let objs = crate::chart_support::objects(&text);
    let params = objs
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "vmrecover-admission-params")
        .expect("the agents' params");
    let fence = objs
        .iter()
        .find(|o| {
            o["kind"] == "ValidatingAdmissionPolicy"
                && o["metadata"]["name"] == "vmrecover-fence-restriction"
        })
        .expect("the fence policy");
    let allowed = fence["spec"]["variables"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "allowedFinalizers"))
        .and_then(|v| v["expression"].as_str())
        .expect("allowedFinalizers");
    for key in ["vmiFinalizers", "vmFinalizers"] {
        let list = params["data"][key].as_str().expect("list");
        assert!(
            allowed.contains(&format!("'{list}'")),
            "{key} {list} not in {allowed}"
        );
    }
}

/// The runbook's warning and its way back: with the params deleted the permanent binding
/// refuses everyone's writes (the apiserver collects params before matchConditions); deleting
/// the binding is still allowed (policy objects are exempt from policies), and re-applying
/// deploy/admissionpolicy.yaml brings params and binding back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_params_lock_everyone_out_until_the_runbooks_way_back() {
    let sim = fenced_cluster().await;
    person(
        &sim,
        &["-n", SA_NS, "delete", "configmap", "vmrecover-fence-params"],
    );
    let out = crate::admission_support::kubectl(&sim, &["label", "node", NODE, "x=y"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no params found"),
        "a person's write is refused too: {err}"
    );
    person(
        &sim,
        &[
            "delete",
            "validatingadmissionpolicybinding",
            "vmrecover-fence-restriction",
        ],
    );
    person(
        &sim,
        &["apply", "-f", &crate::admission_support::policy_file()],
    );
    person(&sim, &["label", "node", NODE, "x=y"]);
    let params = sim
        .get("v1", "ConfigMap", SA_NS, "vmrecover-fence-params")
        .expect("params back");
    assert_eq!(params["data"]["node"], "");
}
