//! The disk evidence's types: Longhorn devices, the block devices on top of them, open
//! files and mounts (gathered by `volumes`, walked by `stack`).

use serde::{Deserialize, Serialize};

use crate::evidence::Gathered;

/// A device number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DevNum {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

impl DevNum {
    pub(super) fn from_raw(raw: u64) -> Self {
        DevNum {
            major: u32::try_from(nix::sys::stat::major(raw)).unwrap_or(u32::MAX),
            minor: u32::try_from(nix::sys::stat::minor(raw)).unwrap_or(u32::MAX),
        }
    }

    /// Parses `MAJ:MIN` (sysfs `dev` files).
    pub fn parse(s: &str) -> Option<Self> {
        let (a, b) = s.trim().split_once(':')?;
        Some(DevNum {
            major: a.parse().ok()?,
            minor: b.parse().ok()?,
        })
    }
}

impl std::fmt::Display for DevNum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// An entry of `/dev/longhorn`: a Longhorn volume attached to this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LonghornDevice {
    /// The Longhorn volume name (the PV's CSI `volumeHandle`).
    pub volume: String,
    /// Path on the host (`/dev/longhorn/<volume>`).
    pub path: String,
    /// `block-device` on a real node; `file`, `symlink` or `other` otherwise.
    pub file_type: String,
    /// The block device number, when it is a block device.
    pub device: Option<DevNum>,
}

/// Which of a volume's names a piece of evidence carries.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum NamedBy {
    /// The Longhorn volume name, which is the CSI volume handle (devices).
    #[default]
    Handle,
    /// The PV name (kubelet CSI paths).
    PvName,
}

/// How a block device derives from a Longhorn volume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Relation {
    /// A partition (`sdX1`) of the device or of a device stacked on it. A partition alone
    /// does not hold the volume; what holds or mounts the partition does.
    Partition,
    /// A device stacked on it (`holders/`: device-mapper, LVM, md). The kernel keeps the
    /// device below open for it: it holds the volume.
    #[default]
    Stacked,
    /// A loop device backed by it (or by a kubelet path of it). Holds the volume.
    Loop,
}

/// A block device on top of a Longhorn volume: a partition, a stacked device or a loop
/// device, at any depth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelHolder {
    /// The volume it is on, by the name in `named_by`.
    pub volume: String,
    /// Which name `volume` is: the handle (found from `/dev/longhorn`), or the PV name (a
    /// loop device backed by a kubelet path).
    #[serde(default)]
    pub named_by: NamedBy,
    /// Kernel name (`sdb1`, `dm-2`, `md127`, `loop3`).
    pub device: String,
    /// Its device number (open files and mounts are matched by it).
    #[serde(default)]
    pub devnum: Option<DevNum>,
    /// How it derives from the volume.
    #[serde(default)]
    pub relation: Relation,
    /// What it derives from: a kernel name, or a loop device's backing file.
    #[serde(default)]
    pub parent: String,
    /// The device-mapper name, for a device-mapper device.
    #[serde(default)]
    pub dm_name: Option<String>,
    /// What it is, for people.
    pub detail: String,
}

impl KernelHolder {
    /// Whether the kernel keeps the volume open for it (stacked and loop devices do,
    /// partitions do not).
    pub fn holds(&self) -> bool {
        self.relation != Relation::Partition
    }
}

/// How an open file was tied to a volume, which also says which name
/// [`FdHolder::volume`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchedBy {
    /// The fd link names the Longhorn device `/dev/longhorn/<volume>` (or an encrypted
    /// volume's `/dev/mapper/<volume>`): `volume` is the handle.
    Path,
    /// The opened file is the volume's block device or one derived from it, or lives on a
    /// filesystem mounted from one (matched by device number): `volume` is the handle.
    DeviceNumber,
    /// The fd link is under a kubelet CSI path named after the PV, or is a device derived
    /// from a loop device backed by one: `volume` is the PV name.
    KubeletPath,
    /// The fd link is under a filesystem staging path: `volume` is the sha256 of the
    /// handle.
    StagingPath,
}

/// A process holding a volume open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdHolder {
    /// Process id.
    pub pid: u32,
    /// Process `comm`.
    pub comm: String,
    /// File descriptor number.
    pub fd: String,
    /// Where the descriptor points (the link text).
    pub target: String,
    /// The volume held, by the name `matched_by` says.
    pub volume: String,
    /// How the link was tied to the volume.
    pub matched_by: MatchedBy,
}

/// A process whose open files could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreadableProcess {
    /// Process id.
    pub pid: u32,
    /// Process `comm`, when readable.
    pub comm: String,
    /// Why its descriptors could not be read.
    pub reason: String,
    /// Whether the read did not finish in time (a hung filesystem), rather than failed.
    #[serde(default)]
    pub timed_out: bool,
}

/// The result of scanning every process's open files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenFiles {
    /// Processes whose descriptors were read.
    pub scanned: usize,
    /// Descriptors that hold a Longhorn volume.
    pub holders: Vec<FdHolder>,
    /// Processes whose descriptors could not be read (vanished processes are not here).
    pub unreadable: Vec<UnreadableProcess>,
}

/// A mount that involves a Longhorn volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    /// Longhorn volume names (handles) it was tied to: by source, device number (of the
    /// device or one derived from it), or devtmpfs root.
    pub volumes: Vec<String>,
    /// PV names it was tied to: a kubelet CSI mount point, or a device derived from a
    /// loop device on a kubelet path.
    #[serde(default)]
    pub pv_names: Vec<String>,
    /// For a filesystem staging mount (`…/<driver>/<sha>/globalmount`), the sha256 of the
    /// volume handle it was staged for.
    pub staging_hash: Option<String>,
    /// Mount point.
    pub mount_point: String,
    /// Mount source.
    pub source: String,
    /// Filesystem type.
    pub fstype: String,
    /// Root of the mount within its filesystem.
    pub root: String,
    /// Device number of the mounted filesystem.
    pub device: DevNum,
}

/// The Longhorn-related mounts of the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mounts {
    /// The mountinfo file read.
    pub source: String,
    /// Mounts involving a Longhorn volume.
    pub entries: Vec<VolumeMount>,
}

/// All disk evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskFacts {
    /// `/dev/longhorn` entries.
    pub devices: Gathered<Vec<LonghornDevice>>,
    /// Block devices on top of them: partitions, stacked and loop devices.
    pub kernel_holders: Gathered<Vec<KernelHolder>>,
    /// Processes holding them open.
    pub open_files: Gathered<OpenFiles>,
    /// Mounts of them.
    pub mounts: Gathered<Mounts>,
}
