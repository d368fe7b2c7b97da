//! Wakes the agent when a VMI on this node changes: one watch (list + watch with the
//! node label selector), never polling. Watch errors are counted and retried with
//! backoff by kube's watcher.

use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::metrics::Metrics;
use crate::cluster::watch_timeout_secs;
use crate::cluster::VirtualMachineInstance;
use crate::cluster::LABEL_NODE_NAME;

/// Starts watching VMIs labelled for `node`; `wake` is notified on every change.
pub fn spawn(
    client: Client,
    node: &str,
    wake: Arc<Notify>,
    metrics: Metrics,
    request_timeout: std::time::Duration,
) -> JoinHandle<()> {
    let api = Api::<VirtualMachineInstance>::all(client);
    let config = watcher::Config::default()
        .labels(&format!("{LABEL_NODE_NAME}={node}"))
        .timeout(watch_timeout_secs(request_timeout));
    tokio::spawn(async move {
        let mut events = watcher(api, config).default_backoff().boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(_) => wake.notify_one(),
                Err(e) => {
                    metrics.api_error();
                    tracing::warn!("watching the VMIs on this node: {e}");
                }
            }
        }
    })
}
