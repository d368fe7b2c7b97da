//! Node evidence (design §5): virt-launcher/qemu processes and Longhorn disks held here.
//!
//! INTERFACE CONTRACT (used by status and the planner; keep these names):
//! `NodeOptions`, `NodeFacts`, `VmProcess`, `ProcessKind`, `gather`,
//! `NodeFacts::processes_for`, `NodeFacts::volume_holders`, `render_table`.
//! Added for the planner: `VolumeKey`, `NodeFacts::volume_holders_for`, `gather_with`,
//! `ScanLimits`, `NodeFacts::identity` (`HostIdentity::check_node`).
//!
//! Where things are read:
//! - processes: `/proc` of vmrecover's own pid namespace, through `sysinfo`. In a
//!   DaemonSet that is the host's only with `hostPID: true`; with a host root other
//!   than `/`, `<host_root>/proc/self` must name vmrecover's own pid, else (or without a
//!   procfs there) the process evidence is unreadable.
//! - identity: `<host_root>/etc/machine-id`, `<host_root>/proc/sys/kernel/random/boot_id`.
//! - disks: `<host_root>/dev/longhorn`, `<host_root>/proc/<pid>/fd`,
//!   `<host_root>/proc/1/mountinfo` and `<host_root>/sys`. With `hostPID: true` and the
//!   host's `/` mounted (recursively) at the host root, `<host_root>/proc` is the host's
//!   procfs.
//!
//! Every host read is bounded in time (`ScanLimits`, `bounded`): a read that does not
//! finish is unreadable evidence naming what it was reading, never a shorter answer.

pub mod bounded;
pub mod cmdline;
pub mod csi_paths;
mod disk_facts;
pub mod identity;
pub mod mountinfo;
pub mod orphans;
pub mod processes;
mod render;
pub mod stack;
pub mod stat;
pub mod volumes;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::evidence::Gathered;

pub use bounded::ScanLimits;
pub use identity::HostIdentity;
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
    /// This machine's identity (machine id, boot id), to prove `--node` is this machine.
    #[serde(default = "identity_not_recorded")]
    pub identity: Gathered<HostIdentity>,
}

fn identity_not_recorded() -> Gathered<HostIdentity> {
    Gathered::unreadable(
        "host identity",
        "not recorded in these facts (written by an older vmrecover)",
    )
}

/// The two names of a volume: the PV name (what the kubelet names its paths after) and
/// the CSI `volumeHandle` of the PV (the Longhorn volume name: `/dev/longhorn/<handle>`).
/// They are equal for dynamically provisioned PVs only; static PVs (custom names,
/// restored or migrated disks) differ.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VolumeKey {
    /// `PersistentVolume.metadata.name`.
    pub pv_name: String,
    /// `PersistentVolume.spec.csi.volumeHandle` (the Longhorn volume name).
    pub handle: String,
}

impl VolumeKey {
    /// A PV whose CSI volume handle is `handle`.
    pub fn new(pv_name: impl Into<String>, handle: impl Into<String>) -> Self {
        VolumeKey {
            pv_name: pv_name.into(),
            handle: handle.into(),
        }
    }

    /// A dynamically provisioned PV: the handle is the PV name.
    pub fn same(name: impl Into<String>) -> Self {
        let name = name.into();
        VolumeKey {
            pv_name: name.clone(),
            handle: name,
        }
    }

    /// Whether `volume`, a name of kind `named_by`, is this volume.
    pub fn is(&self, volume: &str, named_by: volumes::NamedBy) -> bool {
        match named_by {
            volumes::NamedBy::Handle => volume == self.handle,
            volumes::NamedBy::PvName => volume == self.pv_name,
        }
    }

    /// Whether an open file tied to a volume as `matched_by` says is this volume.
    pub fn held_by_fd(&self, h: &volumes::FdHolder) -> bool {
        use volumes::MatchedBy;
        match h.matched_by {
            MatchedBy::Path | MatchedBy::DeviceNumber => h.volume == self.handle,
            MatchedBy::KubeletPath => h.volume == self.pv_name,
            MatchedBy::StagingPath => h.volume == csi_paths::staging_hash(&self.handle),
        }
    }

    /// Whether a mount is of this volume (its device or one on it, a kubelet path of it,
    /// or its filesystem staging path).
    pub fn mounted_at(&self, m: &volumes::VolumeMount) -> bool {
        m.volumes.contains(&self.handle)
            || m.pv_names.contains(&self.pv_name)
            || m.staging_hash.as_deref() == Some(csi_paths::staging_hash(&self.handle).as_str())
    }
}

