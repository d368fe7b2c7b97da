//! The benchmarks: one binary (as the tests are), each benchmark a module that prints its
//! figures and never asserts a time. Figures and the machine they ran on: docs/performance.md.
//!
//! Run one: `cargo bench --bench bench -- NAME` with NAME `recovery_scale`, `fleet`,
//! `node_scan` or `sim_lists` (each module's doc lists its environment); with no NAME all
//! run in turn.

mod agent;
mod fleet;
mod footprint;
mod journal;
mod node;
mod node_scan;
mod recovery_scale;
mod requests;
mod scenario;
mod sim_lists;

/// The benchmarks by name.
const BENCHES: [(&str, fn()); 4] = [
    ("recovery_scale", recovery_scale::run),
    ("fleet", fleet::run),
    ("node_scan", node_scan::run),
    ("sim_lists", sim_lists::run),
];

/// The runtime the asynchronous benchmarks run on (two workers: the machines they are
/// measured on have two cores).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn main() {
    // `cargo bench` passes `--bench`; the other arguments name benchmarks.
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if let Some(unknown) = wanted
        .iter()
        .find(|w| !BENCHES.iter().any(|(name, _)| name == w))
    {
        let names: Vec<&str> = BENCHES.iter().map(|(n, _)| *n).collect();
        eprintln!(
            "bench: no benchmark {unknown:?}; there are {}",
            names.join(", ")
        );
        std::process::exit(2);
    }
    for (name, run) in BENCHES {
        if wanted.is_empty() || wanted.iter().any(|w| w == name) {
            run();
        }
    }
}
