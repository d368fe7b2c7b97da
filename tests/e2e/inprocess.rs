//! The in-process tier: vmrecover's I/O parts — gather, lease, recheck, apply — called as
//! functions against the simulator started in this process, so a failure names the part
//! that broke. The binary-level tests (`recovery_e2e`, `reliability_*`) stay the proof of
//! the guarantees as an operator sees them.

use std::time::Duration;

use crate::e2e_support::{Env, NODE};
use vmrecover::cluster::{self, AlsoRead, LeaseConfig, LeaseError};
use vmrecover::config::{ClusterConfig, Config, Policy, Tuning};
use vmrecover::pipeline;
use vmrecover::recovery::{self, Action, Mode, Recheck, Session, VmResult};

fn cluster_config(env: &Env) -> ClusterConfig {
    ClusterConfig {
        kubeconfig: Some(env.sim.kubeconfig_path().to_path_buf()),
        namespace: "harvester-system".into(),
        tuning: Tuning::default(),
    }
}

fn config(env: &Env) -> Config {
    let mut cfg = Config::for_node(
        NODE,
        env.state.path().to_path_buf(),
        env.host_root.path().to_path_buf(),
    );
    cfg.cluster = cluster_config(env);
    cfg.policy = Policy {
        stuck_after: Duration::ZERO,
        controller_grace: Duration::ZERO,
        ..Policy::default()
    };
    cfg
}

fn never_stop() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    std::mem::forget(tx);
    rx
}

mod gather {
    use super::*;

    #[tokio::test]
    async fn reads_this_nodes_vmis_and_launcher_pods_with_selectors_and_writes_nothing() {
        let env = Env::power_loss().await;
        let client = cluster::connect(&cluster_config(&env)).await.unwrap();
        env.sim.clear_requests();
        let facts = cluster::gather(&client, NODE, &AlsoRead::default()).await;
        let vmis = facts.vmis.value().expect("VMIs read");
        assert_eq!(vmis.len(), 6, "the six VMIs of node-1: {vmis:?}");
        assert!(vmis.iter().all(|v| v.node_label.as_deref() == Some(NODE)));
        let pods = facts.pods.value().expect("pods read");
        assert!(pods.iter().all(|p| p.key.namespace != "kube-system"));
        let reqs = env.sim.requests();
        assert!(reqs.iter().all(|r| !r.is_mutating()), "{reqs:?}");
        let vmi_list = reqs
            .iter()
            .find(|r| r.path.ends_with("/virtualmachineinstances"))
            .expect("a VMI list");
        assert!(
            vmi_list.query.contains("labelSelector"),
            "VMIs are listed by node label: {}",
            vmi_list.query
        );
    }

    #[tokio::test]
    async fn a_missing_node_is_named() {
        let env = Env::power_loss().await;
        let Err(err) = cluster::connect_to_node(&cluster_config(&env), "no-such-node").await else {
            panic!("a node that does not exist was accepted")
        };
        assert!(matches!(err, cluster::ConnectError::NoSuchNode(_)), "{err}");
        assert!(err.to_string().contains("pass --node"), "{err}");
    }
}

mod lease {
    use super::*;

    #[tokio::test]
    async fn one_holder_at_a_time_and_the_other_is_told_who() {
        let env = Env::power_loss().await;
        let client = cluster::connect(&cluster_config(&env)).await.unwrap();
        let cfg = |who: &str| LeaseConfig::for_node("harvester-system", NODE, who.into());
        let held = cluster::acquire_lease(&client, cfg("agent@n1/1"), Duration::ZERO)
            .await
            .expect("first taker gets it");
        assert!(held.is_held());
        match cluster::acquire_lease(&client, cfg("manual@n1/2"), Duration::ZERO).await {
            Err(LeaseError::HeldByOther { holder, .. }) => assert_eq!(holder, "agent@n1/1"),
            other => panic!("expected HeldByOther, got {:?}", other.map(|_| ())),
        }
        held.release().await.expect("release");
        let again = cluster::acquire_lease(&client, cfg("manual@n1/2"), Duration::ZERO)
            .await
            .expect("free after release");
        again.release().await.unwrap();
        // Every Lease write carried the resourceVersion it read (optimistic concurrency).
        for r in env
            .sim
            .requests()
            .iter()
            .filter(|r| r.is_mutating() && r.path.contains("/leases/") && r.method == "PUT")
        {
            assert!(
                r.body["metadata"]["resourceVersion"].is_string(),
                "an update without resourceVersion: {r:?}"
            );
        }
    }

    /// A Lease whose holder looks gone by the API server's clock (a crashed run, a powered-off
    /// node's agent) is taken without --lease-wait, but only after this run has watched it
    /// unchanged for its whole duration (client-go's rule): never at the first look.
    #[tokio::test]
    async fn a_stale_lease_is_taken_after_watching_it_for_its_duration_without_lease_wait() {
        let env = Env::power_loss().await;
        let client = cluster::connect(&cluster_config(&env)).await.unwrap();
        let cfg = |who: &str| LeaseConfig::for_node("harvester-system", NODE, who.into());
        // A holder that died without releasing: its renewal two minutes in the past by the
        // API server's clock, its duration 2 s.
        let old = (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(120)).to_string();
        env.sim
            .put(serde_json::json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": format!("vmrecover-{NODE}"), "namespace": "harvester-system"},
                "spec": {"holderIdentity": "agent@n1/1", "leaseDurationSeconds": 2,
                         "acquireTime": old, "renewTime": old},
            }))
            .expect("a dead holder's Lease");
        env.sim.clear_requests();
        let started = std::time::Instant::now();
        let taken = cluster::acquire_lease(&client, cfg("manual@n1/2"), Duration::ZERO)
            .await
            .expect("a stale Lease is taken once watched for its duration");
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "taken after {:?}: before it was seen unchanged for its 2 s",
            started.elapsed()
        );
        let reads = env
            .sim
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.contains("/leases/"))
            .count();
        assert!(reads >= 2, "it was read more than once: {reads}");
        taken.release().await.unwrap();
    }
}

