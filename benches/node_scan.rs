//! Benchmark of node evidence gathering: the process scan over a process table of more
//! than 2,000 real processes, and disk evidence over a host root with 500 Longhorn
//! volumes. Prints its figures; run with `cargo bench --bench node_scan`.
//!
//! Environment: `NODE_SCAN_PROCESSES` (default 2000) extra `sleep` processes,
//! `NODE_SCAN_ITERATIONS` (default 30), `NODE_SCAN_VOLUMES` (default 500).

#[path = "../tests/fixtures/node/support.rs"]
mod support;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;
use vmrecover::node::{self, csi_paths, processes, volumes, NodeFacts, NodeOptions};

/// Children killed and reaped on drop, panic included.
struct Fleet(Vec<Child>);

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

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn stats(label: &str, mut d: Vec<Duration>) {
    d.sort();
    let pick = |q: f64| {
        let idx = ((d.len() as f64 - 1.0) * q).round() as usize;
        d.get(idx).copied().unwrap_or_default()
    };
    let ms = |x: Duration| x.as_secs_f64() * 1e3;
    println!(
        "{label:<48} n={:<3} min {:>7.2} ms  median {:>7.2} ms  p95 {:>7.2} ms  max {:>7.2} ms",
        d.len(),
        ms(pick(0.0)),
        ms(pick(0.5)),
        ms(pick(0.95)),
        ms(pick(1.0))
    );
}

fn time<T>(iterations: usize, mut f: impl FnMut() -> T) -> Vec<Duration> {
    // Two warm-up runs (page cache, dentries).
    for _ in 0..2 {
        std::hint::black_box(f());
    }
    (0..iterations)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed()
        })
        .collect()
}

fn process_count() -> usize {
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

fn main() {
    // `cargo bench` passes `--bench`; any other argument is a filter we do not use.
    let extra = env_usize("NODE_SCAN_PROCESSES", 2000);
    let iterations = env_usize("NODE_SCAN_ITERATIONS", 30);
    let volumes_n = env_usize("NODE_SCAN_VOLUMES", 500);

    println!("node_scan: spawning {extra} sleep processes and 30 fake VM processes …");
    let mut fleet = Fleet(Vec::with_capacity(extra));
    for _ in 0..extra {
        match Command::new("sleep")
            .arg("600")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => fleet.0.push(c),
            Err(e) => {
                eprintln!("node_scan: stopped spawning after {}: {e}", fleet.0.len());
                break;
            }
        }
    }
    let mut vms = Vec::new();
    for i in 0..10 {
        let uid = format!("{i:08x}-0000-4000-8000-000000000000");
        let name = format!("vm-{i:02}");
        vms.push(FakeProc::spawn(
            MONITOR,
            "/usr/bin/virt-launcher-monitor",
            &launcher_args("default", &name, &uid),
            &FakeOpts::default(),
        ));
        vms.push(FakeProc::spawn(
            LAUNCHER,
            "/usr/bin/virt-launcher",
            &launcher_args("default", &name, &uid),
            &FakeOpts::default(),
        ));
        vms.push(FakeProc::spawn(
            QEMU,
            "/usr/bin/qemu-system-x86_64",
            &qemu_args("default", &name, &uid),
            &FakeOpts::default(),
        ));
    }
    let table = process_count();
    println!("node_scan: process table has {table} processes");

    let found = processes::scan(Path::new("/"));
    let n_vm = found.value().map(Vec::len).unwrap_or(0);
    println!("node_scan: the scan finds {n_vm} VM processes (30 started by the benchmark)");

    stats(
        &format!("process scan ({table} processes)"),
        time(iterations, || processes::scan(Path::new("/"))),
    );
    stats(
        &format!("full gather, host root / ({table} processes)"),
        time(iterations.min(15), || {
            node::gather(&NodeOptions {
                host_root: "/".into(),
            })
        }),
    );
    drop(vms);
    drop(fleet);

    let tree = disk_tree(volumes_n);
    stats(
        &format!("disk evidence ({volumes_n} volumes, fixture tree)"),
        time(iterations, || volumes::gather(tree.path())),
    );
    let facts = NodeFacts {
        host_root: tree.path().display().to_string(),
        processes: vmrecover::evidence::Gathered::read(Vec::new()),
        disks: volumes::gather(tree.path()),
    };
    let names: Vec<String> = (0..volumes_n).map(pv).collect();
    stats(
        &format!("volume_holders for all {volumes_n} volumes"),
        time(iterations, || {
            names
                .iter()
                .filter(|v| {
                    facts
                        .volume_holders(v)
                        .map(|h| !h.is_empty())
                        .unwrap_or(true)
                })
                .count()
        }),
    );
    let held = names
        .iter()
        .filter(|v| {
            facts
                .volume_holders(v)
                .map(|h| h.len() == 4)
                .unwrap_or(false)
        })
        .count();
    println!(
        "node_scan: {held}/{volumes_n} volumes show all 4 holders (staging, publish, loop, fd)"
    );
}

