//! Disk evidence (design §5): Longhorn block devices under `<host_root>/dev/longhorn`,
//! the block devices on top of them (partitions, stacked and loop devices, from
//! `<host_root>/sys`), who holds any of them open (`<host_root>/proc/<pid>/fd`), and
//! mounts of any of them or of the kubelet's CSI paths (`<host_root>/proc/1/mountinfo`).
//!
//! Names: evidence from devices carries the Longhorn volume name (the CSI volume
//! handle); evidence from kubelet paths carries the PV name, or for filesystem staging
//! the sha256 of the handle. [`NamedBy`] and [`MatchedBy`] say which; the question "is
//! this volume held" takes both names (`NodeFacts::volume_holders_for`).
//!
//! Only live kernel state counts as holding a volume: leftover kubelet directories
//! survive a reboot and are not evidence of use.
//!
//! Every read is bounded in time ([`ScanLimits`]); a read that does not finish is
//! unreadable evidence naming what it was reading.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::bounded::{self, Progress, ScanLimits};
use super::csi_paths::{self, PathVolume};
use super::{mountinfo, processes, stack};
use crate::evidence::Gathered;

pub use super::disk_facts::{
    DevNum, DiskFacts, FdHolder, KernelHolder, LonghornDevice, MatchedBy, Mounts, NamedBy,
    OpenFiles, Relation, UnreadableProcess, VolumeMount,
};

/// Gathers all disk evidence under `host_root`, with the default time limits.
pub fn gather(host_root: &Path) -> DiskFacts {
    gather_with(host_root, ScanLimits::default())
}

/// Gathers all disk evidence under `host_root`.
///
/// Guarantees: never fails (a source that cannot be read, or not within `limits`, is
/// `Unreadable` naming the path); returns within about `2 × limits.read +
/// limits.source`; a device whose partitions or stacked devices cannot be read makes
/// `kernel_holders` unreadable (not shorter).
pub fn gather_with(host_root: &Path, limits: ScanLimits) -> DiskFacts {
    let root = host_root.to_path_buf();
    let dev_dir = host_root.join("dev/longhorn");
    let devices = bounded::run(&dev_dir.display().to_string(), limits.read, move |p| {
        p.reading(root.join("dev/longhorn").display());
        devices(&root)
    })
    .unwrap_or_else(|t| Gathered::unreadable(dev_dir.display().to_string(), t.to_string()));

    let (kernel_holders, derived) = match devices.value() {
        None => (
            Gathered::unreadable(
                dev_dir.display().to_string(),
                "the Longhorn devices are unreadable, so what is on them is unknown",
            ),
            Vec::new(),
        ),
        Some(devs) => {
            let (root, devs) = (host_root.to_path_buf(), devs.clone());
            let sys = host_root.join("sys").display().to_string();
            let task = format!("block devices under {sys}");
            match bounded::run(&task, limits.read, move |p| {
                stack::derived_devices(&root, &devs, p)
            }) {
                Ok((found, None)) => (Gathered::read(found.clone()), found),
                // What was found still ties open files and mounts to volumes.
                Ok((found, Some((source, reason)))) => {
                    (Gathered::unreadable(source, reason), found)
                }
                Err(t) => (Gathered::unreadable(sys, t.to_string()), Vec::new()),
            }
        }
    };

    let index = Arc::new(DeviceIndex::new(devices.value(), Some(&derived)));
    let mounts = mounts(host_root, &index, limits);
    let open_files = open_files(host_root, &index, limits);
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

/// A volume a device number or path is tied to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Tie {
    volume: String,
    named_by: NamedBy,
}

/// What ties device numbers and paths to volumes.
#[derive(Debug, Default)]
struct DeviceIndex {
    /// Device number → the volumes it is, or is on.
    by_num: HashMap<DevNum, BTreeSet<Tie>>,
    /// Kernel name (`sdb1`, `dm-3`) and `mapper/<dm name>` → the volumes it is on, for
    /// devtmpfs bind mounts of derived device nodes.
    by_dev_name: HashMap<String, BTreeSet<Tie>>,
    /// Longhorn volume names attached here (for `/dev/mapper/<volume>`).
    handles: BTreeSet<String>,
}

