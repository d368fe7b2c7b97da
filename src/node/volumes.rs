//! Disk evidence (design §5): Longhorn block devices under `<host_root>/dev/longhorn`,
//! who holds them (open file descriptors in `<host_root>/proc/<pid>/fd`, loop and
//! device-mapper devices in `<host_root>/sys`), and mounts of them or of their kubelet
//! CSI paths (`<host_root>/proc/1/mountinfo`).
//!
//! Only live kernel state counts as holding a volume: leftover kubelet directories
//! survive a reboot and are not evidence of use.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{csi_paths, mountinfo};
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
    fn from_raw(raw: u64) -> Self {
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
    /// Volume name (the PV name on Harvester).
    pub volume: String,
    /// Path on the host (`/dev/longhorn/<volume>`).
    pub path: String,
    /// `block-device` on a real node; `file`, `symlink` or `other` otherwise.
    pub file_type: String,
    /// The block device number, when it is a block device.
    pub device: Option<DevNum>,
}

/// A kernel object that keeps a Longhorn device busy: a loop device backed by it or a
/// device-mapper/md device stacked on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelHolder {
    /// The volume held.
    pub volume: String,
    /// The holder (`loop3`, `dm-2`).
    pub device: String,
    /// What it is, for people.
    pub detail: String,
}

/// How an open file was tied to a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchedBy {
    /// The fd link names a Longhorn or kubelet CSI path of the volume.
    Path,
    /// The opened file is the volume's block device, or lives on a filesystem mounted
    /// from it (matched by device number).
    DeviceNumber,
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
    /// The volume held.
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
    /// The volumes it was tied to (by source, device number, devtmpfs root or kubelet path).
    pub volumes: Vec<String>,
    /// For a Longhorn filesystem staging mount (`…/driver.longhorn.io/<sha>/globalmount`),
    /// the sha256 of the volume handle it was staged for.
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
    /// Loop and device-mapper devices holding them.
    pub kernel_holders: Gathered<Vec<KernelHolder>>,
    /// Processes holding them open.
    pub open_files: Gathered<OpenFiles>,
    /// Mounts of them.
    pub mounts: Gathered<Mounts>,
}

/// Gathers all disk evidence under `host_root`.
pub fn gather(host_root: &Path) -> DiskFacts {
    let devices = devices(host_root);
    let mut devmap: HashMap<DevNum, String> = HashMap::new();
    if let Some(devs) = devices.value() {
        for d in devs {
            if let Some(n) = d.device {
                devmap.insert(n, d.volume.clone());
            }
        }
    }
    let kernel_holders = kernel_holders(host_root, devices.value(), &mut devmap);
    let known: BTreeSet<String> = devices
        .value()
        .map(|d| d.iter().map(|x| x.volume.clone()).collect())
        .unwrap_or_default();
    let match_ctx = MatchCtx {
        devmap: &devmap,
        known: &known,
    };
    let mounts = mounts(host_root, &match_ctx);
    let open_files = open_files(host_root, &match_ctx);
    DiskFacts {
        devices,
        kernel_holders,
        open_files,
        mounts,
    }
}

fn display(root: &Path, rel: &str) -> String {
    root.join(rel).display().to_string()
}

/// Lists `<host_root>/dev/longhorn`. A missing directory means no Longhorn volume is
/// attached here (Longhorn creates it on first attach; `/dev` is fresh at every boot),
/// but only when `<host_root>/dev` itself exists.
pub fn devices(host_root: &Path) -> Gathered<Vec<LonghornDevice>> {
    let dir = host_root.join("dev/longhorn");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return match std::fs::metadata(host_root.join("dev")) {
                Ok(m) if m.is_dir() => Gathered::read(Vec::new()),
                Ok(_) => Gathered::unreadable(display(host_root, "dev"), "not a directory"),
                Err(e) => Gathered::unreadable(display(host_root, "dev"), e.to_string()),
            };
        }
        Err(e) => return Gathered::unreadable(dir.display().to_string(), e.to_string()),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => return Gathered::unreadable(dir.display().to_string(), e.to_string()),
        };
        let volume = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let (file_type, device) = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_block_device() => {
                ("block-device", Some(DevNum::from_raw(m.rdev())))
            }
            Ok(m) if m.file_type().is_symlink() => match std::fs::metadata(&path) {
                Ok(t) if t.file_type().is_block_device() => {
                    ("symlink", Some(DevNum::from_raw(t.rdev())))
                }
                _ => ("symlink", None),
            },
            Ok(m) if m.is_file() => ("file", None),
            Ok(_) => ("other", None),
            // Removed while listing: no longer attached.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Gathered::unreadable(path.display().to_string(), e.to_string()),
        };
        out.push(LonghornDevice {
            volume: volume.clone(),
            path: format!("/dev/longhorn/{volume}"),
            file_type: file_type.into(),
            device,
        });
    }
    out.sort_by(|a, b| a.volume.cmp(&b.volume));
    Gathered::read(out)
}

