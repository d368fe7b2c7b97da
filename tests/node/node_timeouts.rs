//! Hole 4: host reads that never finish. A `stat` through an fd link onto a dead NFS
//! mount (a Longhorn RWX share-manager gone with the node) blocks forever; here the
//! blocking object is real: a FIFO with no writer where the scan opens a file, so the
//! `open` blocks in the kernel exactly like a hung filesystem. Every such read must end as
//! unreadable evidence naming what timed out, and the scan must go on.

use std::os::unix::fs::{symlink, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use harvester_sim::node::{is_root, HostTree};
use vmrecover::node::{self, NodeFacts, NodeOptions, ScanLimits, VolumeKey};

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: creating block device nodes needs root");
            return;
        }
    };
}

const PV_HELD: &str = "pvc-22222222-0000-4000-8000-000000000001";
const PV_IDLE: &str = "pvc-22222222-0000-4000-8000-000000000002";
const PV_OPEN: &str = "pvc-22222222-0000-4000-8000-000000000003";

const LIMITS: ScanLimits = ScanLimits {
    read: Duration::from_millis(300),
    source: Duration::from_secs(20),
};

/// A FIFO with no writer: opening it for reading blocks until one comes.
struct Fifo(PathBuf);

impl Fifo {
    fn at(path: &Path) -> Fifo {
        let _ = std::fs::remove_file(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo");
        Fifo(path.to_path_buf())
    }
}

impl Drop for Fifo {
    /// Lets the blocked reader go: a writer opens and closes (EOF).
    fn drop(&mut self) {
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(&self.0);
    }
}

fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let t = HostTree::new(root);
    t.longhorn(PV_HELD, "sdb", (8, 16));
    t.dm("dm-4", (254, 4), "vg_guest-root", &["sdb"]);
    t.longhorn(PV_IDLE, "sdc", (8, 32));
    t.partition("sdc", "sdc1", (8, 33), 1);
    t.longhorn(PV_OPEN, "sdd", (8, 48));
    t.mountinfo("25 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n");
    for (pid, comm, target) in [
        (4242, "qemu-kvm", format!("/dev/longhorn/{PV_OPEN}")),
        (4646, "sshd", "socket:[99]".to_string()),
    ] {
        let fd = root.join(format!("proc/{pid}/fd"));
        std::fs::create_dir_all(&fd).expect("mkdir");
        std::fs::write(root.join(format!("proc/{pid}/comm")), format!("{comm}\n")).expect("comm");
        symlink(target, fd.join("3")).expect("fd");
    }
    dir
}

/// Gathers with [`LIMITS`], failing (not hanging) if the gather itself does not return.
fn gather(root: &Path) -> NodeFacts {
    let opts = NodeOptions {
        host_root: root.to_path_buf(),
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(node::gather_with(&opts, LIMITS));
    });
    rx.recv_timeout(Duration::from_secs(120))
        .expect("gather_with did not return: a host read is unbounded")
}

#[test]
fn a_hung_mount_table_is_unreadable_and_not_read_again_while_stuck() {
    require_root!();
    let dir = tree();
    let mountinfo = dir.path().join("proc/1/mountinfo");
    let fifo = Fifo::at(&mountinfo);
    let f = gather(dir.path());
    let err = f.disks.mounts.as_result().expect_err("hung").to_string();
    assert!(err.contains(&mountinfo.display().to_string()), "{err}");
    assert!(err.contains("did not finish within 300ms"), "{err}");
    let idle = f
        .volume_holders_for(&VolumeKey::same(PV_IDLE))
        .expect_err("cannot prove")
        .to_string();
    assert!(
        idle.contains("mounts:") && idle.contains("did not finish"),
        "{idle}"
    );
    // Positive evidence from the other sources still answers.
    let held = f
        .volume_holders_for(&VolumeKey::same(PV_HELD))
        .expect("held");
    assert!(
        held.iter().any(|h| h.starts_with("held by dm-4")),
        "{held:?}"
    );

    // The stuck read is not started again (no thread piles up per pass).
    let again = gather(dir.path());
    let err = again
        .disks
        .mounts
        .as_result()
        .expect_err("still hung")
        .to_string();
    assert!(err.contains("stuck"), "{err}");
    drop(fifo);
}

#[test]
fn a_hung_process_is_unreadable_and_the_others_are_still_read() {
    require_root!();
    let dir = tree();
    // The scan reads `comm` of a process that holds a volume.
    let comm = dir.path().join("proc/4242/comm");
    let fifo = Fifo::at(&comm);
    let f = gather(dir.path());
    let open = f.disks.open_files.value().expect("the scan ran");
    let hung = open
        .unreadable
        .iter()
        .find(|u| u.pid == 4242)
        .unwrap_or_else(|| panic!("pid 4242 not unreadable: {open:?}"));
    assert!(hung.timed_out);
    assert!(
        hung.reason.contains("open files of pid 4242"),
        "{}",
        hung.reason
    );
    assert!(
        hung.reason
            .contains(&format!("stuck reading {}", comm.display())),
        "{}",
        hung.reason
    );
    // The processes after it were read.
    assert!(open.scanned >= 1, "{open:?}");
    let err = f
        .volume_holders_for(&VolumeKey::same(PV_OPEN))
        .expect_err("its holder could not be read")
        .to_string();
    assert!(err.contains("pid 4242"), "{err}");
    drop(fifo);
}

#[test]
fn a_hung_sysfs_read_is_unreadable() {
    require_root!();
    let dir = tree();
    let t = HostTree::new(dir.path());
    let dev = t.dir_of("sdc1").join("dev");
    let fifo = Fifo::at(&dev);
    let f = gather(dir.path());
    let err = f
        .disks
        .kernel_holders
        .as_result()
        .expect_err("hung")
        .to_string();
    assert!(err.contains("did not finish within 300ms"), "{err}");
    assert!(err.contains("sdc1/dev"), "{err}");
    assert!(f.volume_holders_for(&VolumeKey::same(PV_IDLE)).is_err());
    drop(fifo);
}

/// The host identity files are bounded too (a FIFO where `etc/machine-id` should be).
#[test]
fn a_hung_identity_read_is_unreadable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("etc/machine-id");
    let fifo = Fifo::at(&path);
    let id = node::identity::read_with(dir.path(), Duration::from_millis(300));
    let err = id.as_result().expect_err("hung").to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("did not finish within 300ms"), "{err}");
    drop(fifo);
}
