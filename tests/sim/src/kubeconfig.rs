//! The kubeconfig the simulator writes for its clients.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;

use crate::rbac::Identity;

/// Bearer token of the admin kubeconfig (any token is accepted unless RBAC is enforced; then
/// this one is `system:masters`, see [`crate::rbac`]).
pub const TOKEN: &str = "harvester-sim-token";

/// Name used for the cluster, user and context entries.
pub const CONTEXT: &str = "harvester-sim";

/// The admin kubeconfig text for a simulator listening on `addr`.
pub fn render(addr: SocketAddr) -> String {
    render_as(addr, &Identity::admin())
}

/// The kubeconfig text that authenticates as `who` (admin or a ServiceAccount).
pub fn render_as(addr: SocketAddr, who: &Identity) -> String {
    let token = who.token();
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
    token: {token}
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

/// Writes the admin kubeconfig to `path` (atomically: a temporary file renamed into place).
pub fn write(addr: SocketAddr, path: &Path) -> anyhow::Result<()> {
    write_as(addr, &Identity::admin(), path)
}

/// Writes a kubeconfig for `who` to `path` (atomically).
pub fn write_as(addr: SocketAddr, who: &Identity, path: &Path) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp-harvester-sim");
    std::fs::write(&tmp, render_as(addr, who))
        .with_context(|| format!("cannot write kubeconfig {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move kubeconfig into place at {}", path.display()))?;
    Ok(())
}
