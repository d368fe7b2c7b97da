//! The image as an air-gapped Harvester node gets it (issue 25 item 8): RKE2 imports every
//! archive in `/var/lib/rancher/rke2/agent/images/` into containerd's `k8s.io` namespace at
//! start, and the kubelet runs it from there (docs/install.md). Here a real containerd (Debian's
//! package) runs on a private socket and state directory with the native snapshotter, imports
//! the archive `image/build.sh` exports, and runs the image: `--version`, and `status` reading a
//! real journal through the image's own journalctl, with the host's verdict.
//!
//! Needs root, containerd, ctr and runc besides what the image build needs (.ci/run installs
//! them); elsewhere it prints why it skipped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::boot_support::{build_journal, host_root, status_json, CURRENT_BOOT, MACHINE_ID};
use crate::chart_support::{skip, text, tool};
use crate::image_build::{built_archive, prerequisites, IN_IMAGE_STATUS};

/// A containerd of this test's own: its socket, root and state under one temporary directory.
struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
    ctr: PathBuf,
}

impl Containerd {
    fn start(containerd: &Path, ctr: PathBuf) -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("vmr-containerd")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        // containerd's own config format (version 2, containerd 1.6/1.7): only what makes it
        // private; the CRI plugin is off (no kubelet here).
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{sock}\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = d.join("containerd.sock").display(),
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let child = Command::new(containerd)
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let me = Containerd { dir, child, ctr };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !me.ctr(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not answer on its socket: {}",
                std::fs::read_to_string(me.dir.path().join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        me
    }

    /// `ctr` against this containerd, in RKE2's namespace.
    fn ctr(&self, args: &[&str]) -> Output {
        Command::new(&self.ctr)
            .arg("--address")
            .arg(self.dir.path().join("containerd.sock"))
            .args(["--namespace", "k8s.io"])
            .args(args)
            .output()
            .expect("run ctr")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The native snapshotter's mounts are bind mounts of the running task's root, gone
        // with the task; nothing else is mounted under the directory.
    }
}

#[test]
fn containerd_imports_the_archive_and_runs_the_image_as_rke2_would() {
    if prerequisites().is_none() {
        return;
    }
    if !nix::unistd::Uid::effective().is_root() {
        skip::<()>("containerd needs root");
        return;
    }
    let Some(containerd) = tool("containerd", &["/usr/bin/containerd"])
        .or_else(|| skip("no containerd (apt-get install containerd)"))
    else {
        return;
    };
    let Some(ctr) = tool("ctr", &["/usr/bin/ctr"]).or_else(|| skip("no ctr (package containerd)"))
    else {
        return;
    };
    let version = env!("CARGO_PKG_VERSION");
    let image = format!("localhost/vmrecover:{version}");
    let archive = built_archive();

    let c = Containerd::start(&containerd, ctr);
    let archive_arg = archive.display().to_string();
    let import = c.ctr(&[
        "images",
        "import",
        "--snapshotter",
        "native",
        "--no-unpack",
        &archive_arg,
    ]);
    assert!(import.status.success(), "ctr import: {}", text(&import));
    let listed = c.ctr(&["images", "list", "--quiet"]);
    assert!(
        text(&listed).lines().any(|l| l.trim() == image),
        "the archive registers {image} (what the chart's image value names): {}",
        text(&listed)
    );

    let run = |id: &str, mounts: &[String], args: &[&str]| -> Output {
        let mut a: Vec<String> = vec![
            "run".into(),
            "--rm".into(),
            "--snapshotter".into(),
            "native".into(),
            "--net-host".into(),
        ];
        for m in mounts {
            a.push("--mount".into());
            a.push(m.clone());
        }
        a.push(image.clone());
        a.push(id.into());
        a.push("/usr/local/bin/vmrecover".into());
        a.extend(args.iter().map(|s| s.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        c.ctr(&a)
    };

    let out = run("vmr-version", &[], &["--version"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(version),
        "the image runs from containerd: {}",
        text(&out)
    );

    // A power cut's journal, read through the image's journalctl: the host's verdict.
    let tmp = tempfile::tempdir_in("/tmp").unwrap();
    let root = host_root(&tmp.path().join("host"), CURRENT_BOOT, MACHINE_ID);
    let journal = root.join("var/log/journal");
    std::fs::create_dir_all(&journal).unwrap();
    build_journal(&journal, "power_cut_running.export");
    let on_host = status_json(&tmp.path().join("host-state"), &journal, &root, &[]);
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let out = run(
        "vmr-status",
        &[
            format!(
                "type=bind,src={},dst=/host,options=rbind:ro",
                root.display()
            ),
            format!(
                "type=bind,src={},dst=/state,options=rbind:rw",
                state.display()
            ),
        ],
        IN_IMAGE_STATUS,
    );
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status in containerd printed no JSON ({e}): {}", text(&out)));
    assert_eq!(
        doc["boot"]["verdict"]["verdict"], on_host["verdict"]["verdict"],
        "containerd's run and the host agree: {}",
        doc["boot"]
    );
    assert_eq!(
        doc["boot"]["verdict"]["verdict"], "unclean",
        "{}",
        doc["boot"]
    );
}
