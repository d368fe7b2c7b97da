//! The container image, built offline (issue 17 item 5): `image/build.sh` builds the static
//! musl binary and an image FROM scratch with podman (nothing pulled), saved as a docker
//! archive; the archive loads into an empty image store (as RKE2 imports it from
//! /var/lib/rancher/rke2/agent/images/), and in it:
//!
//! - `vmrecover status` reads the project's real journal fixtures through the image's own
//!   journalctl and reaches the same boot verdict, decided by the same source, as the
//!   host-built binary with the host's journalctl (the image ships journalctl: see
//!   docs/install.md for why);
//! - the init container's command copies the binary out with every capability dropped and a
//!   read-only root, and the copy runs.
//!
//! Needs podman + runc, the x86_64-unknown-linux-musl target and musl-gcc (.ci/run installs
//! them); elsewhere it prints why it skipped. The release build takes several minutes the
//! first time (its own target directory, target/image-build).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::boot_support::{build_journal, host_root, status_json, CURRENT_BOOT, MACHINE_ID};
use crate::chart_support::{repo, skip, text, tool};
use serde_json::Value;

/// Whether the image tier runs: always in CI, elsewhere when `VMRECOVER_IMAGE_TESTS=1`, so a
/// developer's `cargo test --workspace` after a change in `src/` is not two release builds.
fn image_tier() -> bool {
    crate::chart_support::in_ci() || std::env::var("VMRECOVER_IMAGE_TESTS").is_ok_and(|v| v == "1")
}

/// podman with a private image store under `dir` (the image comes only from the archive).
struct Podman {
    bin: PathBuf,
    root: PathBuf,
    runroot: PathBuf,
}

impl Podman {
    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .args(["--runtime", "runc"]);
        c
    }

    /// `podman run` as these machines allow it (no raising of rlimits), without network.
    fn run(&self, image: &str, opts: &[&str], args: &[&str]) -> Output {
        self.cmd()
            .args(["run", "--rm", "--network", "none"])
            .args([
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
            ])
            .args(opts)
            .arg(image)
            .args(args)
            .output()
            .expect("podman run")
    }
}

pub fn prerequisites() -> Option<PathBuf> {
    if !image_tier() {
        println!(
            "SKIPPED: the image tier rebuilds the release binaries for musl and arm64 (minutes \
             after any change in src/); it runs in CI (CI=true) or with VMRECOVER_IMAGE_TESTS=1"
        );
        return None;
    }
    let podman = tool("podman", &["/usr/bin/podman"])
        .or_else(|| skip("no podman (apt-get install podman runc)"))?;
    tool("runc", &["/usr/bin/runc", "/usr/sbin/runc"]).or_else(|| skip("no runc"))?;
    tool("musl-gcc", &["/usr/bin/musl-gcc"])
        .or_else(|| skip("no musl-gcc (apt-get install musl-tools)"))?;
    tool("journalctl", &["/usr/bin/journalctl", "/bin/journalctl"])
        .or_else(|| skip("no journalctl to put into the image (apt-get install systemd)"))?;
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if !Path::new(&sysroot)
        .join("lib/rustlib/x86_64-unknown-linux-musl")
        .exists()
    {
        return skip(
            "no x86_64-unknown-linux-musl target (rustup target add x86_64-unknown-linux-musl)",
        );
    }
    Some(podman)
}

/// The amd64 archive `image/build.sh` exports, built once per test run (the tests of this
/// binary that need it share it); panics with the script's output when the build fails.
pub fn built_archive() -> PathBuf {
    static BUILT: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(archive) = built.as_ref() {
        return archive.clone();
    }
    // Build and export (the default image store), as docs/install.md says.
    let build = Command::new("bash")
        .arg(repo().join("image/build.sh"))
        .env("VMRECOVER_IMAGE_SOURCE", SOURCE)
        // An output directory of the tests' own: image/multiarch.sh (CI's image stage, the
        // arm64 test) rewrites target/image's archive without the test's source label.
        .env("VMRECOVER_IMAGE_OUT", repo().join("target/image-test"))
        .output()
        .expect("run image/build.sh");
    assert!(
        build.status.success(),
        "image/build.sh failed:\n{}",
        text(&build)
    );
    let stdout = String::from_utf8_lossy(&build.stdout);
    let archive = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    let archive = if archive.is_absolute() {
        archive
    } else {
        repo().join(archive)
    };
    assert!(archive.exists(), "no archive: {}", text(&build));
    println!(
        "image archive {} ({} MiB)",
        archive.display(),
        std::fs::metadata(&archive).unwrap().len() >> 20
    );
    *built = Some(archive.clone());
    archive
}

/// Where the tests say the code is published (the repository is not public yet; a release
/// sets VMRECOVER_IMAGE_SOURCE or Chart.yaml's `sources`).
const SOURCE: &str = "https://git.example.invalid/vmrecover";

/// The commit the image must name: `git rev-parse HEAD`, with `-dirty` for a changed tree.
fn revision() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(repo())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let head = git(&["rev-parse", "HEAD"]);
    if git(&["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        head
    } else {
        format!("{head}-dirty")
    }
}

