//! A large real journal for the boot-check benchmark: `boots` boots of `per_boot` entries
//! each, written as journal export text and turned into a journal file by
//! `systemd-journal-remote` (docs/architecture.md §3). Every boot but the last two ends with a clean
//! shutdown's markers; the previous boot ends with a power cut (no markers); the last boot
//! is "this" boot.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The machine id of every entry.
pub const MACHINE_ID: &str = "5f1e2b7c9a4d4e3f8b6a1c2d3e4f5a6b";

/// The boot id (32 hex) of boot number `b`.
pub fn boot_id(b: usize) -> String {
    format!("{:08x}5e5e4e4e8d8d{:012x}", 0x1b2c_0000 + b, b * 7 + 1)
}

/// The export text of `boots` boots of `per_boot` entries each.
pub fn export(boots: usize, per_boot: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(boots * per_boot * 260);
    // 2025-03-01T00:00:00Z, one boot per day.
    let start_us: u64 = 1_740_787_200_000_000;
    for b in 0..boots {
        let id = boot_id(b);
        let boot_start = start_us + b as u64 * 86_400_000_000;
        let clean = b + 2 < boots;
        let markers = if clean { SHUTDOWN.len() } else { 0 };
        let body = per_boot.saturating_sub(markers);
        for e in 0..per_boot {
            let mono = e as u64 * 400_000 + 1;
            let _ = write!(
                out,
                "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={mono}\n_BOOT_ID={id}\n_MACHINE_ID={MACHINE_ID}\n_HOSTNAME=harvester-node-1\n",
                boot_start + mono
            );
            if e < body {
                let (ident, comm, transport, msg) = match e % 4 {
                    0 => ("kernel", "", "kernel", format!("IPv4: martian source 10.52.1.{} from 10.0.0.{}, on dev flannel.1", e % 250, e % 200)),
                    1 => ("rke2", "rke2", "stdout", format!("time=\"2025-03-01T00:00:00Z\" level=info msg=\"Reconciling ETCDSnapshotFile resources {e}\"")),
                    2 => ("kubelet", "kubelet", "stdout", format!("I0301 00:00:00.000000 {e} kubelet_pods.go:1000] \"Clean up orphaned pod cgroups\" podUID=\"{e:08x}-aaaa-4bbb-8ccc-dddddddddddd\"")),
                    _ => ("containerd", "containerd", "stdout", format!("time=\"2025-03-01T00:00:00Z\" level=info msg=\"ImageCreate event name:\\\"sha256:{e:064x}\\\"\"")),
                };
                let _ = write!(
                    out,
                    "PRIORITY=6\nSYSLOG_IDENTIFIER={ident}\n_TRANSPORT={transport}\n"
                );
                if !comm.is_empty() {
                    let _ = write!(out, "_COMM={comm}\n_PID={}\n", 1000 + e % 3000);
                }
                let _ = writeln!(out, "MESSAGE={msg}");
            } else if let Some((ident, message_id, unit, msg)) = SHUTDOWN.get(e - body) {
                let _ = write!(
                    out,
                    "PRIORITY=6\nSYSLOG_IDENTIFIER={ident}\n_TRANSPORT=journal\nMESSAGE_ID={message_id}\n"
                );
                if !unit.is_empty() {
                    let _ = writeln!(out, "UNIT={unit}");
                }
                let _ = writeln!(out, "MESSAGE={msg}");
            }
            out.push(b'\n');
        }
    }
    out
}

/// The early and late markers of a clean reboot, in order.
const SHUTDOWN: &[(&str, &str, &str, &str)] = &[
    (
        "systemd-logind",
        "98268866d1d54a499c4e98921d93bc40",
        "",
        "System is rebooting.",
    ),
    (
        "systemd",
        "de5b426a63be47a7b6ac3eaac82e2f6f",
        "rke2-server.service",
        "Stopping Rancher Kubernetes Engine v2 (server)...",
    ),
    (
        "systemd",
        "de5b426a63be47a7b6ac3eaac82e2f6f",
        "sshd.service",
        "Stopping OpenSSH Daemon...",
    ),
    (
        "systemd",
        "9d1aaa27d60140bd96365438aad20286",
        "multi-user.target",
        "Stopped target Multi-User System.",
    ),
    (
        "systemd",
        "39f53479d3a045ac8e11786248231fbf",
        "reboot.target",
        "Reached target System Reboot.",
    ),
    (
        "systemd-journald",
        "d93fb3c9c24d451a97cea615ce59c00b",
        "",
        "Journal stopped",
    ),
];

fn journal_remote() -> Option<PathBuf> {
    [
        "/lib/systemd/systemd-journal-remote",
        "/usr/lib/systemd/systemd-journal-remote",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// Writes `export` into journal files under `dir` with systemd-journal-remote; returns the
/// number of entries it says it wrote.
pub fn build(dir: &Path, export: &[u8]) -> Result<usize, String> {
    let remote = journal_remote()
        .ok_or("systemd-journal-remote is not installed (Debian package systemd-journal-remote)")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let mut child = Command::new(&remote)
        .arg(format!("--output={}", dir.join("system.journal").display()))
        .arg("-")
        .env("SYSTEMD_JOURNAL_COMPACT", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", remote.display()))?;
    let written = child
        .stdin
        .take()
        .ok_or("no stdin")
        .map_err(str::to_string)
        .and_then(|mut s| s.write_all(export).map_err(|e| e.to_string()));
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    written?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .find_map(|l| {
            l.split("Finishing after writing ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse().ok())
        })
        .ok_or_else(|| format!("journal-remote did not report its entries: {stderr}"))
}

/// The size in bytes of the files under `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
