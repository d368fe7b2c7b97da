//! Block devices on top of Longhorn devices (design §5), read from sysfs under the host
//! root: partitions (`/sys/class/block/sdX/sdX1`), devices stacked on a device or on one
//! of its partitions (`holders/`: device-mapper — dm-crypt, a guest's LVM auto-activated
//! on the host, multipath —, md), recursively, and loop devices backed by a Longhorn
//! device, a device derived from one, or a kubelet CSI path.
//!
//! Sysfs layout read (as on a node):
//! - `sys/dev/block/<MAJ:MIN>` → the device's directory (a symlink into `sys/devices`);
//! - in a device directory: `dev` (`MAJ:MIN`), `holders/<name>` (symlinks to the holders'
//!   directories), one sub-directory per partition (with a `partition` file), `dm/name`
//!   for device-mapper devices, `md/` for md devices;
//! - `sys/class/block/<name>` → any block device's directory (used when a `holders/`
//!   entry cannot be followed);
//! - `sys/block/loopN/loop/backing_file`.
//!
//! Fail closed: a directory or file that cannot be read, a stack deeper than
//! [`MAX_DEPTH`] or larger than [`MAX_DEVICES`], or a Longhorn entry that is not a block
//! device makes the whole answer an error naming the path, never a shorter list.

use std::collections::{BTreeSet, HashSet};
use std::io;
use std::path::{Path, PathBuf};

use super::bounded::Progress;
use super::csi_paths::{self, PathVolume};
use super::disk_facts::{DevNum, KernelHolder, LonghornDevice, NamedBy, Relation};

/// The deepest stack followed (a Longhorn disk → partition → dm-crypt → LVM → loop is 4).
pub const MAX_DEPTH: usize = 12;
/// The most derived devices followed on one node.
pub const MAX_DEVICES: usize = 20_000;

/// A failed read: the path and why.
pub type StackError = (String, String);

/// What a derived device is tied to: a volume, by one of its names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Tie {
    volume: String,
    named_by: NamedBy,
}

struct Walk<'a> {
    host_root: &'a Path,
    progress: &'a Progress,
    out: Vec<KernelHolder>,
    seen: HashSet<(String, Tie)>,
    /// The Longhorn devices' kernel names (`sdb`).
    roots: Vec<(String, Tie)>,
}

/// Every block device derived from the Longhorn `devices`, and every loop device backed
/// by a kubelet CSI path, tied to its volume.
///
/// On an error the devices found until then come with it: they are real and still tie
/// open files and mounts to their volumes, but the list is incomplete.
pub fn derived_devices(
    host_root: &Path,
    devices: &[LonghornDevice],
    progress: &Progress,
) -> (Vec<KernelHolder>, Option<StackError>) {
    let mut walk = Walk {
        host_root,
        progress,
        out: Vec::new(),
        seen: HashSet::new(),
        roots: Vec::new(),
    };
    let error = walk.all(devices).err();
    let mut out = walk.out;
    out.sort_by(|a, b| (&a.volume, a.named_by, &a.device).cmp(&(&b.volume, b.named_by, &b.device)));
    (out, error)
}