/// Loop devices whose backing file is a volume's device or kubelet block path, and
/// device-mapper/md devices stacked on a Longhorn device (`/sys/dev/block/M:m/holders`).
/// Stacked devices are added to `devmap` so their mounts and open files count too.
fn kernel_holders(
    host_root: &Path,
    devices: Option<&Vec<LonghornDevice>>,
    devmap: &mut HashMap<DevNum, String>,
) -> Gathered<Vec<KernelHolder>> {
    let Some(devices) = devices else {
        return Gathered::unreadable(
            display(host_root, "dev/longhorn"),
            "Longhorn devices unreadable, so their holders are unknown",
        );
    };
    let sys_block = host_root.join("sys/block");
    let entries = match std::fs::read_dir(&sys_block) {
        Ok(e) => e,
        Err(e) => return Gathered::unreadable(sys_block.display().to_string(), e.to_string()),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => return Gathered::unreadable(sys_block.display().to_string(), e.to_string()),
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let backing = sys_block.join(&name).join("loop/backing_file");
        match std::fs::read(&backing) {
            Ok(b) => {
                let file = String::from_utf8_lossy(&b).trim_end().to_string();
                if let Some(volume) = csi_paths::volume_of(&file) {
                    out.push(KernelHolder {
                        volume,
                        device: name,
                        detail: format!("loop device backed by {file}"),
                    });
                }
            }
            // An unbound loop device has no backing file.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Gathered::unreadable(backing.display().to_string(), e.to_string()),
        }
    }
    for dev in devices {
        let Some(num) = dev.device else { continue };
        let holders_dir = host_root.join(format!("sys/dev/block/{num}/holders"));
        let holders = match std::fs::read_dir(&holders_dir) {
            Ok(h) => h,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // The device went away after it was listed: nothing is stacked on it.
                if host_root.join("sys/dev/block").is_dir() {
                    continue;
                }
                return Gathered::unreadable(holders_dir.display().to_string(), e.to_string());
            }
            Err(e) => {
                return Gathered::unreadable(holders_dir.display().to_string(), e.to_string())
            }
        };
        for h in holders {
            let h = match h {
                Ok(h) => h,
                Err(e) => {
                    return Gathered::unreadable(holders_dir.display().to_string(), e.to_string())
                }
            };
            let hname = h.file_name().to_string_lossy().into_owned();
            let base = sys_block.join(&hname);
            let dm_name = std::fs::read_to_string(base.join("dm/name"))
                .map(|s| s.trim().to_string())
                .ok();
            if let Some(n) = std::fs::read_to_string(base.join("dev"))
                .ok()
                .and_then(|s| DevNum::parse(&s))
            {
                devmap.insert(n, dev.volume.clone());
            }
            let detail = match dm_name {
                Some(n) => format!("device-mapper device {n} stacked on it"),
                None => "block device stacked on it".to_string(),
            };
            out.push(KernelHolder {
                volume: dev.volume.clone(),
                device: hname,
                detail,
            });
        }
    }
    out.sort_by(|a, b| (&a.volume, &a.device).cmp(&(&b.volume, &b.device)));
    Gathered::read(out)
}

/// What ties a path or device number to a volume.
struct MatchCtx<'a> {
    devmap: &'a HashMap<DevNum, String>,
    known: &'a BTreeSet<String>,
}

impl MatchCtx<'_> {
    fn volume_of_path(&self, path: &str) -> Option<String> {
        csi_paths::volume_of(path)
            .or_else(|| csi_paths::mapper_name(path).filter(|n| self.known.contains(n)))
    }
}

/// Reads the host's mount table: `<host_root>/proc/1/mountinfo`, or when that cannot be
/// read, `<host_root>/proc/self/mountinfo` (the source used is recorded).
fn mounts(host_root: &Path, ctx: &MatchCtx<'_>) -> Gathered<Mounts> {
    let primary = host_root.join("proc/1/mountinfo");
    let fallback = host_root.join("proc/self/mountinfo");
    let (path, data) = match std::fs::read(&primary) {
        Ok(d) => (primary, d),
        Err(e1) => match std::fs::read(&fallback) {
            Ok(d) => (fallback, d),
            Err(e2) => {
                return Gathered::unreadable(
                    primary.display().to_string(),
                    format!("{e1}; fallback {}: {e2}", fallback.display()),
                )
            }
        },
    };
    let parsed = match mountinfo::parse(&data) {
        Ok(p) => p,
        Err(e) => return Gathered::unreadable(path.display().to_string(), e.to_string()),
    };
    let entries = parsed
        .into_iter()
        .filter_map(|m| volume_mount(m, ctx))
        .collect();
    Gathered::read(Mounts {
        source: path.display().to_string(),
        entries,
    })
}

