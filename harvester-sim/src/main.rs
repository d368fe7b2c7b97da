//! `harvester-sim` command: run the simulated Harvester API server until killed; or,
//! with a subcommand, lay out a simulated node for vmrecover (its host root and fake VM
//! process binaries) and exit.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use harvester_sim::node::{fake_bin_dir, HostRoot, BOOT_ID, MACHINE_ID};
use harvester_sim::{Identity, SettingsPatch, Sim, SimConfig};

/// Simulated Harvester (Kubernetes + KubeVirt + Longhorn) API server for vmrecover's tests.
#[derive(Debug, Parser)]
#[command(
    name = "harvester-sim",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Args {
    /// Lay out a simulated node instead of serving.
    #[command(subcommand)]
    node: Option<NodeCommand>,
    /// Address to listen on (loopback; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write a kubeconfig for the simulator here.
    #[arg(long, required = true)]
    kubeconfig_out: Option<PathBuf>,
    /// Scenario file(s) to load (multi-document YAML); repeatable, merged in order.
    #[arg(long)]
    scenario: Vec<PathBuf>,
    /// Append every request as a JSON line to this file.
    #[arg(long)]
    log_requests: Option<PathBuf>,
    /// Kubernetes version (e.g. v1.29.9+rke2r1), overriding the release's and the scenario's:
    /// reported at /version and deciding what is served (the policy API from 1.30, ...).
    #[arg(long)]
    kube_version: Option<String>,
    /// Enforce RBAC from these manifests (files or directories, e.g. deploy/): their
    /// ClusterRoles, Roles, bindings and ServiceAccounts; other kinds and kustomization files
    /// are skipped. The --kubeconfig-out kubeconfig stays admin (system:masters).
    #[arg(long, num_args = 1..)]
    rbac: Vec<PathBuf>,
    /// Also write a kubeconfig that authenticates as --service-account here.
    #[arg(long)]
    sa_kubeconfig_out: Option<PathBuf>,
    /// The ServiceAccount of --sa-kubeconfig-out, as NAMESPACE/NAME.
    #[arg(long, default_value = "harvester-system/vmrecover")]
    service_account: String,
    /// Serve plain HTTP instead of HTTPS (a request without credentials is then the admin).
    #[arg(long)]
    plain_http: bool,
    /// Also write the CA of the serving certificate (PEM) here, e.g. for a pod's `ca.crt`.
    #[arg(long)]
    ca_out: Option<PathBuf>,
    /// Generate the scenarios for this Harvester release (1.4 = v1.4.0 on Kubernetes 1.29,
    /// 1.4.3, 1.5 … 1.8): their objects are rewritten into its finalizers, labels and
    /// versions, its Kubernetes version is served, and its controllers run. Unknown: refused.
    #[arg(long)]
    release: Option<String>,
}

/// A simulated node's parts, for the demo and for trying vmrecover by hand.
#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Write the host root of a node with nothing of a VM on it (`--host-root` for
    /// vmrecover): its machine-id and boot id, `/dev/longhorn`, sysfs, the mount table.
    HostRoot {
        /// The directory to write it in (created when missing).
        dir: PathBuf,
        /// The machine's id (default: harvester-node-1's in the shipped scenarios).
        #[arg(long, default_value = MACHINE_ID)]
        machine_id: String,
        /// This boot's id (default: the one harvester-node-1's kubelet reported).
        #[arg(long, default_value = BOOT_ID)]
        boot_id: String,
    },
    /// Build the fake virt-launcher/qemu executables (needs `cc`) and print their directory.
    FakeVmBin,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.node {
        Some(NodeCommand::HostRoot {
            dir,
            machine_id,
            boot_id,
        }) => {
            HostRoot::empty_node(&dir, &machine_id, &boot_id);
            return Ok(());
        }
        Some(NodeCommand::FakeVmBin) => {
            println!("{}", fake_bin_dir().display());
            return Ok(());
        }
        None => {}
    }
    let kubeconfig_out = args
        .kubeconfig_out
        .ok_or_else(|| anyhow::anyhow!("--kubeconfig-out is required"))?;
    let cfg = SimConfig {
        listen: args.listen,
        scenario_files: args.scenario,
        scenario_texts: Vec::new(),
        settings: SettingsPatch {
            kube_version: args.kube_version,
            ..SettingsPatch::default()
        },
        log_file: args.log_requests,
        kubeconfig_out: Some(kubeconfig_out),
        rbac_files: args.rbac,
        rbac_texts: Vec::new(),
        plain_http: args.plain_http,
        release: args.release,
    };
    let sa = Identity::parse_service_account(&args.service_account)
        .map_err(|e| anyhow::anyhow!("--service-account: {e}"))?;
    // Before the server answers anything: a SIGTERM sent as soon as it answers must end it
    // cleanly (exit 0), not kill it.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let sim = Sim::start(cfg).await?;
    if let Some(p) = &args.sa_kubeconfig_out {
        sim.write_kubeconfig_as(&sa, p)?;
    }
    if let (Some(p), Some(ca)) = (&args.ca_out, sim.ca_pem()) {
        std::fs::write(p, ca)?;
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", sim.addr())?;
        out.flush()?;
    }
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    sim.shutdown();
    Ok(())
}
