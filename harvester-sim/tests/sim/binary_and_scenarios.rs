//! The `harvester-sim` binary as a process, and the shipped scenarios.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::common::*;
use harvester_sim::{shipped_scenario, Sim, SimConfig};

#[tokio::test]
async fn binary_serves_writes_kubeconfig_and_exits_zero_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("harvester-sim-bin-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let kc = dir.join("kubeconfig");
    let log = dir.join("requests.jsonl");
    let mut child = match Command::new(env!("CARGO_BIN_EXE_harvester-sim"))
        .args([
            "--plain-http",
            "--listen",
            "127.0.0.1:0",
            "--kube-version",
            "1.27.16",
            "--kubeconfig-out",
        ])
        .arg(&kc)
        .arg("--scenario")
        .arg(shipped_scenario("power-loss.yaml"))
        .arg("--log-requests")
        .arg(&log)
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("cannot start harvester-sim: {e}"),
    };
    let Some(out) = child.stdout.take() else {
        panic!("no stdout")
    };
    let mut line = String::new();
    let _ = BufReader::new(out).read_line(&mut line);
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or("")
        .to_string();
    assert!(addr.starts_with("127.0.0.1:"), "first line was {line:?}");
    let text = std::fs::read_to_string(&kc).unwrap_or_default();
    assert!(text.contains(&format!("server: http://{addr}")), "{text}");
    assert!(
        text.contains("token: ") && text.contains("current-context: harvester-sim"),
        "{text}"
    );
    let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let uri: hyper::Uri = match format!("http://{addr}/version").parse() {
        Ok(u) => u,
        Err(e) => panic!("{e}"),
    };
    let resp = client.get(uri).await;
    let body = match resp {
        Ok(r) => http_body_util::BodyExt::collect(r.into_body())
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default(),
        Err(e) => panic!("GET /version: {e}"),
    };
    assert!(String::from_utf8_lossy(&body).contains("\"gitVersion\":\"v1.27.16\""));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(killed.is_ok_and(|s| s.success()));
    let status = child.wait();
    assert!(
        status.as_ref().is_ok_and(|s| s.success()),
        "exit status {status:?}"
    );
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logged.contains("\"/version\""), "{logged}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn power_loss_scenario_has_the_agreed_objects() {
    let sim =
        match Sim::start(SimConfig::default().scenario_file(shipped_scenario("power-loss.yaml")))
            .await
        {
            Ok(s) => s,
            Err(e) => panic!("{e:#}"),
        };
    let s = sim.settings();
    assert!(s.down_nodes.contains("harvester-node-1") && s.down_nodes.len() == 1);
    assert!(!s.virt_controller);
    let vmi = |ns: &str, n: &str| {
        sim.get("kubevirt.io/v1", "VirtualMachineInstance", ns, n)
            .unwrap_or_default()
    };
    let vm = |ns: &str, n: &str| {
        sim.get("kubevirt.io/v1", "VirtualMachine", ns, n)
            .unwrap_or_default()
    };
    for (ns, n) in [
        ("default", "vm-web-01"),
        ("default", "vm-db-01"),
        ("prod", "vm-legacy-01"),
        ("default", "vm-custom-01"),
        ("default", "vm-live-01"),
    ] {
        assert!(
            vmi(ns, n)["metadata"]["deletionTimestamp"].is_string(),
            "{n} VMI deleting"
        );
        assert!(
            vm(ns, n)["metadata"]["deletionTimestamp"].is_string(),
            "{n} VM deleting"
        );
        assert_eq!(
            vmi(ns, n)["metadata"]["labels"]["kubevirt.io/nodeName"],
            "harvester-node-1"
        );
    }
    assert_eq!(
        finalizers(&vmi("default", "vm-web-01")),
        [
            "kubevirt.io/virtualMachineControllerFinalize",
            "kubevirt.io/foregroundDeleteVirtualMachine"
        ]
    );
    assert_eq!(
        finalizers(&vm("default", "vm-web-01")),
        [
            "kubevirt.io/virtualMachineControllerFinalize",
            "wrangler.cattle.io/VMController.CleanupPVCAndSnapshot"
        ]
    );
    assert_eq!(
        vm("default", "vm-web-01")["metadata"]["annotations"]
            ["harvesterhci.io/removedPersistentVolumeClaims"],
        "vm-web-01-disk-0-abcde"
    );
    assert!(finalizers(&vmi("prod", "vm-legacy-01"))
        .contains(&"foregroundDeleteVirtualMachine".to_string()));
    assert!(finalizers(&vm("prod", "vm-legacy-01"))
        .contains(&"harvesterhci.io/VMController.UnsetOwnerOfPVCs".to_string()));
    assert!(finalizers(&vmi("default", "vm-custom-01"))
        .contains(&"backup.example.com/protect".to_string()));
    let app = vmi("prod", "vm-app-02");
    assert!(app["metadata"].get("deletionTimestamp").is_none());
    assert_eq!(app["status"]["phase"], "Failed");
    assert_eq!(vm("prod", "vm-app-02")["spec"]["runStrategy"], "Halted");
    assert_eq!(
        vm("prod", "vm-app-02")["status"]["printableStatus"],
        "Stopping"
    );
    let pod = sim
        .get("v1", "Pod", "default", "virt-launcher-vm-db-01-xxxxx")
        .unwrap_or_default();
    assert!(pod["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(
        pod["metadata"]["labels"]["kubevirt.io/created-by"],
        vmi("default", "vm-db-01")["metadata"]["uid"]
    );
    assert_eq!(
        pod["metadata"]["ownerReferences"][0]["kind"],
        "VirtualMachineInstance"
    );
    assert_eq!(
        pod["metadata"]["annotations"]["kubevirt.io/domain"],
        "vm-db-01"
    );
    assert_eq!(
        vmi("default", "vm-web-01")["metadata"]["uid"],
        "22222222-0000-4000-8000-000000000001"
    );
    // Storage for every stuck VM: PVC bound to pvc-<uid>, a CSI VolumeAttachment and Longhorn objects on node-1.
    let pvc = sim
        .get(
            "v1",
            "PersistentVolumeClaim",
            "default",
            "vm-web-01-disk-0-abcde",
        )
        .unwrap_or_default();
    let pv_name = pvc["spec"]["volumeName"].as_str().unwrap_or("").to_string();
    assert_eq!(
        pv_name,
        format!("pvc-{}", pvc["metadata"]["uid"].as_str().unwrap_or(""))
    );
    let pv = sim
        .get("v1", "PersistentVolume", "", &pv_name)
        .unwrap_or_default();
    assert_eq!(pv["spec"]["csi"]["driver"], "driver.longhorn.io");
    assert_eq!(pv["spec"]["csi"]["volumeHandle"], pv_name.as_str());
    let vas = sim.list("storage.k8s.io/v1", "VolumeAttachment");
    let va = vas
        .iter()
        .find(|v| v["spec"]["source"]["persistentVolumeName"] == pv_name.as_str())
        .cloned()
        .unwrap_or_default();
    assert!(va["metadata"]["name"]
        .as_str()
        .is_some_and(|n| n.starts_with("csi-") && n.len() == 68));
    assert_eq!(va["spec"]["nodeName"], "harvester-node-1");
    assert_eq!(va["status"]["attached"], true);
    let lhv = sim
        .get("longhorn.io/v1beta2", "Volume", "longhorn-system", &pv_name)
        .unwrap_or_default();
    assert_eq!(lhv["status"]["currentNodeID"], "harvester-node-1");
    let lhva = sim
        .get(
            "longhorn.io/v1beta2",
            "VolumeAttachment",
            "longhorn-system",
            &pv_name,
        )
        .unwrap_or_default();
    let tickets = lhva["spec"]["attachmentTickets"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert!(tickets.values().all(|t| t["nodeID"] == "harvester-node-1") && !tickets.is_empty());
    assert_eq!(
        sim.list("kubevirt.io/v1", "VirtualMachineInstance").len(),
        10
    );
    assert_eq!(sim.list("v1", "Node").len(), 3);
}

#[tokio::test]
async fn healthy_scenario_has_nothing_stuck_and_scenarios_merge() {
    let extra = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: extra}\n";
    let cfg = SimConfig::default()
        .scenario_file(shipped_scenario("healthy.yaml"))
        .scenario_text(extra);
    let sim = match Sim::start(cfg).await {
        Ok(s) => s,
        Err(e) => panic!("{e:#}"),
    };
    assert!(sim.settings().virt_controller);
    let vmis = sim.list("kubevirt.io/v1", "VirtualMachineInstance");
    assert_eq!(vmis.len(), 4);
    assert!(vmis
        .iter()
        .all(|v| v["metadata"].get("deletionTimestamp").is_none()
            && v["status"]["phase"] == "Running"));
    let ns = sim.get("v1", "Namespace", "", "extra").unwrap_or_default();
    assert_eq!(
        ns["metadata"]["uid"].as_str().map(str::len),
        Some(36),
        "a uid is filled in"
    );
    assert!(ns["metadata"]["creationTimestamp"].is_string());
    assert!(rv(&ns) > 0);
    let bad = Sim::start(SimConfig::default().scenario_text("apiVersion: v1\nkind: Pod\n")).await;
    assert!(bad.is_err(), "an object without a name is refused");
}

