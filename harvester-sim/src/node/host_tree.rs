//! Host-root trees laid out as on a node, for the disk tests: real block device nodes
//! (`mknod`, root only) under `dev/longhorn`, and a sysfs as the kernel shows it:
//!
//! ```text
//! sys/devices/pci0000:00/block/sdb/{dev,holders/,slaves/}          a disk
//! sys/devices/pci0000:00/block/sdb/sdb1/{dev,partition,holders/}   its partition
//! sys/devices/virtual/block/dm-3/{dev,dm/name,holders/,slaves/}    a stacked device
//! sys/devices/virtual/block/loop3/{dev,loop/backing_file,holders/} a loop device
//! sys/block/<disk> -> ../devices/…/<disk>          (whole disks only)
//! sys/class/block/<name> -> ../../devices/…/<name> (disks and partitions)
//! sys/dev/block/<MAJ:MIN> -> ../../devices/…/<name>
//! <device>/holders/<holder> -> ../../…/virtual/block/<holder>
//! ```
//! Links are relative, as in sysfs. `proc/self` links to the test process's procfs entry.

use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};

/// Whether the tests run as root (creating block device nodes needs CAP_MKNOD).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A host-root tree under construction.
pub struct HostTree {
    /// The host root.
    pub root: PathBuf,
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// `to` relative to the directory `from` (both absolute, under the same root).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let f: Vec<Component> = from.components().collect();
    let t: Vec<Component> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    out
}

fn link(target: &Path, at: &Path) {
    std::fs::create_dir_all(at.parent().expect("parent")).expect("mkdir");
    symlink(relative(at.parent().expect("parent"), target), at).expect("symlink");
}

impl HostTree {
    /// An empty node: `dev/longhorn`, the sysfs directories, and a `proc` directory
    /// (for fake processes) whose `self` links to the test process's procfs entry.
    pub fn new(root: &Path) -> HostTree {
        let t = Self::sys_and_dev(root);
        std::fs::create_dir_all(root.join("proc")).expect("mkdir proc");
        if std::fs::symlink_metadata(root.join("proc/self")).is_err() {
            symlink("/proc/self", root.join("proc/self")).expect("proc/self");
        }
        t
    }

    /// An empty node whose `proc` is this machine's procfs (real processes).
    pub fn with_real_proc(root: &Path) -> HostTree {
        let t = Self::sys_and_dev(root);
        symlink("/proc", root.join("proc")).expect("proc link");
        t
    }

    fn sys_and_dev(root: &Path) -> HostTree {
        for d in [
            "dev/longhorn",
            "sys/block",
            "sys/class/block",
            "sys/dev/block",
            "sys/devices/pci0000:00/block",
            "sys/devices/virtual/block",
        ] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        HostTree {
            root: root.to_path_buf(),
        }
    }

    /// An unbound loop device (no backing file).
    pub fn unbound_loop(&self, name: &str, dev: (u32, u32)) -> PathBuf {
        self.stacked(name, dev, &[])
    }

    fn device_dir(&self, dir: &Path, name: &str, dev: (u32, u32)) {
        write(&dir.join("dev"), &format!("{}:{}\n", dev.0, dev.1));
        std::fs::create_dir_all(dir.join("holders")).expect("holders");
        link(dir, &self.root.join(format!("sys/class/block/{name}")));
        link(
            dir,
            &self.root.join(format!("sys/dev/block/{}:{}", dev.0, dev.1)),
        );
    }

    /// The directory of the device `name`.
    pub fn dir_of(&self, name: &str) -> PathBuf {
        std::fs::canonicalize(self.root.join(format!("sys/class/block/{name}")))
            .unwrap_or_else(|e| panic!("no device {name} in the tree: {e}"))
    }

    /// A whole disk (an iSCSI disk, as Longhorn's v1 engine attaches it).
    pub fn disk(&self, name: &str, dev: (u32, u32)) -> PathBuf {
        let dir = self
            .root
            .join(format!("sys/devices/pci0000:00/block/{name}"));
        self.device_dir(&dir, name, dev);
        std::fs::create_dir_all(dir.join("slaves")).expect("slaves");
        link(&dir, &self.root.join(format!("sys/block/{name}")));
        dir
    }

    /// A Longhorn volume attached here: `dev/longhorn/<volume>`, a real block device node,
    /// and its disk `name` in sysfs.
    pub fn longhorn(&self, volume: &str, name: &str, dev: (u32, u32)) -> PathBuf {
        mknod_block(&self.root.join(format!("dev/longhorn/{volume}")), dev);
        self.disk(name, dev)
    }

    /// Partition `n` of `disk`.
    pub fn partition(&self, disk: &str, name: &str, dev: (u32, u32), n: u32) -> PathBuf {
        let dir = self.dir_of(disk).join(name);
        self.device_dir(&dir, name, dev);
        write(&dir.join("partition"), &format!("{n}\n"));
        dir
    }

    /// A virtual device (device-mapper, md, loop) stacked on the devices `on`.
    fn stacked(&self, name: &str, dev: (u32, u32), on: &[&str]) -> PathBuf {
        let dir = self.root.join(format!("sys/devices/virtual/block/{name}"));
        self.device_dir(&dir, name, dev);
        std::fs::create_dir_all(dir.join("slaves")).expect("slaves");
        link(&dir, &self.root.join(format!("sys/block/{name}")));
        for below in on {
            let below_dir = self.dir_of(below);
            link(&dir, &below_dir.join("holders").join(name));
            link(&below_dir, &dir.join("slaves").join(below));
        }
        dir
    }

    /// A device-mapper device `dm-N` named `dm_name` on `on`.
    pub fn dm(&self, name: &str, dev: (u32, u32), dm_name: &str, on: &[&str]) -> PathBuf {
        let dir = self.stacked(name, dev, on);
        write(&dir.join("dm/name"), &format!("{dm_name}\n"));
        write(&dir.join("dm/uuid"), &format!("LVM-{dm_name}\n"));
        dir
    }

    /// An md (software RAID) device on `on`.
    pub fn md(&self, name: &str, dev: (u32, u32), on: &[&str]) -> PathBuf {
        let dir = self.stacked(name, dev, on);
        write(&dir.join("md/level"), "raid1\n");
        dir
    }

    /// A loop device backed by `backing` (a path as the kernel shows it).
    pub fn loop_dev(&self, name: &str, dev: (u32, u32), backing: &str) -> PathBuf {
        let dir = self.stacked(name, dev, &[]);
        write(&dir.join("loop/backing_file"), &format!("{backing}\n"));
        dir
    }

    /// `proc/1/mountinfo` with `lines`.
    pub fn mountinfo(&self, lines: &str) {
        write(&self.root.join("proc/1/mountinfo"), lines);
    }
}

/// Creates a block device node.
pub fn mknod_block(path: &Path, dev: (u32, u32)) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(u64::from(dev.0), u64::from(dev.1)),
    )
    .unwrap_or_else(|e| panic!("mknod {}: {e}", path.display()));
}

/// The device number of the filesystem holding `path` (to declare a fake partition a
/// real process can hold a file on).
pub fn fs_dev(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let d = std::fs::metadata(path).expect("stat").dev();
    (
        u32::try_from(nix::sys::stat::major(d)).expect("major"),
        u32::try_from(nix::sys::stat::minor(d)).expect("minor"),
    )
}
