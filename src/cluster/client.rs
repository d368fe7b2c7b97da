//! Building the Kubernetes client from `--kubeconfig`, the environment or in-cluster config.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// How long one request may take before it counts as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Overrides [`REQUEST_TIMEOUT`] (a duration such as `1s`; for tests that model timeouts).
pub const REQUEST_TIMEOUT_ENV: &str = "VMRECOVER_REQUEST_TIMEOUT";

/// The request timeout: `VMRECOVER_REQUEST_TIMEOUT` when set and valid, else 15 s.
pub fn request_timeout() -> Duration {
    std::env::var(REQUEST_TIMEOUT_ENV)
        .ok()
        .and_then(|v| humantime::parse_duration(v.trim()).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(REQUEST_TIMEOUT)
}

/// A client for `kubeconfig` (a path), else in-cluster config, else `~/.kube/config`.
pub async fn connect(kubeconfig: Option<&Path>) -> anyhow::Result<Client> {
    let mut config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("kubeconfig {} is not usable", path.display()))?
        }
        None => Config::infer().await.map_err(|e| {
            tracing::debug!("config inference failed: {e:#}");
            anyhow::anyhow!(
                "no Kubernetes configuration found (no in-cluster service account, no \
                 ~/.kube/config): pass --kubeconfig or set KUBECONFIG"
            )
        })?,
    };
    config.connect_timeout = Some(Duration::from_secs(5));
    // kube's own retry layer retries 429/503/504 up to 15 times with backoff growing to
    // 1000 s: an API server that stays down would hang a run for many minutes. Requests
    // that are safe to repeat are retried, bounded, by `cluster::retry` instead.
    config.default_retry = false;
    let timeout = request_timeout();
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    Client::try_from(config).context("cannot build the Kubernetes client")
}
