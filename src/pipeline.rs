//! The imperative shell around the planner: gather every fact (boot, node, cluster,
//! intents) for `status`, `run` and the agent alike.

use std::sync::Arc;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Node;
use kube::Client;

use crate::boot::{self, BootFacts};
use crate::cluster::{self, AlsoRead, ClusterFacts, ConnectError};
use crate::config::Config;
use crate::evidence::Gathered;
use crate::node;
use crate::recovery::{Facts, IntentStore, IntentsState, Narrow, Regather, SeenVmi};

/// Everything gathered for one decision round.
pub struct Gathering {
    /// The planner's input.
    pub facts: Facts,
    /// The full boot evidence (for status).
    pub boot: BootFacts,
    /// The API client, or why there is none.
    pub client: Result<Client, ConnectError>,
    /// The resourceVersion this node's VMIs were listed at (where a watch of them starts).
    pub vmis_version: Option<String>,
}

/// Connects to the cluster and checks that the configured node is one of its Nodes; gives
/// the client and that Node, which the next gather may reuse.
pub async fn connect(cfg: &Config) -> Result<(Client, Node), ConnectError> {
    cluster::connect_to_node(&cfg.cluster, &cfg.node).await
}

/// The boot evidence alone (the agent's start-up check).
pub async fn gather_boot(cfg: &Config) -> BootFacts {
    let opts = cfg.boot.clone();
    match tokio::task::spawn_blocking(move || boot::gather(&opts, jiff::Timestamp::now())).await {
        Ok(b) => b,
        // The boot check only fails by panicking, which is a bug: let it surface.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Gathers all facts. Never fails: what cannot be read is `Unreadable` in the facts.
/// `client` is reused when given (the agent keeps one).
pub async fn gather(cfg: &Config, client: Option<Client>) -> Gathering {
    let connected = match client {
        Some(c) => Ok((c, None)),
        None => connect(cfg).await.map(|(c, n)| (c, Some(n))),
    };
    gather_connected(cfg, connected).await
}

/// [`gather`] through `client`, reusing `known_node` (this node's Node as the connect
/// check read it moments ago) instead of reading it again.
pub async fn gather_reusing(cfg: &Config, client: Client, known_node: Option<Node>) -> Gathering {
    gather_connected(cfg, Ok((client, known_node))).await
}

async fn gather_connected(
    cfg: &Config,
    connected: Result<(Client, Option<Node>), ConnectError>,
) -> Gathering {
    let boot_opts = cfg.boot.clone();
    let node_opts = cfg.node_evidence.clone();
    // The node first: the cluster reads look up the VMIs its processes claim.
    let fenced = cfg.policy.fenced;
    let local = tokio::task::spawn_blocking(move || {
        let boot = boot::gather(&boot_opts, jiff::Timestamp::now());
        // A fenced node is declared off by a person: this machine's evidence says nothing
        // about it, so none is read.
        let local = if fenced {
            node::NodeFacts::declared_off(&node_opts)
        } else {
            node::gather(&node_opts)
        };
        (boot, local)
    });
    let state = IntentStore::new(&cfg.state_dir).load_state();
    let (client, known_node) = match connected {
        Ok((c, n)) => (Ok(c), n),
        Err(e) => (Err(e), None),
    };
    // The scan only fails by panicking, which is a bug: let it surface.
    let (boot, local) = match local.await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    let (cluster, vmis_version) = match &client {
        Ok(c) => {
            let mut also = also_read(&state.value().cloned().unwrap_or_default());
            also.claimed_vmis = claimed_by(&local);
            also.namespace = Some(cfg.cluster.namespace.clone());
            also.fenced = fenced;
            also.fence_watch = cfg.policy.fence_watch;
            let read = cluster::gather_with(c, &cfg.node, &also, known_node).await;
            (read.facts, read.vmis_version)
        }
        Err(why) => (
            ClusterFacts::unreachable(&cfg.node, "the Kubernetes API", &why.to_string()),
            None,
        ),
    };
    let (now, boot_time) = server_clock(boot.boot_time.clone());
    let facts = Facts {
        host: local.identity.clone(),
        now,
        node: cfg.node.clone(),
        boot_time,
        verdict: boot.verdict.verdict,
        local,
        cluster,
        intents: state.clone().map(|s| s.intents),
        seen: state.map(|s| s.seen),
    };
    Gathering {
        facts,
        boot,
        client,
        vmis_version,
    }
}

/// The planner's clock (issue 23, docs/safety.md "Clocks"): the API server's now (its
/// responses' `Date`), and this boot's start in the server's time (server now − uptime on
/// CLOCK_BOOTTIME), so "stuck for --stuck-after" never compares this node's wall clock
/// with a time the API server wrote. Before any response carried a `Date` (no API: nothing
/// is changed anyway) the local clock and `local_boot` stand in.
fn server_clock(
    local_boot: Gathered<jiff::Timestamp>,
) -> (jiff::Timestamp, Gathered<jiff::Timestamp>) {
    match cluster::server_now() {
        Some(now) => (now, boot_time_at(now)),
        None => (jiff::Timestamp::now(), local_boot),
    }
}

/// This boot's start as `now − CLOCK_BOOTTIME`.
fn boot_time_at(now: jiff::Timestamp) -> Gathered<jiff::Timestamp> {
    match boot::clock::since_boot().as_result() {
        Ok(up) => match boot::clock::boot_time(now, *up) {
            Some(t) => Gathered::read(t),
            None => Gathered::unreadable("CLOCK_BOOTTIME", "out of range"),
        },
        Err(why) => Gathered::unreadable("CLOCK_BOOTTIME", why.to_string()),
    }
}

/// The VMIs (namespace, name) that VM processes on this node name.
fn claimed_by(local: &node::NodeFacts) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = local
        .processes
        .value()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| Some((p.namespace.clone()?, p.name.clone()?)))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out.dedup();
    out
}

