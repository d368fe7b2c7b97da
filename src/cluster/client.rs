//! Building the Kubernetes client from `--kubeconfig`, the environment or in-cluster config.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::errors::describe;
use super::retry::with_retries;
use crate::config::ClusterConfig;

/// Why vmrecover could not get a usable connection to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The kubeconfig named could not be read or used, or none was found.
    #[error("{0}")]
    Config(String),
    /// The client could not be built from a usable configuration.
    #[error("cannot build the Kubernetes client: {0}")]
    Client(String),
    /// The API server answered, but has no Node of this name.
    #[error(
        "no Node named {0:?} in the cluster: pass --node (or NODE_NAME) with this node's name"
    )]
    NoSuchNode(String),
    /// The API server could not be asked (unreachable, forbidden, failing).
    #[error("{0}")]
    Api(String),
}

/// How long a long-running watch waits for the server between two reads: above
/// [`LONG_WATCH_SECS`], so the server ends an idle watch before the client gives up on it.
pub const LONG_WATCH_READ_TIMEOUT: Duration = Duration::from_secs(330);

/// The server-side timeout of the agent's long-running watch: kube's and client-go's usual
/// ~5 minutes, so an idle agent re-opens its watch a dozen times an hour, not every few seconds.
pub const LONG_WATCH_SECS: u32 = 290;

/// A client for `cfg.kubeconfig` (a path), else in-cluster config, else `~/.kube/config`.
pub async fn connect(cfg: &ClusterConfig) -> Result<Client, ConnectError> {
    connect_with_read_timeout(cfg, cfg.tuning.request_timeout).await
}

/// A client for long-running watches: every request but the read timeout as [`connect`].
pub async fn connect_for_watches(cfg: &ClusterConfig) -> Result<Client, ConnectError> {
    connect_with_read_timeout(cfg, LONG_WATCH_READ_TIMEOUT).await
}

async fn connect_with_read_timeout(
    cfg: &ClusterConfig,
    read_timeout: Duration,
) -> Result<Client, ConnectError> {
    let mut config = match cfg.kubeconfig.as_deref() {
        Some(path) => from_file(path).await?,
        None => Config::infer().await.map_err(|e| {
            tracing::debug!("config inference failed: {e:#}");
            ConnectError::Config(
                "no Kubernetes configuration found (no in-cluster service account, no \
                 ~/.kube/config): pass --kubeconfig or set KUBECONFIG"
                    .into(),
            )
        })?,
    };
    config.connect_timeout = Some(Duration::from_secs(5));
    // kube's own retry layer retries 429/503/504 up to 15 times with backoff growing to
    // 1000 s: an API server that stays down would hang a run for many minutes. Requests
    // that are safe to repeat are retried, bounded, by `cluster::retry` instead.
    config.default_retry = false;
    config.read_timeout = Some(read_timeout);
    config.write_timeout = Some(cfg.tuning.request_timeout);
    // Every response's Date header sets the server's clock (`server_clock`).
    let builder = kube::client::ClientBuilder::try_from(config)
        .map_err(|e| ConnectError::Client(e.to_string()))?;
    Ok(builder
        .with_layer(&tower::util::MapResponseLayer::new(
            super::server_clock::observe_response,
        ))
        .build())
}

async fn from_file(path: &Path) -> Result<Config, ConnectError> {
    let kc = Kubeconfig::read_from(path).map_err(|e| {
        ConnectError::Config(format!("cannot read kubeconfig {}: {e}", path.display()))
    })?;
    Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| {
            ConnectError::Config(format!("kubeconfig {} is not usable: {e}", path.display()))
        })
}

/// Connects and checks that `node` names a Node object; the error says how to fix it.
pub async fn connect_to_node(
    cfg: &ClusterConfig,
    node: &str,
) -> Result<(Client, Node), ConnectError> {
    let client = connect(cfg).await?;
    let found = check_node(&client, node).await?;
    Ok((client, found))
}

/// Checks that `node` names a Node object, and gives it.
pub async fn check_node(client: &Client, node: &str) -> Result<Node, ConnectError> {
    let nodes = kube::Api::<Node>::all(client.clone());
    match with_retries(&format!("get nodes/{node}"), || nodes.get_opt(node)).await {
        Ok(Some(n)) => Ok(n),
        Ok(None) => Err(ConnectError::NoSuchNode(node.to_string())),
        Err(e) => Err(ConnectError::Api(describe(
            &e,
            "get",
            &format!("nodes/{node}"),
        ))),
    }
}