#[test]
fn binary_refuses_an_unknown_release() {
    let dir = std::env::temp_dir().join(format!("harvester-sim-rel-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    // 1.4.1 ran another Kubernetes (1.30.7) than the 1.4 row (1.4.0, 1.29.9): not guessed.
    for release in ["2.0", "1.4.1"] {
        let out = Command::new(env!("CARGO_BIN_EXE_harvester-sim"))
            .args(["--plain-http", "--release", release, "--kubeconfig-out"])
            .arg(dir.join("kubeconfig"))
            .arg("--scenario")
            .arg(shipped_scenario("power-loss.yaml"))
            .output();
        let Ok(out) = out else {
            panic!("cannot start harvester-sim")
        };
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("unknown Harvester release \"{release}\""))
                && err.contains("1.4 (v1.4.0), 1.4.3 (v1.4.3), 1.5 (v1.5.1), 1.6 (v1.6.1), 1.7 (v1.7.0), 1.8 (v1.8.0)"),
            "{err}"
        );
    }
}

/// A release named in a scenario's settings or through `POST /_sim/settings` is checked as
/// `--release` is: an unknown one is refused, not simulated as the default release.
#[tokio::test]
async fn settings_refuse_an_unknown_release() {
    let known =
        "1.4 (v1.4.0), 1.4.3 (v1.4.3), 1.5 (v1.5.1), 1.6 (v1.6.1), 1.7 (v1.7.0), 1.8 (v1.8.0)";
    let text = "apiVersion: sim.vmrecover.dev/v1\nkind: SimulatorSettings\nrelease: \"1.4.1\"\n";
    let err = match Sim::start(SimConfig::default().plain_http().scenario_text(text)).await {
        Ok(_) => panic!("a scenario naming release 1.4.1 was loaded"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("unknown Harvester release \"1.4.1\"") && err.contains(known),
        "{err}"
    );
    let sim = sim_with("").await;
    let h = Http::new(&sim);
    let r = h
        .post("/_sim/settings", &serde_json::json!({"release": "2.0"}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let message = r.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("unknown Harvester release \"2.0\""),
        "{message}"
    );
    assert_eq!(sim.settings().release, "1.8", "nothing changed");
    let r = h
        .post("/_sim/settings", &serde_json::json!({"release": "v1.6.1"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn every_release_generates_the_shipped_scenarios() {
    for p in harvester_sim::profiles::PROFILES {
        let sim = Sim::start(
            SimConfig::default()
                .release(p.harvester)
                .scenario_file(shipped_scenario("power-loss.yaml"))
                .scenario_file(shipped_scenario("seed.yaml")),
        )
        .await;
        let Ok(sim) = sim else {
            panic!("{}: {:?}", p.harvester, sim.err())
        };
        assert_eq!(sim.settings().release, p.harvester);
        let Some(web) = sim.get(
            "kubevirt.io/v1",
            "VirtualMachineInstance",
            "default",
            "vm-web-01",
        ) else {
            panic!("{}: no vm-web-01", p.harvester)
        };
        assert!(finalizers(&web).contains(&p.vmi_foreground_finalizer.to_string()));
        let healthy = Sim::start(
            SimConfig::default()
                .release(p.harvester)
                .scenario_file(shipped_scenario("healthy.yaml")),
        )
        .await;
        assert!(healthy.is_ok(), "{}: {:?}", p.harvester, healthy.err());
    }
}
