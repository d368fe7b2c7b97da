//! The imperative shell around the planner: gather every fact (boot, node, cluster,
//! intents) for `status`, `run` and the agent alike.

use kube::Client;

use crate::boot::{self, BootFacts, BootOptions};
use crate::cli::GlobalArgs;
use crate::cluster::{self, snapshot::ClusterFacts};
use crate::node::{self, NodeOptions};
use crate::recovery::intents::IntentStore;
use crate::recovery::model::Facts;

/// Everything gathered for one decision round.
pub struct Gathering {
    /// The planner's input.
    pub facts: Facts,
    /// The full boot evidence (for status).
    pub boot: BootFacts,
    /// The API client, or why there is none.
    pub client: Result<Client, String>,
}

/// This node's name: `--node`/`NODE_NAME`, else the hostname.
pub fn node_name(global: &GlobalArgs) -> Result<String, String> {
    if let Some(n) = global.node.as_ref().filter(|n| !n.is_empty()) {
        return Ok(n.clone());
    }
    nix::unistd::gethostname()
        .map_err(|e| format!("cannot read the hostname ({e}): pass --node"))?
        .into_string()
        .map_err(|_| "the hostname is not UTF-8: pass --node".to_string())
}

/// The boot options the global flags give.
pub fn boot_options(global: &GlobalArgs) -> BootOptions {
    BootOptions {
        state_dir: global.state_dir.clone(),
        journal_dir: global.journal_dir.clone(),
        journal_tail: global.journal_tail,
        host_root: global.host_root.clone(),
    }
}

/// Connects to the cluster and checks that `node` is one of its Nodes.
pub async fn connect(global: &GlobalArgs, node: &str) -> Result<Client, String> {
    let client = cluster::client::connect(global.kubeconfig.as_deref())
        .await
        .map_err(|e| format!("{e:#}"))?;
    cluster::gather::check_node(&client, node).await?;
    Ok(client)
}

/// Gathers all facts. Never fails: what cannot be read is `Unreadable` in the facts.
/// `client` is reused when given (the agent keeps one).
pub async fn gather(global: &GlobalArgs, node: &str, client: Option<Client>) -> Gathering {
    let boot_opts = boot_options(global);
    let node_opts = NodeOptions {
        host_root: global.host_root.clone(),
    };
    let local = tokio::task::spawn_blocking(move || {
        let boot = boot::gather(&boot_opts, jiff::Timestamp::now());
        (boot, node::gather(&node_opts))
    });
    let intents = IntentStore::new(&global.state_dir).load();
    let client = match client {
        Some(c) => Ok(c),
        None => connect(global, node).await,
    };
    let cluster = match &client {
        Ok(c) => {
            let known = intents.value().cloned().unwrap_or_default();
            cluster::gather::gather(c, node, &known).await
        }
        Err(why) => ClusterFacts::unreachable(node, "the Kubernetes API", why),
    };
    // The scan only fails by panicking, which is a bug: let it surface.
    let (boot, local) = match local.await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    let facts = Facts {
        now: jiff::Timestamp::now(),
        node: node.to_string(),
        boot_time: boot.boot_time.clone(),
        verdict: boot.verdict.verdict,
        local,
        cluster,
        intents,
    };
    Gathering {
        facts,
        boot,
        client,
    }
}