/// The VMs and PVCs that earlier runs' recovery intents name, and the disks recorded for
/// them and for the VMIs seen deciding.
fn also_read(state: &IntentsState) -> AlsoRead {
    let intents = &state.intents;
    AlsoRead {
        vms: intents
            .iter()
            .map(|i| (i.namespace.clone(), i.name.clone()))
            .collect(),
        pvcs: intents
            .iter()
            .flat_map(|i| i.pvcs.iter().map(|c| (i.namespace.clone(), c.clone())))
            .collect(),
        claimed_vmis: Vec::new(),
        disks: intents
            .iter()
            .flat_map(|i| i.disks.iter())
            .map(|d| (d.pv.clone(), d.handle.clone()))
            .collect(),
        seen_disks: state
            .seen
            .iter()
            .flat_map(|s| {
                s.disks.iter().map(|d| {
                    (
                        (s.namespace.clone(), s.name.clone()),
                        d.pv.clone(),
                        d.handle.clone(),
                    )
                })
            })
            .collect(),
        namespace: None,
        fenced: false,
        narrow: None,
        fence_watch: std::time::Duration::ZERO,
        own_holder: None,
        va_cache: None,
    }
}

/// The re-check's reads (issue 23): this node's facts as [`gather`] reads them, the
/// per-VM objects only for the VMs re-checked, without the boot journal (the boot's start
/// is now − uptime, read again).
pub struct Regatherer {
    cfg: Config,
    client: Client,
    vas: cluster::VaCache,
}

impl Regatherer {
    /// Re-checks for `cfg`'s node through `client`.
    pub fn new(cfg: &Config, client: Client) -> Arc<Self> {
        Arc::new(Regatherer {
            cfg: cfg.clone(),
            client,
            vas: cluster::VaCache::new(cfg.cluster.tuning.recheck_max_age),
        })
    }
}

impl Regather for Regatherer {
    fn facts<'a>(&'a self, narrow: &'a Narrow) -> BoxFuture<'a, Facts> {
        Box::pin(regather(&self.cfg, &self.client, &self.vas, narrow))
    }
}

async fn regather(cfg: &Config, client: &Client, vas: &cluster::VaCache, narrow: &Narrow) -> Facts {
    let node_opts = cfg.node_evidence.clone();
    let fenced = cfg.policy.fenced;
    let local = tokio::task::spawn_blocking(move || {
        if fenced {
            node::NodeFacts::declared_off(&node_opts)
        } else {
            node::gather(&node_opts)
        }
    });
    let state = IntentStore::new(&cfg.state_dir).load_state();
    let local = match local.await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    let narrowed = state
        .value()
        .map(|s| IntentsState {
            intents: s
                .intents
                .iter()
                .filter(|i| narrow.vm_uids.contains(&i.vm_uid))
                .cloned()
                .collect(),
            seen: s
                .seen
                .iter()
                .filter(|v| narrow.vmis.contains(&(v.namespace.clone(), v.name.clone())))
                .cloned()
                .collect(),
        })
        .unwrap_or_default();
    let mut also = also_read(&narrowed);
    also.claimed_vmis = claimed_by(&local);
    also.namespace = Some(cfg.cluster.namespace.clone());
    also.fenced = fenced;
    // A fenced run is a person's `run`: its own renewals of NODE's Lease are no sign of life.
    also.own_holder =
        fenced.then(|| crate::recovery::lease_identity(crate::recovery::Mode::Manual, &cfg.node));
    also.narrow = Some(narrow.vmis.clone());
    also.va_cache = Some(vas.clone());
    let cluster = cluster::gather(client, &cfg.node, &also).await;
    let local_now = jiff::Timestamp::now();
    let (now, boot_time) = server_clock(boot_time_at(local_now));
    Facts {
        host: local.identity.clone(),
        now,
        node: cfg.node.clone(),
        boot_time,
        // The verdict decides nothing in `plan()`: the agent gates on it before planning.
        verdict: boot::Verdict::Unknown,
        local,
        cluster,
        intents: state.clone().map(|s| s.intents),
        seen: state.map(|s| s.seen),
    }
}

/// Records the disks of this node's deciding VMIs not seen before (issue 23: a PVC
/// replaced later is then told by its UID). Called by the agent's passes and by `run`
/// (not by a dry run or `status`, which write nothing); a failure is logged and changes no
/// decision: the proof then has only what the cluster still says.
pub fn record_seen(cfg: &Config, facts: &Facts) {
    // Nothing new (or the file unreadable, which refuses every change anyway): no write.
    let Some(current) = facts.seen.value() else {
        return;
    };
    if crate::recovery::next_seen(facts, current).is_none() {
        return;
    }
    let store = IntentStore::new(&cfg.state_dir);
    match store.update_seen(|current: &[SeenVmi]| crate::recovery::next_seen(facts, current)) {
        Ok(true) => tracing::debug!("recorded the disks of newly seen deciding VMIs"),
        Ok(false) => {}
        Err(e) => tracing::warn!("cannot record the disks of the deciding VMIs seen: {e:#}"),
    }
}
