//! Shared helpers for the boot integration tests: real journal files built at test time
//! from committed export text with `systemd-journal-remote`, fake host roots (boot_id,
//! machine-id), and the `vmrecover` binary run as a process.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The machine id written into every fixture entry.
pub const MACHINE_ID: &str = "5f1e2b7c9a4d4e3f8b6a1c2d3e4f5a6b";
/// The boot before the previous one (rtc_reset fixture only).
pub const OLDER_BOOT: &str = "0a1b2c3d4e5f40718293a4b5c6d7e8f9";
/// The previous boot in the fixtures.
pub const PREVIOUS_BOOT: &str = "1b2c3d4e5f60718293a4b5c6d7e8f90a";
/// "This" boot in the fixtures (the fake host root's boot_id).
pub const CURRENT_BOOT: &str = "2c3d4e5f60718293a4b5c6d7e8f90a1b";

/// The committed export text of a fixture.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/journal")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn journal_remote() -> PathBuf {
    [
        "/lib/systemd/systemd-journal-remote",
        "/usr/lib/systemd/systemd-journal-remote",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("systemd-journal-remote is not installed (Debian package systemd-journal-remote)")
}

/// Entries in export text: blocks separated by blank lines.
pub fn count_entries(export: &[u8]) -> usize {
    String::from_utf8_lossy(export)
        .split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .count()
}

/// Writes `export` into a real journal file `dir/file` (which must end in `.journal`) and
/// checks that journal-remote wrote every entry (it skips bad entries with exit 0).
pub fn build_journal_file(dir: &Path, file: &str, export: &[u8], expected: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut child = Command::new(journal_remote())
        .arg(format!("--output={}", dir.join(file).display()))
        .arg("-")
        .env("SYSTEMD_JOURNAL_COMPACT", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(export).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "journal-remote failed: {stderr}");
    assert!(
        stderr.contains(&format!("Finishing after writing {expected} entries")),
        "journal-remote did not write all {expected} entries: {stderr}"
    );
}

/// Builds `dir/system.journal` from a committed fixture.
pub fn build_journal(dir: &Path, fixture_name: &str) {
    let export = fixture(fixture_name);
    build_journal_file(dir, "system.journal", &export, count_entries(&export));
}

/// A fake host root with a boot_id (written dashed, as the kernel does) and a machine-id.
pub fn host_root(dir: &Path, boot_id: &str, machine_id: &str) -> PathBuf {
    harvester_sim::node::HostRoot::at(dir).identity(machine_id, boot_id);
    dir.to_path_buf()
}

/// Switches the fake host root to another boot.
pub fn reboot(root: &Path, boot_id: &str) {
    let machine = std::fs::read_to_string(root.join("etc/machine-id")).unwrap();
    host_root(root, boot_id, machine.trim());
}

/// Runs the `vmrecover` binary with `args`.
pub fn vmrecover(args: &[&str]) -> Output {
    vmrecover_with_path(args, None)
}

/// Runs `vmrecover` with `PATH` replaced (to hide journalctl).
pub fn vmrecover_with_path(args: &[&str], path: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmrecover"));
    cmd.args(args)
        .args(["--log-target", "stderr"])
        .stdin(Stdio::null());
    cmd.env_remove("VMRECOVER_STATE_DIR")
        .env_remove("VMRECOVER_JOURNAL_DIR")
        .env_remove("VMRECOVER_HOST_ROOT");
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    cmd.output().unwrap()
}

/// `vmrecover status --output json` over the given directories; returns the `boot` part.
pub fn status_json(state: &Path, journal: &Path, root: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "status",
        "--output",
        "json",
        "--state-dir",
        state.to_str().unwrap(),
        "--journal-dir",
        journal.to_str().unwrap(),
        "--host-root",
        root.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = vmrecover(&args);
    parse_status(&out)
}

/// Parses a status run's JSON and returns the `boot` part.
pub fn parse_status(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "status printed no JSON ({e}); stdout: {stdout}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    doc["boot"].clone()
}

/// `vmrecover status -o wide`: the full boot evidence as a table.
pub fn status_table(state: &Path, journal: &Path, root: &Path) -> String {
    let out = vmrecover(&[
        "status",
        "--output",
        "wide",
        "--state-dir",
        state.to_str().unwrap(),
        "--journal-dir",
        journal.to_str().unwrap(),
        "--host-root",
        root.to_str().unwrap(),
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `vmrecover boot-record <action>`; panics with its output when it fails.
pub fn boot_record(action: &str, state: &Path, root: &Path) -> String {
    let out = vmrecover(&[
        "boot-record",
        action,
        "--state-dir",
        state.to_str().unwrap(),
        "--host-root",
        root.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "boot-record {action} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The evidence item of `source` in a status `boot` document.
pub fn evidence<'a>(boot: &'a serde_json::Value, source: &str) -> &'a serde_json::Value {
    boot["verdict"]["evidence"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["source"] == source))
        .unwrap_or_else(|| panic!("no {source} evidence in {boot:#}"))
}