impl DeviceIndex {
    fn new(devices: Option<&Vec<LonghornDevice>>, derived: Option<&Vec<KernelHolder>>) -> Self {
        let mut ix = DeviceIndex::default();
        for d in devices.into_iter().flatten() {
            ix.handles.insert(d.volume.clone());
            if let Some(n) = d.device {
                ix.by_num.entry(n).or_default().insert(Tie {
                    volume: d.volume.clone(),
                    named_by: NamedBy::Handle,
                });
            }
        }
        for h in derived.into_iter().flatten() {
            let tie = Tie {
                volume: h.volume.clone(),
                named_by: h.named_by,
            };
            if let Some(n) = h.devnum {
                ix.by_num.entry(n).or_default().insert(tie.clone());
            }
            ix.by_dev_name
                .entry(h.device.clone())
                .or_default()
                .insert(tie.clone());
            if let Some(dm) = &h.dm_name {
                ix.by_dev_name
                    .entry(format!("mapper/{dm}"))
                    .or_default()
                    .insert(tie);
            }
        }
        ix
    }

    /// The volume a path names: a Longhorn device, a kubelet path, a staging path, or an
    /// encrypted volume's mapper device.
    fn path_tie(&self, path: &str) -> Option<(String, MatchedBy)> {
        match csi_paths::classify(path) {
            Some(PathVolume::Device(v)) => Some((v, MatchedBy::Path)),
            Some(PathVolume::Kubelet(pv)) => Some((pv, MatchedBy::KubeletPath)),
            Some(PathVolume::Staging { hash, .. }) => Some((hash, MatchedBy::StagingPath)),
            None => csi_paths::mapper_name(path)
                .filter(|n| self.handles.contains(n))
                .map(|n| (n, MatchedBy::Path)),
        }
    }
}

fn matched_by_number(t: &Tie) -> MatchedBy {
    match t.named_by {
        NamedBy::Handle => MatchedBy::DeviceNumber,
        NamedBy::PvName => MatchedBy::KubeletPath,
    }
}

/// Reads the host's mount table: `<host_root>/proc/1/mountinfo`, or when that cannot be
/// read, `<host_root>/proc/self/mountinfo` if vmrecover provably shares pid 1's mount
/// namespace (`ns/mnt` links equal). In a DaemonSet vmrecover's own mount table is its
/// container's, where the host's later mounts may not appear: it proves nothing. The
/// source used is recorded.
fn mounts(host_root: &Path, ix: &DeviceIndex, limits: ScanLimits) -> Gathered<Mounts> {
    let primary = host_root.join("proc/1/mountinfo");
    let root = host_root.to_path_buf();
    let p = primary.clone();
    let read = bounded::run(
        &primary.display().to_string(),
        limits.read,
        move |progress| {
            progress.reading(p.display());
            let e1 = match std::fs::read(&p) {
                Ok(d) => return Ok((p, d)),
                Err(e) => e,
            };
            let f = root.join("proc/self/mountinfo");
            progress.reading(f.display());
            same_mount_namespace(&root).map_err(|why| format!("{e1}; {why}"))?;
            match std::fs::read(&f) {
                Ok(d) => Ok((f, d)),
                Err(e2) => Err(format!("{e1}; fallback {}: {e2}", f.display())),
            }
        },
    );
    let (path, data) = match read {
        Ok(Ok(x)) => x,
        Ok(Err(why)) => return Gathered::unreadable(primary.display().to_string(), why),
        Err(t) => return Gathered::unreadable(primary.display().to_string(), t.to_string()),
    };
    let parsed = match mountinfo::parse(&data) {
        Ok(p) => p,
        Err(e) => return Gathered::unreadable(path.display().to_string(), e.to_string()),
    };
    let entries = parsed
        .into_iter()
        .filter_map(|m| volume_mount(m, ix))
        .collect();
    Gathered::read(Mounts {
        source: path.display().to_string(),
        entries,
    })
}

/// Why `<root>/proc/self`'s mount table cannot stand in for pid 1's.
#[derive(Debug, thiserror::Error)]
enum NotTheHostsMounts {
    /// A namespace link could not be read.
    #[error("cannot tell whether {} is the host's ({}: {source})", mountinfo.display(), link.display())]
    Unknown {
        /// The mount table in question.
        mountinfo: PathBuf,
        /// The namespace link that could not be read.
        link: PathBuf,
        /// The operating system's answer.
        source: std::io::Error,
    },
    /// The two namespaces differ.
    #[error("{} is in another mount namespace than pid 1, so its mount table is not the host's", proc_self.display())]
    Other {
        /// `<root>/proc/self`.
        proc_self: PathBuf,
    },
}

/// Whether `<root>/proc/self` is in pid 1's mount namespace (so its mount table is the
/// host's); `Err` says why not, or why it cannot be told.
fn same_mount_namespace(root: &Path) -> Result<(), NotTheHostsMounts> {
    let (ns1, nss) = (root.join("proc/1/ns/mnt"), root.join("proc/self/ns/mnt"));
    let read = |p: &Path| {
        std::fs::read_link(p).map_err(|source| NotTheHostsMounts::Unknown {
            mountinfo: root.join("proc/self/mountinfo"),
            link: p.to_path_buf(),
            source,
        })
    };
    if read(&ns1)? == read(&nss)? {
        Ok(())
    } else {
        Err(NotTheHostsMounts::Other {
            proc_self: root.join("proc/self"),
        })
    }
}