fn pv(i: usize) -> String {
    format!("pvc-{i:08x}-1111-4222-8333-444444444444")
}

/// A host root with `n` attached Longhorn volumes, each staged, published, held by a
/// loop device and open in one process; plus unrelated processes and mounts.
fn disk_tree(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let mk = |p: &Path| std::fs::create_dir_all(p).expect("mkdir");
    mk(&root.join("dev/longhorn"));
    mk(&root.join("sys/dev/block"));
    let mut mountinfo = String::from(
        "22 1 7:0 / / ro,relatime shared:1 - ext2 /dev/loop0 ro\n\
         23 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs devtmpfs rw,size=4096k,mode=755\n\
         52 22 8:5 /.state/var-lib-kubelet.bind /var/lib/kubelet rw,relatime shared:27 - ext4 /dev/sda5 rw\n",
    );
    for i in 0..n {
        let v = pv(i);
        std::fs::write(root.join(format!("dev/longhorn/{v}")), "").expect("device");
        let pod = format!("{i:08x}-aaaa-4bbb-8ccc-dddddddddddd");
        mountinfo.push_str(&format!(
            "{} 52 8:{} / /var/lib/kubelet/plugins/kubernetes.io/csi/driver.longhorn.io/{}/globalmount rw,relatime shared:{} - ext4 /dev/longhorn/{v} rw\n",
            1000 + 2 * i,
            i % 256,
            csi_paths::staging_hash(&v),
            600 + i
        ));
        mountinfo.push_str(&format!(
            "{} 52 8:{} / /var/lib/kubelet/pods/{pod}/volumes/kubernetes.io~csi/{v}/mount rw,relatime shared:{} - ext4 /dev/longhorn/{v} rw\n",
            1001 + 2 * i,
            i % 256,
            600 + i
        ));
        let loop_dir = root.join(format!("sys/block/loop{i}/loop"));
        mk(&loop_dir);
        std::fs::write(
            loop_dir.join("backing_file"),
            format!("/var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices/publish/{v}/{pod}\n"),
        )
        .expect("backing file");
        let pid = 10_000 + i;
        let fd = root.join(format!("proc/{pid}/fd"));
        mk(&fd);
        std::fs::write(root.join(format!("proc/{pid}/comm")), "qemu-system-x86\n").expect("comm");
        for (n, target) in [
            (0, "/dev/null".to_string()),
            (1, "pipe:[1]".to_string()),
            (2, "socket:[2]".to_string()),
            (17, format!("/dev/longhorn/{v}")),
        ] {
            symlink(target, fd.join(n.to_string())).expect("fd link");
        }
    }
    // Unrelated processes.
    for pid in 20_000..21_500 {
        let fd = root.join(format!("proc/{pid}/fd"));
        mk(&fd);
        for n in 0..3 {
            symlink("/dev/pts/0", fd.join(n.to_string())).expect("fd link");
        }
    }
    mk(&root.join("proc/1"));
    std::fs::write(root.join("proc/1/mountinfo"), mountinfo).expect("mountinfo");
    dir
}