fn volume_mount(m: mountinfo::Mount, ctx: &MatchCtx<'_>) -> Option<VolumeMount> {
    let device = DevNum {
        major: m.major,
        minor: m.minor,
    };
    let mut volumes = BTreeSet::new();
    volumes.extend(ctx.volume_of_path(&m.source));
    volumes.extend(ctx.devmap.get(&device).cloned());
    volumes.extend(csi_paths::volume_of_devtmpfs_root(&m.root));
    volumes.extend(
        csi_paths::mapper_name(&format!("/dev{}", m.root)).filter(|n| ctx.known.contains(n)),
    );
    volumes.extend(csi_paths::volume_of(&m.mount_point));
    let staging_hash = csi_paths::longhorn_staging_hash(&m.mount_point);
    if volumes.is_empty() && staging_hash.is_none() {
        return None;
    }
    Some(VolumeMount {
        volumes: volumes.into_iter().collect(),
        staging_hash,
        mount_point: m.mount_point,
        source: m.source,
        fstype: m.fstype,
        root: m.root,
        device,
    })
}

/// Scans `<host_root>/proc/<pid>/fd` of every process for descriptors that hold a
/// Longhorn volume. A process that vanishes during the scan is skipped; one whose
/// descriptors cannot be read is listed as unreadable (its holdings are unknown).
fn open_files(host_root: &Path, ctx: &MatchCtx<'_>) -> Gathered<OpenFiles> {
    let proc_dir = host_root.join("proc");
    let entries = match std::fs::read_dir(&proc_dir) {
        Ok(e) => e,
        Err(e) => return Gathered::unreadable(proc_dir.display().to_string(), e.to_string()),
    };
    let mut result = OpenFiles {
        scanned: 0,
        holders: Vec::new(),
        unreadable: Vec::new(),
    };
    for entry in entries {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let pid_dir = entry.path();
        match scan_fds(&pid_dir, pid, ctx) {
            Ok(held) => {
                result.scanned += 1;
                result.holders.extend(held);
            }
            Err(e) if vanished(&e) => {}
            Err(e) => result.unreadable.push(UnreadableProcess {
                pid,
                comm: comm(&pid_dir),
                reason: format!("{}: {e}", pid_dir.join("fd").display()),
            }),
        }
    }
    result.holders.sort_by_key(|h| (h.pid, h.fd.clone()));
    result.unreadable.sort_by_key(|u| u.pid);
    Gathered::read(result)
}

fn vanished(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(nix::libc::ESRCH)
}

fn comm(pid_dir: &Path) -> String {
    std::fs::read_to_string(pid_dir.join("comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

fn scan_fds(pid_dir: &Path, pid: u32, ctx: &MatchCtx<'_>) -> io::Result<Vec<FdHolder>> {
    let fd_dir = pid_dir.join("fd");
    let mut held = Vec::new();
    for fd in std::fs::read_dir(&fd_dir)? {
        let fd = fd?;
        let fd_path: PathBuf = fd.path();
        let target = match std::fs::read_link(&fd_path) {
            Ok(t) => t,
            // Closed since the listing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let target = target.to_string_lossy().into_owned();
        let by_path = ctx.volume_of_path(&target);
        let (volume, matched_by) = match by_path {
            Some(v) => (v, MatchedBy::Path),
            None => match device_volume(&fd_path, &target, ctx) {
                Some(v) => (v, MatchedBy::DeviceNumber),
                None => continue,
            },
        };
        held.push(FdHolder {
            pid,
            comm: comm(pid_dir),
            fd: fd.file_name().to_string_lossy().into_owned(),
            target,
            volume,
            matched_by,
        });
    }
    Ok(held)
}

/// The volume an open file belongs to by device number: a block device whose number is
/// a Longhorn device's, or a file on a filesystem mounted from one. Inside a container
/// the link text is the container's path (`/dev/disk0`), so only the number tells.
fn device_volume(fd_path: &Path, target: &str, ctx: &MatchCtx<'_>) -> Option<String> {
    if ctx.devmap.is_empty() || !target.starts_with('/') {
        return None;
    }
    let meta = std::fs::metadata(fd_path).ok()?;
    let num = if meta.file_type().is_block_device() {
        DevNum::from_raw(meta.rdev())
    } else {
        DevNum::from_raw(meta.dev())
    };
    ctx.devmap.get(&num).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devnum_parse() {
        assert_eq!(
            DevNum::parse("8:32\n"),
            Some(DevNum {
                major: 8,
                minor: 32
            })
        );
        assert_eq!(DevNum::parse("x"), None);
    }

    #[test]
    fn missing_dev_is_unreadable_but_missing_longhorn_dir_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(devices(dir.path()).value().is_none());
        std::fs::create_dir(dir.path().join("dev")).expect("mkdir");
        assert_eq!(devices(dir.path()).value(), Some(&Vec::new()));
    }
}