fn volume_mount(m: mountinfo::Mount, ix: &DeviceIndex) -> Option<VolumeMount> {
    let device = DevNum {
        major: m.major,
        minor: m.minor,
    };
    let mut ties: BTreeSet<Tie> = BTreeSet::new();
    let mut staging_hash = None;
    let handle = |v: String| Tie {
        volume: v,
        named_by: NamedBy::Handle,
    };
    // The source: `/dev/longhorn/<volume>`, `/dev/mapper/<volume>`.
    match ix.path_tie(&m.source) {
        Some((v, MatchedBy::Path | MatchedBy::DeviceNumber)) => {
            ties.insert(handle(v));
        }
        Some((pv, MatchedBy::KubeletPath)) => {
            ties.insert(Tie {
                volume: pv,
                named_by: NamedBy::PvName,
            });
        }
        Some((_, MatchedBy::StagingPath)) | None => {}
    }
    // The device number: the device itself or any device derived from it.
    if let Some(t) = ix.by_num.get(&device) {
        ties.extend(t.iter().cloned());
    }
    // A device node bind-mounted from devtmpfs (block volumes): its root names it.
    if m.fstype == "devtmpfs" {
        ties.extend(csi_paths::volume_of_devtmpfs_root(&m.root).map(handle));
        if let Some(name) = m.root.strip_prefix('/') {
            if let Some(t) = ix.by_dev_name.get(name) {
                ties.extend(t.iter().cloned());
            }
        }
    }
    ties.extend(
        csi_paths::mapper_name(&format!("/dev{}", m.root))
            .filter(|n| ix.handles.contains(n))
            .map(handle),
    );
    // The mount point: a kubelet path.
    match csi_paths::classify(&m.mount_point) {
        Some(PathVolume::Kubelet(pv)) => {
            ties.insert(Tie {
                volume: pv,
                named_by: NamedBy::PvName,
            });
        }
        Some(PathVolume::Device(v)) => {
            ties.insert(handle(v));
        }
        Some(PathVolume::Staging { hash, .. }) => staging_hash = Some(hash),
        None => {}
    }
    if ties.is_empty() && staging_hash.is_none() {
        return None;
    }
    let (mut volumes, mut pv_names) = (Vec::new(), Vec::new());
    for t in ties {
        match t.named_by {
            NamedBy::Handle => volumes.push(t.volume),
            NamedBy::PvName => pv_names.push(t.volume),
        }
    }
    Some(VolumeMount {
        volumes,
        pv_names,
        staging_hash,
        mount_point: m.mount_point,
        source: m.source,
        fstype: m.fstype,
        root: m.root,
        device,
    })
}

