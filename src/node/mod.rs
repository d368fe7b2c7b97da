//! Node evidence (design §5): virt-launcher/qemu processes and Longhorn disks held here.
//!
//! INTERFACE CONTRACT (used by status and the planner; keep these names):
//! `NodeOptions`, `NodeFacts`, `VmProcess`, `ProcessKind`, `gather`,
//! `NodeFacts::processes_for`, `NodeFacts::volume_holders`, `render_table`.
//!
//! Where things are read:
//! - processes: `/proc` of vmrecover's own pid namespace, through `sysinfo`. In a
//!   DaemonSet that is the host's only with `hostPID: true`; with a host root other
//!   than `/`, the namespace is compared with `<host_root>/proc/1`'s and a mismatch makes
//!   the process evidence unreadable.
//! - disks: `<host_root>/dev/longhorn`, `<host_root>/proc/<pid>/fd`,
//!   `<host_root>/proc/1/mountinfo` and `<host_root>/sys`. With `hostPID: true` and the
//!   host's `/` mounted (recursively) at the host root, `<host_root>/proc` is the host's
//!   procfs.

pub mod bounded;
pub mod cmdline;
pub mod csi_paths;
pub mod mountinfo;
pub mod orphans;
pub mod processes;
mod render;
pub mod stat;
pub mod volumes;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::evidence::Gathered;

pub use render::render_table;
pub use volumes::DiskFacts;

/// Where node evidence is read from.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The host's root filesystem (`/`, or where a DaemonSet mounted it).
    pub host_root: PathBuf,
}

/// What a VM process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProcessKind {
    /// `virt-launcher-monitor`.
    LauncherMonitor,
    /// `virt-launcher`.
    Launcher,
    /// `qemu-kvm` / `qemu-system-*`.
    Qemu,
}

impl ProcessKind {
    /// The executable name, for people.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessKind::LauncherMonitor => "virt-launcher-monitor",
            ProcessKind::Launcher => "virt-launcher",
            ProcessKind::Qemu => "qemu",
        }
    }
}

/// A live process that belongs to a VM, with the VMI identity read from its command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmProcess {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks since boot (with pid, the process identity).
    pub start_time: u64,
    /// Which kind of VM process.
    pub kind: ProcessKind,
    /// The VMI's namespace, when the command line names it.
    pub namespace: Option<String>,
    /// The VMI's name, when the command line names it.
    pub name: Option<String>,
    /// The VMI's UID, when the command line names it.
    pub uid: Option<String>,
    /// qemu's libvirt domain name (`<namespace>_<name>`).
    pub domain: Option<String>,
    /// Parent pid.
    pub parent_pid: Option<u32>,
    /// Kernel `comm` (15 bytes at most).
    pub comm: String,
    /// Executable path, when readable.
    pub exe: Option<String>,
    /// The command line, arguments joined by spaces, invalid UTF-8 replaced by U+FFFD.
    pub cmdline: String,
    /// Whether the command line had invalid UTF-8 (so `cmdline` is lossy).
    pub cmdline_lossy: bool,
    /// Whether the command line could be read at all.
    pub cmdline_readable: bool,
    /// Start time, seconds since the Unix epoch.
    pub started_at_unix: u64,
    /// Seconds it had been running when scanned.
    pub run_time_secs: u64,
}

impl VmProcess {
    /// Whether the command line names a VMI (a UID, or a namespace and name).
    pub fn has_identity(&self) -> bool {
        self.uid.is_some() || (self.namespace.is_some() && self.name.is_some())
    }

    /// `namespace/name`, with `?` for unknown parts.
    pub fn vmi_label(&self) -> String {
        format!(
            "{}/{}",
            self.namespace.as_deref().unwrap_or("?"),
            self.name.as_deref().unwrap_or("?")
        )
    }
}

