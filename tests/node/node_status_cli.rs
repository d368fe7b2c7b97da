//! `vmrecover status` end to end: the built binary, real fake VM processes and a
//! host-root tree, as an operator would run it.

use std::process::Command;

use harvester_sim::node::{is_root, HostTree};

use harvester_sim::node::*;

const UID_A: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const UID_B: &str = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a";
const PV: &str = "pvc-3f1c7e2a-1b2c-4d3e-8f9a-0b1c2d3e4f5a";
const MACHINE_ID: &str = "8F1E2D3C4B5A69788796A5B4C3D2E1F0";

/// This boot's id as the kubelet would compare it.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .expect("boot_id")
        .trim()
        .replace('-', "")
        .to_lowercase()
}

struct Running {
    procs: Vec<FakeProc>,
}

fn start() -> Running {
    Running {
        procs: vec![
            FakeProc::spawn(
                MONITOR,
                "/usr/bin/virt-launcher-monitor",
                &launcher_args("default", "vm-web-01", UID_A),
                &FakeOpts::default(),
            ),
            FakeProc::spawn(
                LAUNCHER,
                "/usr/bin/virt-launcher",
                &launcher_args("default", "vm-web-01", UID_A),
                &FakeOpts::default(),
            ),
            FakeProc::spawn(
                QEMU,
                "/usr/bin/qemu-system-x86_64",
                &qemu_args("default", "vm-web-01", UID_A),
                &FakeOpts::default(),
            ),
            FakeProc::spawn(
                QEMU,
                "/usr/bin/qemu-system-x86_64",
                &qemu_args("tenant-2", "db-01", UID_B),
                &FakeOpts::default(),
            ),
        ],
    }
}

/// A host root whose `proc` is the machine's, with one Longhorn device (a real block
/// device node, root only; a plain file otherwise) and its sysfs entry.
fn host_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = HostTree::with_real_proc(dir.path());
    std::fs::create_dir_all(dir.path().join("etc")).expect("mkdir etc");
    std::fs::write(dir.path().join("etc/machine-id"), format!("{MACHINE_ID}\n")).expect("id");
    if is_root() {
        t.longhorn(PV, "sdp", (8, 240));
    } else {
        std::fs::write(dir.path().join(format!("dev/longhorn/{PV}")), "").expect("device");
    }
    dir
}

fn status(root: &std::path::Path, output: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vmrecover"))
        .args([
            "--log-target",
            "stderr",
            "status",
            "--output",
            output,
            "--host-root",
        ])
        .arg(root)
        .output()
        .expect("run vmrecover status")
}

#[test]
fn status_json_lists_vm_processes_mapped_to_their_vmis() {
    let running = start();
    let root = host_root();
    let out = status(root.path(), "json");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status JSON: {e}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    // The node evidence section (`local` in the status document).
    let node = json
        .get("local")
        .or_else(|| json.get("node"))
        .expect("node section");
    assert_eq!(node["processes"]["state"], "read", "{node:#}");
    // Hole 5: the host identity, normalised for comparing with the Node's nodeInfo.
    assert_eq!(node["identity"]["state"], "read", "{node:#}");
    assert_eq!(
        node["identity"]["value"]["machine_id"],
        MACHINE_ID.to_lowercase()
    );
    assert_eq!(node["identity"]["value"]["boot_id"], boot_id());
    let procs = node["processes"]["value"].as_array().expect("process list");
    let expected = [
        ("launcher-monitor", "default", "vm-web-01", UID_A),
        ("launcher", "default", "vm-web-01", UID_A),
        ("qemu", "default", "vm-web-01", UID_A),
        ("qemu", "tenant-2", "db-01", UID_B),
    ];
    for (p, (kind, ns, name, uid)) in running.procs.iter().zip(expected) {
        let found = procs
            .iter()
            .find(|j| j["pid"] == p.pid())
            .unwrap_or_else(|| panic!("pid {} missing from {procs:#?}", p.pid()));
        assert_eq!(found["kind"], kind);
        assert_eq!(found["namespace"], ns);
        assert_eq!(found["name"], name);
        assert_eq!(found["uid"], uid);
        assert!(found["start_time"].as_u64().is_some_and(|t| t > 0));
    }
    let devices = node["disks"]["devices"]["value"]
        .as_array()
        .expect("devices");
    assert!(devices.iter().any(|d| d["volume"] == PV));
    // The JSON is the NodeFacts type: the planner's questions work on it.
    let facts: vmrecover::node::NodeFacts =
        serde_json::from_value(node.clone()).expect("NodeFacts round-trips through JSON");
    // Not held, unless some process's descriptors are unreadable here (in some sandboxes
    // even root cannot read pid 1's): then it cannot be known and says why.
    let unreadable = facts
        .disks
        .open_files
        .value()
        .map(|o| o.unreadable.len())
        .unwrap_or(1);
    match facts.volume_holders(PV) {
        Ok(h) => assert!(h.is_empty() && unreadable == 0, "{h:?}"),
        Err(e) if !is_root() => assert!(e.to_string().contains("not a block device"), "{e}"),
        Err(e) => assert!(
            unreadable > 0 && e.to_string().contains("could not be read"),
            "{e}"
        ),
    }
    assert_eq!(
        facts
            .processes_for("tenant-2", "db-01", UID_B)
            .expect("readable")
            .iter()
            .filter(|p| p.pid == running.procs[3].pid())
            .count(),
        1
    );
}

#[test]
fn status_table_shows_processes_and_volumes() {
    let running = start();
    let root = host_root();
    let out = status(root.path(), "wide");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("VM processes on this node:"), "{text}");
    for p in &running.procs {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&p.pid().to_string()))
            .unwrap_or_else(|| panic!("no row for pid {}:\n{text}", p.pid()));
        assert!(
            line.contains("default/vm-web-01") || line.contains("tenant-2/db-01"),
            "{line}"
        );
    }
    assert!(text.contains(PV), "{text}");
    assert!(
        text.contains(&format!(
            "This machine: machine-id {}, boot {}",
            MACHINE_ID.to_lowercase(),
            boot_id()
        )),
        "{text}"
    );
}

/// A host root without the identity files says so, naming the path.
#[test]
fn status_table_says_when_the_identity_cannot_be_read() {
    let root = host_root();
    std::fs::remove_file(root.path().join("etc/machine-id")).expect("rm");
    let out = status(root.path(), "wide");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("This machine: identity could not be read (")
            && text.contains(&root.path().join("etc/machine-id").display().to_string()),
        "{text}"
    );
}
