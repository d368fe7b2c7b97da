//! Prints load and list figures for a large simulated cluster: 50 nodes, 5,000 VMIs and
//! 5,000 launcher pods. Run with `cargo run -p harvester-sim --example store_bench --release`.

use std::time::Instant;

use bytes::Bytes;
use harvester_sim::{Sim, SimConfig};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const NODES: usize = 50;
const VMIS: usize = 5_000;

fn scenario() -> String {
    let mut s = String::from(
        "apiVersion: sim.vmrecover.dev/v1\nkind: SimulatorSettings\nvirtController: false\n",
    );
    s.push_str("---\napiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n");
    for n in 0..NODES {
        s.push_str(&format!(
            "---\napiVersion: v1\nkind: Node\nmetadata: {{name: node-{n}}}\n"
        ));
    }
    for i in 0..VMIS {
        let node = i % NODES;
        s.push_str(&format!(
            "---\napiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata:\n  name: vm-{i}\n  namespace: default\n  uid: vmi-{i}\n  labels: {{kubevirt.io/nodeName: node-{node}}}\n  finalizers: [kubevirt.io/foregroundDeleteVirtualMachine]\nspec: {{domain: {{devices: {{}}}}}}\nstatus: {{phase: Running, nodeName: node-{node}}}\n"
        ));
        s.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: virt-launcher-vm-{i}-abcde\n  namespace: default\n  labels: {{kubevirt.io: virt-launcher, kubevirt.io/created-by: vmi-{i}}}\n  ownerReferences: [{{apiVersion: kubevirt.io/v1, kind: VirtualMachineInstance, name: vm-{i}, uid: vmi-{i}, controller: true}}]\nspec: {{nodeName: node-{node}, containers: [{{name: compute, image: x}}]}}\nstatus: {{phase: Running}}\n"
        ));
    }
    s
}

async fn get(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: &str,
) -> anyhow::Result<usize> {
    let resp = client.get(url.parse()?).await?;
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(body.len())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let text = scenario();
    let t = Instant::now();
    let sim = Sim::start(SimConfig::default().plain_http().scenario_text(text)).await?;
    println!(
        "load: {} objects from YAML in {:?}",
        NODES + 1 + 2 * VMIS,
        t.elapsed()
    );
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let base = sim.url();
    let rounds: u32 = 50;
    let t = Instant::now();
    let mut bytes = 0;
    for r in 0..rounds as usize {
        bytes += get(&client, &format!("{base}/apis/kubevirt.io/v1/virtualmachineinstances?labelSelector=kubevirt.io%2FnodeName%3Dnode-{}", r % NODES)).await?;
    }
    println!(
        "list VMIs by node label (100 of {VMIS}): {:?} per request, {} bytes each",
        t.elapsed() / rounds,
        bytes / rounds as usize
    );
    let t = Instant::now();
    for r in 0..rounds as usize {
        get(
            &client,
            &format!(
                "{base}/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-{}",
                r % NODES
            ),
        )
        .await?;
    }
    println!(
        "list pods by spec.nodeName (100 of {VMIS}): {:?} per request",
        t.elapsed() / rounds
    );
    let t = Instant::now();
    let n = get(
        &client,
        &format!("{base}/apis/kubevirt.io/v1/virtualmachineinstances?limit=500"),
    )
    .await?;
    println!("first page of 500 VMIs: {:?}, {n} bytes", t.elapsed());
    let t = Instant::now();
    let n = get(
        &client,
        &format!("{base}/apis/kubevirt.io/v1/virtualmachineinstances"),
    )
    .await?;
    println!("all {VMIS} VMIs: {:?}, {n} bytes", t.elapsed());
    sim.set_virt_controller(true);
    let t = Instant::now();
    sim.set_virt_controller(false);
    sim.set_virt_controller(true);
    println!(
        "full controller sweep over {} objects: {:?}",
        NODES + 1 + 2 * VMIS,
        t.elapsed() / 2
    );
    Ok(())
}