mod recheck {
    use super::*;

    #[tokio::test]
    async fn a_new_launcher_pod_since_the_plan_is_a_new_step_of_the_re_run_planner() {
        let env = Env::power_loss().await;
        let cfg = config(&env);
        let g = pipeline::gather(&cfg, None).await;
        let client = g.client.expect("connected");
        let plan = recovery::plan(&g.facts, &cfg.policy);
        let d = plan
            .decisions
            .iter()
            .find(|d| d.name == "vm-web-01")
            .expect("vm-web-01 planned");
        let Action::Recover { steps } = &d.action else {
            panic!("vm-web-01 should be recovered: {d:?}")
        };
        let rc = Recheck::new(pipeline::Regatherer::new(&cfg, client), &plan);
        rc.before_change(d, steps).await.expect("safe as planned");

        let vmi = d.vmi.as_ref().unwrap();
        env.sim
            .put(serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": "virt-launcher-vm-web-01-new", "namespace": "default",
                    "labels": {"kubevirt.io": "virt-launcher", "kubevirt.io/created-by": vmi.uid},
                    "annotations": {"kubevirt.io/domain": "vm-web-01"}
                },
                "spec": {"nodeName": NODE, "containers": [{"name": "compute", "image": "x"}]},
                "status": {"phase": "Running"}
            }))
            .expect("add a pod");
        // Every re-check reads anew: no answer older than the question.
        let why = rc
            .before_change(d, steps)
            .await
            .expect_err("a new pod moved");
        assert_eq!(why.blocker, recovery::Blocker::PlanChanged, "{why:?}");
        assert!(
            why.detail.contains("virt-launcher-vm-web-01-new"),
            "{why:?}"
        );
    }
}

mod apply {
    use super::*;

    #[tokio::test]
    async fn a_session_recovers_the_stuck_vms_and_touches_nothing_outside_the_plan() {
        let env = Env::power_loss().await;
        let cfg = config(&env);
        let g = pipeline::gather(&cfg, None).await;
        let client = g.client.expect("connected");
        let plan = recovery::plan(&g.facts, &cfg.policy);
        let planned = serde_json::to_value(&plan).unwrap();
        let recover = plan.actionable().count();
        assert!(recover >= 4, "{planned:#}");
        env.sim.clear_requests();
        let regather = pipeline::Regatherer::new(&cfg, client.clone());
        let session = Session::new(
            client,
            &cfg,
            Mode::Manual,
            Duration::ZERO,
            never_stop(),
            regather,
        );
        let report = session
            .apply(plan, jiff::Timestamp::now())
            .await
            .expect("lease taken");
        assert_eq!(report.failed(), 0, "{report:#?}");
        assert_eq!(report.aborted(), 0, "{report:#?}");
        assert_eq!(report.recovered() + report.handed_over(), recover);
        for o in &report.outcomes {
            assert!(
                matches!(o.result, VmResult::Recovered | VmResult::HandedToController),
                "{o:?}"
            );
        }
        let violations = crate::e2e_support::Allowed::from_plan(&planned).violations(&env.sim);
        assert!(violations.is_empty(), "{violations:#?}");
    }
}

mod cost {
    use super::*;
    use harvester_sim::{shipped_scenario, Sim, SimConfig};

    /// Issue 16: a pass on a healthy node reads the Node, its VMIs by label and its
    /// launcher pods by field selector — three requests, no VM, PVC, VolumeAttachment or
    /// Longhorn list. (A count, not a timing: the benchmark prints the bytes.)
    #[tokio::test]
    async fn a_healthy_node_costs_three_requests() {
        let sim = Sim::start(SimConfig::default().scenario_file(shipped_scenario("healthy.yaml")))
            .await
            .expect("sim");
        let cfg = ClusterConfig {
            kubeconfig: Some(sim.kubeconfig_path().to_path_buf()),
            namespace: "harvester-system".into(),
            tuning: Tuning::default(),
        };
        let client = cluster::connect(&cfg).await.unwrap();
        sim.clear_requests();
        let facts = cluster::gather(&client, "harvester-node-2", &AlsoRead::default()).await;
        assert!(
            facts.vmis.value().is_some_and(|v| !v.is_empty()),
            "{facts:?}"
        );
        let reqs: Vec<String> = sim
            .requests()
            .iter()
            .filter(|r| !r.internal)
            .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
            .collect();
        assert_eq!(reqs.len(), 3, "{reqs:#?}");
        assert!(
            reqs.iter().any(|r| r.contains("/nodes/harvester-node-2")),
            "{reqs:#?}"
        );
        assert!(reqs
            .iter()
            .any(|r| r.contains("virtualmachineinstances?") && r.contains("labelSelector")));
        assert!(reqs
            .iter()
            .any(|r| r.contains("/pods?") && r.contains("fieldSelector")));
    }
}
