//! Node-side benchmark helpers: a host-root tree with no VM evidence (every stuck VM is
//! provable), a process table padded with real `sleep` processes, and a host root with
//! `n` Longhorn devices that are staged, published and held open.
#![allow(dead_code)] // shared by two benchmarks that each use part of it

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use vmrecover::node::csi_paths;

/// Children killed and reaped on drop, panic included.
pub struct Fleet(pub Vec<Child>);

impl Drop for Fleet {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

/// Starts `n` idle `sleep` processes (fewer when the system refuses more).
pub fn sleepers(n: usize) -> Fleet {
    let mut fleet = Fleet(Vec::with_capacity(n));
    for _ in 0..n {
        match Command::new("sleep")
            .arg("900")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => fleet.0.push(c),
            Err(e) => {
                eprintln!("bench: stopped spawning after {}: {e}", fleet.0.len());
                break;
            }
        }
    }
    fleet
}

/// Processes in this machine's process table.
pub fn process_count() -> usize {
    std::fs::read_dir("/proc")
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|s| s.parse::<u32>().is_ok())
                })
                .count()
        })
        .unwrap_or(0)
}

fn mk(p: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(p)
}

/// A host root where nothing of any VM runs or is held: the node proves every stuck VM.
pub fn empty_host_root() -> std::io::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    harvester_sim::node::HostRoot::harvester_node_1(dir.path());
    Ok(dir)
}

/// The PV name of volume `i`.
pub fn pv(i: usize) -> String {
    format!("pvc-{i:08x}-1111-4222-8333-444444444444")
}

/// A host root with `n` attached Longhorn volumes, each staged, published, held by a
/// loop device (kubelet's lock on a block volume) and open in one process; plus 1,500
/// unrelated processes. Every volume then shows four holders.
pub fn disk_tree(n: usize) -> std::io::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    mk(&root.join("dev/longhorn"))?;
    mk(&root.join("sys/dev/block"))?;
    let mut mountinfo = String::from(
        "22 1 7:0 / / ro,relatime shared:1 - ext2 /dev/loop0 ro\n\
         23 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs devtmpfs rw,size=4096k,mode=755\n\
         52 22 8:5 /.state/var-lib-kubelet.bind /var/lib/kubelet rw,relatime shared:27 - ext4 /dev/sda5 rw\n",
    );
    for i in 0..n {
        let v = pv(i);
        std::fs::write(root.join(format!("dev/longhorn/{v}")), "")?;
        let pod = format!("{i:08x}-aaaa-4bbb-8ccc-dddddddddddd");
        mountinfo.push_str(&format!(
            "{} 52 8:{} / /var/lib/kubelet/plugins/kubernetes.io/csi/driver.longhorn.io/{}/globalmount rw,relatime shared:{} - ext4 /dev/longhorn/{v} rw\n",
            1000 + 2 * i, i % 256, csi_paths::staging_hash(&v), 600 + i
        ));
        mountinfo.push_str(&format!(
            "{} 52 8:{} / /var/lib/kubelet/pods/{pod}/volumes/kubernetes.io~csi/{v}/mount rw,relatime shared:{} - ext4 /dev/longhorn/{v} rw\n",
            1001 + 2 * i, i % 256, 600 + i
        ));
        let loop_dir = root.join(format!("sys/block/loop{i}/loop"));
        mk(&loop_dir)?;
        std::fs::write(
            loop_dir.join("backing_file"),
            format!("/var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices/publish/{v}/{pod}\n"),
        )?;
        let pid = 10_000 + i;
        let fd = root.join(format!("proc/{pid}/fd"));
        mk(&fd)?;
        std::fs::write(root.join(format!("proc/{pid}/comm")), "qemu-system-x86\n")?;
        for (n, target) in [
            (0, "/dev/null".to_string()),
            (1, "pipe:[1]".to_string()),
            (2, "socket:[2]".to_string()),
            (17, format!("/dev/longhorn/{v}")),
        ] {
            symlink(target, fd.join(n.to_string()))?;
        }
    }
    for pid in 20_000..21_500 {
        let fd = root.join(format!("proc/{pid}/fd"));
        mk(&fd)?;
        for n in 0..3 {
            symlink("/dev/pts/0", fd.join(n.to_string()))?;
        }
    }
    mk(&root.join("proc/1"))?;
    symlink("/proc/self", root.join("proc/self"))?;
    std::fs::write(root.join("proc/1/mountinfo"), mountinfo)?;
    Ok(dir)
}

/// Writes a host identity (`/etc/machine-id`, this boot's id) under `root`, so the Node
/// that reports the same ids is proven to be this host.
pub fn write_identity(root: &Path, machine_id: &str, boot_id: &str) -> std::io::Result<()> {
    harvester_sim::node::HostRoot::at(root).identity(machine_id, boot_id);
    Ok(())
}