/// Everything gathered about VM processes and disks on this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeFacts {
    /// The host root the disk evidence was read under.
    pub host_root: String,
    /// VM processes found.
    pub processes: Gathered<Vec<VmProcess>>,
    /// Longhorn devices, their holders and mounts.
    pub disks: DiskFacts,
}

impl NodeFacts {
    /// The processes that may belong to the VMI `namespace/name` with `uid`, or why that
    /// cannot be known.
    ///
    /// A process matches when it names the UID, or the same namespace and name (an older
    /// incarnation of a VMI with the same name still uses its disks). A VM process that
    /// names no VMI at all could belong to any VMI, so it is returned too (fail closed).
    pub fn processes_for(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<Vec<&VmProcess>, String> {
        let procs = self.processes.as_result()?;
        Ok(procs
            .iter()
            .filter(|p| {
                !p.has_identity()
                    || p.uid.as_deref() == Some(uid)
                    || (p.namespace.as_deref() == Some(namespace)
                        && p.name.as_deref() == Some(name))
            })
            .collect())
    }

    /// How the Longhorn volume `volume` (the PV name) is held on this node: open by a
    /// process, held by a loop/device-mapper device, or mounted (device mounts, kubelet
    /// CSI staging and publish paths, filesystem and block mode).
    ///
    /// `Ok(empty)` means every source was read and none holds it. When some source could
    /// not be read, any positive evidence from the others is still returned (the volume
    /// is certainly held); otherwise the answer is `Err` with why it cannot be known.
    pub fn volume_holders(&self, volume: &str) -> Result<Vec<String>, String> {
        let d = &self.disks;
        let mut held = Vec::new();
        let mut unknown = Vec::new();
        if let Err(e) = d.devices.as_result() {
            unknown.push(format!("Longhorn devices: {e}"));
        }
        match d.kernel_holders.as_result() {
            Ok(k) => held.extend(
                k.iter()
                    .filter(|h| h.volume == volume)
                    .map(|h| format!("held by {} ({})", h.device, h.detail)),
            ),
            Err(e) => unknown.push(format!("loop/device-mapper holders: {e}")),
        }
        match d.open_files.as_result() {
            Ok(o) => {
                held.extend(o.holders.iter().filter(|h| h.volume == volume).map(|h| {
                    format!(
                        "open by pid {} ({}) fd {} -> {}",
                        h.pid, h.comm, h.fd, h.target
                    )
                }));
                if !o.unreadable.is_empty() {
                    let some: Vec<String> = o
                        .unreadable
                        .iter()
                        .take(3)
                        .map(|u| format!("pid {} ({}): {}", u.pid, u.comm, u.reason))
                        .collect();
                    unknown.push(format!(
                        "open files of {} process(es) could not be read: {}",
                        o.unreadable.len(),
                        some.join("; ")
                    ));
                }
            }
            Err(e) => unknown.push(format!("open files: {e}")),
        }
        match d.mounts.as_result() {
            Ok(m) => {
                let hash = csi_paths::staging_hash(volume);
                held.extend(
                    m.entries
                        .iter()
                        .filter(|e| {
                            e.volumes.iter().any(|v| v == volume)
                                || e.staging_hash.as_deref() == Some(hash.as_str())
                        })
                        .map(|e| {
                            format!(
                                "mounted at {} ({} from {})",
                                e.mount_point, e.fstype, e.source
                            )
                        }),
                );
            }
            Err(e) => unknown.push(format!("mounts: {e}")),
        }
        if held.is_empty() && !unknown.is_empty() {
            return Err(format!(
                "cannot tell whether volume {volume} is held on this node: {}",
                unknown.join("; ")
            ));
        }
        Ok(held)
    }
}

/// Gathers node facts; never fails: unreadable sources become `Unreadable` evidence.
pub fn gather(opts: &NodeOptions) -> NodeFacts {
    NodeFacts {
        host_root: opts.host_root.display().to_string(),
        processes: processes::scan(&opts.host_root),
        disks: volumes::gather(&opts.host_root),
    }
}