impl Walk<'_> {
    fn all(&mut self, devices: &[LonghornDevice]) -> Result<(), StackError> {
        let (host_root, progress) = (self.host_root, self.progress);
        let walk = self;
        let loops = loop_devices(host_root, progress)?;
        for dev in devices {
            let entry = host_root.join("dev/longhorn").join(&dev.volume);
            let Some(num) = dev.device else {
                return Err((
                    entry.display().to_string(),
                    format!(
                    "not a block device ({}): its partitions and stacked devices cannot be found",
                    dev.file_type
                ),
                ));
            };
            let dir = host_root.join(format!("sys/dev/block/{num}"));
            progress.reading(dir.display());
            match std::fs::metadata(&dir) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // Detached since it was listed: nothing is on it any more.
                    if std::fs::symlink_metadata(&entry)
                        .is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
                    {
                        continue;
                    }
                    return Err((
                        dir.display().to_string(),
                        format!("no sysfs entry for block device {num} of {}", dev.path),
                    ));
                }
                Err(e) => return Err((dir.display().to_string(), e.to_string())),
            }
            let name = std::fs::canonicalize(&dir)
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| num.to_string());
            let tie = Tie {
                volume: dev.volume.clone(),
                named_by: NamedBy::Handle,
            };
            walk.roots.push((name.clone(), tie.clone()));
            walk.children(&dir, &name, &tie, 1)?;
        }
        // Loop devices: backed by a Longhorn device, a device found above, or a kubelet path.
        // A loop device backed by another loop device is tied once that one is.
        let mut pending: Vec<(String, String)> = loops;
        loop {
            let mut tied_any = false;
            let mut rest = Vec::new();
            for (name, backing) in pending {
                let ties = walk.ties_of_backing(&backing);
                if ties.is_empty() {
                    rest.push((name, backing));
                    continue;
                }
                tied_any = true;
                let dir = host_root.join("sys/block").join(&name);
                let devnum = read_dev(&dir.join("dev"), progress)?;
                for tie in ties {
                    if walk.seen.insert((name.clone(), tie.clone())) {
                        walk.push(KernelHolder {
                            volume: tie.volume.clone(),
                            named_by: tie.named_by,
                            device: name.clone(),
                            devnum: Some(devnum),
                            relation: Relation::Loop,
                            parent: backing.clone(),
                            dm_name: None,
                            detail: format!("loop device backed by {backing}"),
                        })?;
                        walk.children(&dir, &name, &tie, 1)?;
                    }
                }
            }
            pending = rest;
            if !tied_any || pending.is_empty() {
                break;
            }
        }
        Ok(())
    }
}

/// Bound loop devices and their backing files (`(deleted)` stripped).
fn loop_devices(
    host_root: &Path,
    progress: &Progress,
) -> Result<Vec<(String, String)>, StackError> {
    let sys_block = host_root.join("sys/block");
    progress.reading(sys_block.display());
    let entries = std::fs::read_dir(&sys_block)
        .map_err(|e| (sys_block.display().to_string(), e.to_string()))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| (sys_block.display().to_string(), e.to_string()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let backing = sys_block.join(&name).join("loop/backing_file");
        progress.reading(backing.display());
        match std::fs::read(&backing) {
            Ok(b) => {
                let text = String::from_utf8_lossy(&b).trim_end().to_string();
                let text = text.strip_suffix(" (deleted)").unwrap_or(&text).to_string();
                out.push((name, text));
            }
            // An unbound loop device has no backing file.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err((backing.display().to_string(), e.to_string())),
        }
    }
    out.sort();
    Ok(out)
}

fn read_dev(path: &Path, progress: &Progress) -> Result<DevNum, StackError> {
    progress.reading(path.display());
    let text =
        std::fs::read_to_string(path).map_err(|e| (path.display().to_string(), e.to_string()))?;
    DevNum::parse(&text).ok_or_else(|| {
        (
            path.display().to_string(),
            format!("not a device number: {:?}", text.trim()),
        )
    })
}

