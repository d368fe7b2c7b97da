//! The kubeconfig the simulator writes for its clients.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;

/// Bearer token written into the kubeconfig (accepted but not checked).
pub const TOKEN: &str = "harvester-sim-token";

/// Name used for the cluster, user and context entries.
pub const CONTEXT: &str = "harvester-sim";

/// The kubeconfig text for a simulator listening on `addr`.
pub fn render(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: {CONTEXT}
  cluster:
    server: http://{addr}
users:
- name: {CONTEXT}
  user:
    token: {TOKEN}
contexts:
- name: {CONTEXT}
  context:
    cluster: {CONTEXT}
    user: {CONTEXT}
    namespace: default
current-context: {CONTEXT}
preferences: {{}}
"
    )
}

/// Writes the kubeconfig to `path` (atomically: a temporary file renamed into place).
pub fn write(addr: SocketAddr, path: &Path) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp-harvester-sim");
    std::fs::write(&tmp, render(addr))
        .with_context(|| format!("cannot write kubeconfig {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move kubeconfig into place at {}", path.display()))?;
    Ok(())
}
