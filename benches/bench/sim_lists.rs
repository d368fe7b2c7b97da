//! Issue 28's growth curve, the simulator's side: what one node's selected list costs the
//! simulator as the site grows, with its label and field indexes and with a scan of every
//! object (what it did before). For each site size (5,000 VMs over 50 nodes and 20,000 over
//! 200, the fleet benchmark's worlds), a healthy node's VMIs by `kubevirt.io/nodeName` and
//! its launcher pods by label and `spec.nodeName`: the store's list and the JSON encoding the
//! server sends, in-process, median of 15; beside it the copy of every object of the
//! resource, which the scan made before matching until issue 28. Never asserts a time.
//!
//! Run: `cargo bench --bench bench -- sim_lists` (environment: `BENCH_SIM_SIZES`, site sizes
//! as `VMS/NODES` separated by commas, default `5000/50,20000/200`).

use std::time::Instant;

use harvester_sim::store::{ListQuery, Store};
use harvester_sim::{Sim, SimConfig};

use crate::scenario;

const ROUNDS: usize = 15;

fn sizes() -> Vec<(usize, usize)> {
    std::env::var("BENCH_SIM_SIZES")
        .unwrap_or_else(|_| "5000/50,20000/200".into())
        .split(',')
        .filter_map(|s| {
            let (v, n) = s.trim().split_once('/')?;
            Some((v.parse().ok()?, n.parse().ok()?))
        })
        .collect()
}

/// Median milliseconds of `f` over [`ROUNDS`] runs.
fn median_ms(mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Median milliseconds of a list and its encoding, and the bytes and items it answered.
fn time_list(store: &Store, res: usize, q: &ListQuery) -> (f64, usize, usize) {
    let (mut bytes, mut items) = (0, 0);
    let ms = median_ms(|| {
        let list = store.list(res, None, q);
        if let Ok(l) = &list {
            bytes = serde_json::to_vec(l).map_or(0, |e| e.len());
            items = l["items"].as_array().map_or(0, Vec::len);
        }
    });
    (ms, bytes, items)
}

/// Runs the benchmark and prints its figures.
pub fn run() {
    crate::runtime().block_on(bench());
}

async fn bench() {
    let (Some(vmis), Some(pods)) = (
        harvester_sim::resources::find("kubevirt.io", "v1", "virtualmachineinstances"),
        harvester_sim::resources::find("", "v1", "pods"),
    ) else {
        eprintln!("sim_lists: the simulator serves no VMIs or pods");
        return;
    };
    println!("sim_lists: one healthy node's selected lists, median of {ROUNDS}, in-process");
    for (total, nodes) in sizes() {
        let shape = scenario::Shape {
            total,
            nodes,
            stuck: 300,
            namespaces: 10,
            stuck_nodes: 3,
        };
        let generated = scenario::generate(&shape);
        let sim = match Sim::start(SimConfig::default().scenario_text(generated.text)).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("sim: cannot start: {e:#}");
                return;
            }
        };
        // A healthy node: past the stuck ones.
        let node = format!(
            "harvester-node-{}",
            scenario::NODE_INDEX + shape.stuck_nodes
        );
        let queries = [
            (
                "VMIs by kubevirt.io/nodeName",
                vmis,
                ListQuery {
                    label_selector: Some(format!("kubevirt.io/nodeName={node}")),
                    ..ListQuery::default()
                },
            ),
            (
                "launcher pods by label and spec.nodeName",
                pods,
                ListQuery {
                    label_selector: Some("kubevirt.io=virt-launcher".into()),
                    field_selector: Some(format!("spec.nodeName={node}")),
                    ..ListQuery::default()
                },
            ),
        ];
        println!(
            "\n{total} VMs over {nodes} nodes ({} objects, {} VMIs, {} pods stored):",
            generated.objects,
            sim.store().count(vmis),
            sim.store().count(pods)
        );
        for (what, res, q) in &queries {
            sim.store().set_select_indexed(true);
            let (indexed, bytes, items) = time_list(sim.store(), *res, q);
            sim.store().set_select_indexed(false);
            let (scanned, _, _) = time_list(sim.store(), *res, q);
            sim.store().set_select_indexed(true);
            let copied = median_ms(|| drop(sim.store().all(*res)));
            println!(
                "  {what:<42} {items} items, {:.2} MiB: indexed {indexed:.2} ms, scanning every object {scanned:.2} ms, copying every object {copied:.2} ms",
                bytes as f64 / (1024.0 * 1024.0)
            );
        }
        sim.shutdown();
    }
}