impl Walk<'_> {
    fn push(&mut self, h: KernelHolder) -> Result<(), StackError> {
        if self.out.len() >= MAX_DEVICES {
            return Err((
                self.host_root.join("sys").display().to_string(),
                format!(
                    "more than {MAX_DEVICES} block devices on Longhorn volumes: not all followed"
                ),
            ));
        }
        self.out.push(h);
        Ok(())
    }

    /// The volumes a loop device's backing file ties it to.
    fn ties_of_backing(&self, backing: &str) -> BTreeSet<Tie> {
        let mut ties = BTreeSet::new();
        match csi_paths::classify(backing) {
            Some(PathVolume::Device(v)) => {
                ties.insert(Tie {
                    volume: v,
                    named_by: NamedBy::Handle,
                });
            }
            Some(PathVolume::Kubelet(pv)) => {
                ties.insert(Tie {
                    volume: pv,
                    named_by: NamedBy::PvName,
                });
            }
            // A file on a staged filesystem: the mount holds the volume already.
            Some(PathVolume::Staging { .. }) | None => {}
        }
        // `/dev/<name>` or `/dev/mapper/<dm name>` of a device found on a volume.
        let parts: Vec<&str> = backing.split('/').filter(|p| !p.is_empty()).collect();
        let by_name = match parts.as_slice() {
            ["dev", "mapper", dm] => Some((true, *dm)),
            ["dev", name] => Some((false, *name)),
            _ => None,
        };
        if let Some((mapper, want)) = by_name {
            if !mapper {
                ties.extend(
                    self.roots
                        .iter()
                        .filter(|(n, _)| n == want)
                        .map(|(_, t)| t.clone()),
                );
            }
            for h in &self.out {
                let hit = if mapper {
                    h.dm_name.as_deref() == Some(want)
                } else {
                    h.device == want
                };
                if hit {
                    ties.insert(Tie {
                        volume: h.volume.clone(),
                        named_by: h.named_by,
                    });
                }
            }
        }
        ties
    }

    /// Partitions of, and devices stacked on, the device at `dir` (`name`), recursively.
    fn children(
        &mut self,
        dir: &Path,
        name: &str,
        tie: &Tie,
        depth: usize,
    ) -> Result<(), StackError> {
        if depth > MAX_DEPTH {
            return Err((
                dir.display().to_string(),
                format!("block devices stacked more than {MAX_DEPTH} deep: not followed further"),
            ));
        }
        self.progress.reading(dir.display());
        let entries =
            std::fs::read_dir(dir).map_err(|e| (dir.display().to_string(), e.to_string()))?;
        let mut partitions = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| (dir.display().to_string(), e.to_string()))?;
            let path = entry.path();
            // Partitions are sub-directories with a `partition` file; `holders`, `queue`,
            // `power`, … are not.
            if path.join("partition").is_file() {
                partitions.push((entry.file_name().to_string_lossy().into_owned(), path));
            }
        }
        partitions.sort();
        for (pname, pdir) in partitions {
            if !self.seen.insert((pname.clone(), tie.clone())) {
                continue;
            }
            let devnum = match read_dev(&pdir.join("dev"), self.progress) {
                Ok(n) => n,
                // Removed since the listing (partition table re-read).
                Err(_) if !pdir.exists() => continue,
                Err(e) => return Err(e),
            };
            self.push(KernelHolder {
                volume: tie.volume.clone(),
                named_by: tie.named_by,
                device: pname.clone(),
                devnum: Some(devnum),
                relation: Relation::Partition,
                parent: name.to_string(),
                dm_name: None,
                detail: format!("partition of {name}"),
            })?;
            self.holders(&pdir, &pname, tie, depth + 1)?;
        }
        self.holders(dir, name, tie, depth)
    }

    /// Devices stacked on the device at `dir` (`holders/`), and theirs, recursively.
    fn holders(
        &mut self,
        dir: &Path,
        name: &str,
        tie: &Tie,
        depth: usize,
    ) -> Result<(), StackError> {
        let holders_dir = dir.join("holders");
        self.progress.reading(holders_dir.display());
        let entries = std::fs::read_dir(&holders_dir)
            .map_err(|e| (holders_dir.display().to_string(), e.to_string()))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| (holders_dir.display().to_string(), e.to_string()))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        for hname in names {
            if !self.seen.insert((hname.clone(), tie.clone())) {
                continue;
            }
            // The entry is a symlink to the holder's directory; follow it, or find the
            // holder by name.
            let linked = holders_dir.join(&hname);
            let hdir: PathBuf = if linked.join("dev").is_file() {
                linked.clone()
            } else {
                self.host_root.join("sys/class/block").join(&hname)
            };
            let devnum = match read_dev(&hdir.join("dev"), self.progress) {
                Ok(n) => n,
                // Torn down since the listing.
                Err(_) if std::fs::symlink_metadata(&linked).is_err() => continue,
                Err(e) => return Err(e),
            };
            let dm_name = std::fs::read_to_string(hdir.join("dm/name"))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty());
            let detail = match &dm_name {
                Some(dm) => format!("device-mapper device {dm} stacked on {name}"),
                None if hdir.join("md").is_dir() => {
                    format!("md (software RAID) device stacked on {name}")
                }
                None => format!("block device stacked on {name}"),
            };
            self.push(KernelHolder {
                volume: tie.volume.clone(),
                named_by: tie.named_by,
                device: hname.clone(),
                devnum: Some(devnum),
                relation: Relation::Stacked,
                parent: name.to_string(),
                dm_name,
                detail,
            })?;
            self.children(&hdir, &hname, tie, depth + 1)?;
        }
        Ok(())
    }
}
