//! Benchmark of node evidence gathering: the process scan over a process table of more
//! than 2,000 real processes, and disk evidence over a host root with 500 Longhorn
//! volumes. Prints its figures; run with `cargo bench --bench bench -- node_scan`.
//!
//! Environment: `NODE_SCAN_PROCESSES` (default 2000) extra `sleep` processes,
//! `NODE_SCAN_ITERATIONS` (default 30), `NODE_SCAN_VOLUMES` (default 500).

use crate::node as bench_node;

use std::path::Path;
use std::time::{Duration, Instant};

use bench_node::{disk_tree, process_count, pv, sleepers};
use harvester_sim::node::*;
use vmrecover::node::{self, processes, volumes, NodeFacts, NodeOptions};

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

/// Runs the benchmark and prints its figures.
pub fn run() {
    let extra = env_usize("NODE_SCAN_PROCESSES", 2000);
    let iterations = env_usize("NODE_SCAN_ITERATIONS", 30);
    let volumes_n = env_usize("NODE_SCAN_VOLUMES", 500);

    println!("node_scan: spawning {extra} sleep processes and 30 fake VM processes …");
    let fleet = sleepers(extra);
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

    let tree = disk_tree(volumes_n).expect("build the disk fixture tree");
    stats(
        &format!("disk evidence ({volumes_n} volumes, fixture tree)"),
        time(iterations, || volumes::gather(tree.path())),
    );
    let facts = NodeFacts {
        host_root: tree.path().display().to_string(),
        processes: vmrecover::evidence::Gathered::read(Vec::new()),
        disks: volumes::gather(tree.path()),
        identity: node::identity::read(tree.path()),
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