/// Scans `<host_root>/proc/<pid>/fd` of every process for descriptors that hold a
/// Longhorn volume or a device on one. A process that vanishes during the scan is
/// skipped; one whose descriptors cannot be read, or not in time, is listed as
/// unreadable (its holdings are unknown). `<host_root>/proc` must be a procfs
/// ([`processes::procfs_self`]): an empty or copied tree would prove nothing.
fn open_files(host_root: &Path, ix: &Arc<DeviceIndex>, limits: ScanLimits) -> Gathered<OpenFiles> {
    let proc_dir = host_root.join("proc");
    let root = host_root.to_path_buf();
    let listed = bounded::run(&proc_dir.display().to_string(), limits.read, move |p| {
        p.reading(root.join("proc/self").display());
        processes::procfs_self(&root)?;
        let proc_dir = root.join("proc");
        p.reading(proc_dir.display());
        let entries = std::fs::read_dir(&proc_dir)
            .map_err(|e| (proc_dir.display().to_string(), e.to_string()))?;
        let mut pids: Vec<u32> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
            .collect();
        pids.sort_unstable();
        Ok(pids)
    });
    let pids = match listed {
        Ok(Ok(p)) => p,
        Ok(Err((source, reason))) => return Gathered::unreadable(source, reason),
        Err(t) => return Gathered::unreadable(proc_dir.display().to_string(), t.to_string()),
    };
    let items: Vec<(u32, PathBuf)> = pids
        .into_iter()
        .map(|pid| (pid, proc_dir.join(pid.to_string())))
        .collect();
    let pids: Vec<u32> = items.iter().map(|(pid, _)| *pid).collect();
    let work_ix = Arc::clone(ix);
    let results = bounded::run_each(
        items,
        limits,
        |(pid, dir)| format!("open files of pid {pid} ({})", dir.join("fd").display()),
        move |(pid, dir), progress| match scan_fds(dir, *pid, &work_ix, progress) {
            Ok(held) => Ok(held),
            Err(e) if vanished(&e) => Err(None),
            Err(e) => {
                progress.reading(dir.join("comm").display());
                Err(Some((
                    comm(dir),
                    format!("{}: {e}", dir.join("fd").display()),
                )))
            }
        },
    );
    let mut result = OpenFiles {
        scanned: 0,
        holders: Vec::new(),
        unreadable: Vec::new(),
    };
    for (pid, r) in pids.into_iter().zip(results) {
        match r {
            Ok(Ok(held)) => {
                result.scanned += 1;
                result.holders.extend(held);
            }
            // Exited during the scan: it holds nothing any more.
            Ok(Err(None)) => {}
            Ok(Err(Some((comm, reason)))) => result.unreadable.push(UnreadableProcess {
                pid,
                comm,
                reason,
                timed_out: false,
            }),
            Err(t) => result.unreadable.push(UnreadableProcess {
                pid,
                // Not read: reading it could hang too.
                comm: String::new(),
                reason: t.to_string(),
                timed_out: true,
            }),
        }
    }
    result
        .holders
        .sort_by_key(|h| (h.pid, h.fd.clone(), h.volume.clone()));
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

fn scan_fds(
    pid_dir: &Path,
    pid: u32,
    ix: &DeviceIndex,
    progress: &Progress,
) -> io::Result<Vec<FdHolder>> {
    let fd_dir = pid_dir.join("fd");
    progress.reading(fd_dir.display());
    let mut held = Vec::new();
    let mut name: Option<String> = None;
    for fd in std::fs::read_dir(&fd_dir)? {
        let fd = fd?;
        let fd_path: PathBuf = fd.path();
        progress.reading(fd_path.display());
        let target = match std::fs::read_link(&fd_path) {
            Ok(t) => t,
            // Closed since the listing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let target = target.to_string_lossy().into_owned();
        let ties: Vec<(String, MatchedBy)> = match ix.path_tie(&target) {
            Some(t) => vec![t],
            None => match device_ties(&fd_path, &target, ix, progress)? {
                Some(ties) => ties
                    .iter()
                    .map(|t| (t.volume.clone(), matched_by_number(t)))
                    .collect(),
                None => continue,
            },
        };
        let comm = match &name {
            Some(n) => n.clone(),
            None => {
                progress.reading(pid_dir.join("comm").display());
                let c = comm(pid_dir);
                name = Some(c.clone());
                c
            }
        };
        for (volume, matched_by) in ties {
            held.push(FdHolder {
                pid,
                comm: comm.clone(),
                fd: fd.file_name().to_string_lossy().into_owned(),
                target: target.clone(),
                volume,
                matched_by,
            });
        }
    }
    Ok(held)
}

/// The volumes an open file belongs to by device number: a block device whose number is
/// a Longhorn device's or one derived from it, or a file on a filesystem mounted from
/// one. Inside a container the link text is the container's path (`/dev/disk0`), so only
/// the number tells. `Ok(None)`: not on any volume. An `fstat` that fails (other than
/// the descriptor having been closed) is an error: the file could be on a volume.
fn device_ties<'a>(
    fd_path: &Path,
    target: &str,
    ix: &'a DeviceIndex,
    progress: &Progress,
) -> io::Result<Option<&'a BTreeSet<Tie>>> {
    if ix.by_num.is_empty() || !target.starts_with('/') {
        return Ok(None);
    }
    progress.reading(format_args!("{} -> {target}", fd_path.display()));
    let meta = match std::fs::metadata(fd_path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("stat {} -> {target}: {e}", fd_path.display()),
            ))
        }
    };
    let num = if meta.file_type().is_block_device() {
        DevNum::from_raw(meta.rdev())
    } else {
        DevNum::from_raw(meta.dev())
    };
    Ok(ix.by_num.get(&num))
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

    /// Hole 4: an empty `proc` (no procfs) gave an empty scan, "nothing held".
    #[test]
    fn an_empty_proc_is_unreadable_not_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("proc")).expect("mkdir");
        let g = open_files(
            dir.path(),
            &Arc::new(DeviceIndex::default()),
            ScanLimits::default(),
        );
        let err = g.as_result().expect_err("not a procfs").to_string();
        assert!(err.contains("proc/self"), "{err}");
        assert!(err.contains("not a procfs"), "{err}");
    }
}