/// `status` in the image, with the host mounted at /host and a state directory at /state
/// (the DaemonSet's layout): what the podman and the containerd tests both run.
pub const IN_IMAGE_STATUS: &[&str] = &[
    "status",
    "--output",
    "json",
    "--state-dir",
    "/state",
    "--journal-dir",
    "/host/var/log/journal",
    "--host-root",
    "/host",
    "--log-target",
    "stderr",
];

/// The parts of a `status` boot document the verdict rests on.
fn verdict_of(boot: &Value) -> Value {
    serde_json::json!({
        "verdict": boot["verdict"]["verdict"],
        "decided_by": boot["verdict"]["decided_by"],
        "journal": boot["journal"]["finding"]["state"],
        "previous_boot": boot["journal"]["finding"]["boot_id"],
        "markers": boot["journal"]["finding"]["analysis"]["progress"],
    })
}

#[test]
fn the_offline_image_runs_status_with_the_same_verdicts_as_the_host() {
    let Some(podman_bin) = prerequisites() else {
        return;
    };
    let version = env!("CARGO_PKG_VERSION");
    let image = format!("localhost/vmrecover:{version}");
    let archive = built_archive();

    // An empty store that gets the image only from the archive.
    let store = tempfile::tempdir().unwrap();
    let podman = Podman {
        bin: podman_bin,
        root: store.path().join("root"),
        runroot: store.path().join("run"),
    };
    let load = podman
        .cmd()
        .args(["load", "-i"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(load.status.success(), "podman load: {}", text(&load));
    assert!(text(&load).contains(&image), "{}", text(&load));
    let inspect = podman
        .cmd()
        .args(["image", "inspect", &image])
        .output()
        .unwrap();
    let meta: Value = serde_json::from_slice(&inspect.stdout).expect("inspect JSON");
    assert_eq!(
        meta[0]["Config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/vmrecover"])
    );
    assert_eq!(meta[0]["Config"]["Cmd"], serde_json::json!(["agent"]));
    // The OCI labels a registry, `crictl inspecti` and a security scanner read.
    let labels = &meta[0]["Config"]["Labels"];
    let label = |k: &str| labels[format!("org.opencontainers.image.{k}")].as_str();
    assert_eq!(label("version"), Some(version), "{labels:#}");
    assert_eq!(label("revision"), Some(revision().as_str()), "{labels:#}");
    assert_eq!(label("source"), Some(SOURCE), "{labels:#}");
    assert!(
        label("created").is_some_and(|c| c.len() == 20 && c.ends_with('Z')),
        "{labels:#}"
    );
    assert_eq!(meta[0]["Architecture"], "amd64");
    assert_eq!(
        meta[0]["RootFS"]["Layers"].as_array().map(Vec::len),
        Some(1),
        "FROM scratch: one layer of our own"
    );

    let out = podman.run(&image, &[], &["--version"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(version),
        "{}",
        text(&out)
    );

    // `status` over each journal fixture: the image's journalctl, the host's verdict.
    for fixture in [
        "clean_poweroff.export",
        "harvester_clean_reboot.export",
        "power_cut_running.export",
        "power_cut_slow_shutdown.export",
        "rtc_reset.export",
        "one_boot.export",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let root = host_root(&tmp.path().join("host"), CURRENT_BOOT, MACHINE_ID);
        let journal = root.join("var/log/journal");
        std::fs::create_dir_all(&journal).unwrap();
        build_journal(&journal, fixture);
        let host_state = tmp.path().join("host-state");
        let on_host = status_json(&host_state, &journal, &root, &[]);

        let state = tmp.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let out = podman.run(
            &image,
            &[
                "-v",
                &format!("{}:/host:ro", root.display()),
                "-v",
                &format!("{}:/state", state.display()),
            ],
            IN_IMAGE_STATUS,
        );
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{fixture}: status in the image printed no JSON ({e}): {}",
                text(&out)
            )
        });
        let in_image = &doc["boot"];
        assert_ne!(
            in_image["journal"]["finding"]["state"], "unreadable",
            "{fixture}: the image could not read the journal: {in_image:#}"
        );
        assert_eq!(
            verdict_of(in_image),
            verdict_of(&on_host),
            "{fixture}: the image and the host disagree"
        );
        println!(
            "{fixture}: {} in the image and on the host",
            verdict_of(in_image)
        );
    }

    // The init container's command, with the DaemonSet's restrictions.
    let out_dir = tempfile::tempdir().unwrap();
    let out = podman.run(
        &image,
        &[
            "--read-only",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--entrypoint",
            "/usr/bin/install",
            "-v",
            &format!("{}:/usr/local/vmrecover", out_dir.path().display()),
        ],
        &[
            "-D",
            "-m",
            "0755",
            "/usr/local/bin/vmrecover",
            "/usr/local/vmrecover/bin/vmrecover",
        ],
    );
    assert!(out.status.success(), "install: {}", text(&out));
    let copied = out_dir.path().join("bin/vmrecover");
    assert_eq!(
        std::fs::metadata(&copied).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let v = Command::new(&copied).arg("--version").output().unwrap();
    assert!(
        String::from_utf8_lossy(&v.stdout).contains(version),
        "the copied (static) binary runs on the host: {}",
        text(&v)
    );
}