impl std::fmt::Display for VolumeKey {
    /// `pvc-1` when both names agree, else `pv-web (Longhorn volume restored-7)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.pv_name == self.handle {
            f.write_str(&self.pv_name)
        } else {
            write!(f, "{} (Longhorn volume {})", self.pv_name, self.handle)
        }
    }
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
    ) -> Result<Vec<&VmProcess>, crate::evidence::Unreadable<'_>> {
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

    /// [`volume_holders_for`](Self::volume_holders_for) for a volume whose PV name is its
    /// Longhorn volume name (dynamically provisioned PVs). Kept for callers that know only
    /// the PV name; for static PVs it misses the device and everything on it.
    pub fn volume_holders(&self, volume: &str) -> Result<Vec<String>, HoldersUnknown> {
        self.volume_holders_for(&VolumeKey::same(volume))
    }

    /// How the volume `key` is held on this node: its device `/dev/longhorn/<handle>`, any
    /// partition of it, or any device stacked on either (recursively: device-mapper, LVM,
    /// md, loop) open by a process or mounted; a stacked or loop device on it at all; or
    /// its kubelet CSI paths (by PV name; filesystem staging by sha256 of the handle)
    /// mounted or open.
    ///
    /// Guarantees (fail closed):
    /// - `Ok(empty)` only when every source was read in full and in time (devices, the
    ///   sysfs walk, every process's descriptors, the mount table) and none shows it held.
    /// - When some source could not be read or timed out, any positive evidence from the
    ///   others is still returned (the volume is certainly held); otherwise `Err` says
    ///   which sources are missing and why (a timeout reads "did not finish within …").
    ///
    /// Each `Ok` entry is one sentence for people (`open by pid 4242 (qemu-kvm) fd 18 ->
    /// /dev/sdb1`).
    pub fn volume_holders_for(&self, key: &VolumeKey) -> Result<Vec<String>, HoldersUnknown> {
        let d = &self.disks;
        let mut held = Vec::new();
        let mut unknown = Vec::new();
        if let Err(e) = d.devices.as_result() {
            unknown.push(format!("Longhorn devices: {e}"));
        }
        match d.kernel_holders.as_result() {
            Ok(k) => held.extend(
                k.iter()
                    .filter(|h| h.holds() && key.is(&h.volume, h.named_by))
                    .map(|h| format!("held by {} ({})", h.device, h.detail)),
            ),
            Err(e) => unknown.push(format!("partitions and stacked devices: {e}")),
        }
        match d.open_files.as_result() {
            Ok(o) => {
                held.extend(o.holders.iter().filter(|h| key.held_by_fd(h)).map(|h| {
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
            Ok(m) => held.extend(m.entries.iter().filter(|e| key.mounted_at(e)).map(|e| {
                format!(
                    "mounted at {} ({} from {})",
                    e.mount_point, e.fstype, e.source
                )
            })),
            Err(e) => unknown.push(format!("mounts: {e}")),
        }
        if held.is_empty() && !unknown.is_empty() {
            return Err(HoldersUnknown {
                volume: key.to_string(),
                missing: unknown,
            });
        }
        Ok(held)
    }
}

/// Why whether a volume is held on this node cannot be told: the sources that could not be
/// read, each with why, and nothing read shows it held.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot tell whether volume {volume} is held on this node: {}", missing.join("; "))]
pub struct HoldersUnknown {
    /// The volume (as its key reads).
    pub volume: String,
    /// Each source missing, with why (`mounts: …`, `open files: …`).
    pub missing: Vec<String>,
}

/// Gathers node facts with the default time limits; never fails: unreadable sources
/// become `Unreadable` evidence.
pub fn gather(opts: &NodeOptions) -> NodeFacts {
    gather_with(opts, ScanLimits::default())
}

/// The facts of a node a person declared powered off (`run --fenced-node`): no process and
/// no disk, read from nothing; only this machine's identity is read (a fenced run on NODE
/// itself is refused). The plan says the proof is that declaration.
pub fn declared_off_facts(opts: &NodeOptions) -> NodeFacts {
    let declared = "declared powered off by the person running --fenced-node (not read)";
    NodeFacts {
        host_root: opts.host_root.display().to_string(),
        processes: Gathered::read(Vec::new()),
        disks: volumes::DiskFacts {
            devices: Gathered::read(Vec::new()),
            kernel_holders: Gathered::read(Vec::new()),
            open_files: Gathered::read(volumes::OpenFiles {
                scanned: 0,
                holders: Vec::new(),
                unreadable: Vec::new(),
            }),
            mounts: Gathered::read(volumes::Mounts {
                source: declared.into(),
                entries: Vec::new(),
            }),
        },
        // This machine's own identity is read: the run refuses when it is the fenced node.
        identity: identity::read_with(&opts.host_root, ScanLimits::default().read),
    }
}

impl NodeFacts {
    /// See [`declared_off_facts`].
    pub fn declared_off(opts: &NodeOptions) -> NodeFacts {
        declared_off_facts(opts)
    }
}

/// Gathers node facts, every host read bounded by `limits`; never fails: unreadable
/// sources, and reads that do not finish in time, become `Unreadable` evidence naming
/// what was being read.
pub fn gather_with(opts: &NodeOptions, limits: ScanLimits) -> NodeFacts {
    NodeFacts {
        host_root: opts.host_root.display().to_string(),
        processes: processes::scan_with(&opts.host_root, limits, processes::ScanClock::now()),
        disks: volumes::gather_with(&opts.host_root, limits),
        identity: identity::read_with(&opts.host_root, limits.read),
    }
}
