//! The arm64 image (issue 25 item 8; Harvester supports arm64 nodes): `image/build.sh --arch
//! arm64` cross-builds the static binary with cargo-zigbuild and stages Debian's arm64
//! journalctl, and `image/multiarch.sh` joins both images in one OCI index. This machine is
//! amd64, so the arm64 programs run under qemu-user-static: the binary and the image's own
//! journalctl (reading a real journal file), each from the image's exported root filesystem.
//!
//! Needs, besides the amd64 image's tools: rustup target aarch64-unknown-linux-musl,
//! cargo-zigbuild, zig (`.venv` ziglang), Debian's arm64 packages (dpkg's arm64 architecture),
//! qemu-user-static and skopeo (.ci/run installs them; elsewhere the test says it skipped).
//! The first build takes minutes (.ci/run builds both images in a stage of their own).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::boot_support::build_journal;
use crate::chart_support::{repo, skip, text, tool};
use crate::image_build::prerequisites;

/// The tools the arm64 build and check need, or why they are missing.
fn arm64_prerequisites() -> Option<PathBuf> {
    prerequisites()?;
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if !Path::new(&sysroot)
        .join("lib/rustlib/aarch64-unknown-linux-musl")
        .exists()
    {
        return skip(
            "no aarch64-unknown-linux-musl target (rustup target add aarch64-unknown-linux-musl)",
        );
    }
    tool("cargo-zigbuild", &[])
        .or_else(|| skip("no cargo-zigbuild (cargo install --locked cargo-zigbuild)"))?;
    tool("skopeo", &["/usr/bin/skopeo"]).or_else(|| skip("no skopeo (apt-get install skopeo)"))?;
    let zig = repo().join(".venv/bin/python3");
    let zig_ok = tool("zig", &[]).is_some()
        || Command::new(&zig)
            .args(["-m", "ziglang", "version"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !zig_ok {
        return skip("no zig (.venv/bin/pip install ziglang)");
    }
    tool("qemu-aarch64-static", &["/usr/bin/qemu-aarch64-static"])
        .or_else(|| skip("no qemu-aarch64-static (apt-get install qemu-user-static)"))
}

#[test]
fn the_arm64_image_runs_under_qemu_and_joins_the_amd64_one_in_an_oci_index() {
    let Some(qemu) = arm64_prerequisites() else {
        return;
    };
    let version = env!("CARGO_PKG_VERSION");
    let build = Command::new("bash")
        .arg(repo().join("image/multiarch.sh"))
        .current_dir(repo())
        .output()
        .expect("run image/multiarch.sh");
    assert!(
        build.status.success(),
        "image/multiarch.sh: {}",
        text(&build)
    );
    let index = PathBuf::from(
        String::from_utf8_lossy(&build.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim(),
    );
    let index = repo().join(index);

    // One index, two platforms, each an image of ours.
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}", index.display()))
        .output()
        .unwrap();
    assert!(raw.status.success(), "skopeo inspect: {}", text(&raw));
    let doc: Value = serde_json::from_slice(&raw.stdout).expect("the index is JSON");
    let mut platforms: Vec<String> = doc["manifests"]
        .as_array()
        .expect("an OCI index")
        .iter()
        .map(|m| {
            format!("{}/{}", m["platform"]["os"], m["platform"]["architecture"]).replace('"', "")
        })
        .collect();
    platforms.sort();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{doc:#}");

    // The arm64 image's root filesystem, exported from its own archive.
    let arm64 = repo().join(format!("target/image/vmrecover-{version}-arm64.tar"));
    let tmp = tempfile::tempdir_in("/tmp").unwrap();
    let rootfs = tmp.path().join("rootfs");
    let config = unpack_docker_archive(&arm64, &rootfs);
    assert_eq!(config["architecture"], "arm64", "{config:#}");
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.version"], version,
        "{config:#}"
    );

    // The binary: a static AArch64 ELF (e_machine 183), running under qemu.
    let bin = rootfs.join("usr/local/bin/vmrecover");
    let head = std::fs::read(&bin).unwrap();
    assert_eq!(&head[..4], b"\x7fELF");
    assert_eq!(u16::from_le_bytes([head[18], head[19]]), 183, "EM_AARCH64");
    let out = Command::new(&qemu)
        .arg(&bin)
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(version),
        "vmrecover --version under qemu: {}",
        text(&out)
    );

    // The image's journalctl reads a real journal with the image's own libraries.
    let journal = tmp.path().join("journal");
    build_journal(&journal, "power_cut_running.export");
    let out = Command::new(&qemu)
        .arg("-L")
        .arg(&rootfs)
        .arg(rootfs.join("usr/bin/journalctl"))
        .arg("--directory")
        .arg(&journal)
        .args(["--output", "json", "--lines", "1", "--no-pager"])
        .output()
        .unwrap();
    assert!(out.status.success(), "arm64 journalctl: {}", text(&out));
    let entry: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "arm64 journalctl printed no JSON entry ({e}): {}",
            text(&out)
        )
    });
    assert!(entry["_BOOT_ID"].is_string(), "{entry:#}");
}

/// Unpacks a docker archive's layers into `rootfs` (in order) and returns the image config.
fn unpack_docker_archive(archive: &Path, rootfs: &Path) -> Value {
    let dir = rootfs.with_extension("archive");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(rootfs).unwrap();
    let untar = |tar: &Path, into: &Path| {
        let o = Command::new("tar")
            .arg("-xf")
            .arg(tar)
            .arg("-C")
            .arg(into)
            .output()
            .unwrap();
        assert!(o.status.success(), "tar {}: {}", tar.display(), text(&o));
    };
    untar(archive, &dir);
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let m = &manifest[0];
    for layer in m["Layers"].as_array().unwrap() {
        untar(&dir.join(layer.as_str().unwrap()), rootfs);
    }
    serde_json::from_slice(&std::fs::read(dir.join(m["Config"].as_str().unwrap())).unwrap())
        .unwrap()
}
