//! The kubeconfigs the simulator writes for its clients.
//!
//! Over HTTPS (the default) two shapes, as on a Harvester node:
//! - a client certificate, the shape of RKE2's `/etc/rancher/rke2/rke2.yaml` (cluster, user
//!   and context all named `default`, `certificate-authority-data`,
//!   `client-certificate-data`, `client-key-data`), for users (the admin is
//!   `CN=kubernetes-admin, O=system:masters`);
//! - a bearer token with `certificate-authority-data`, for ServiceAccounts.
//!
//! Over plain HTTP (an option for tests that need it): server `http://ADDR` and a bearer
//! token.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use base64::Engine;

use crate::identity::Identity;
use crate::tls::Pki;

pub use crate::identity::TOKEN;

/// Name used for the cluster, user and context entries of token kubeconfigs.
pub const CONTEXT: &str = "harvester-sim";

/// Where clients reach the simulator.
#[derive(Debug, Clone, Copy)]
pub enum Endpoint<'a> {
    /// Plain HTTP.
    Http(SocketAddr),
    /// HTTPS with the simulator's PKI.
    Https(SocketAddr, &'a Pki),
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

fn token_config(server: &str, ca: Option<&str>, token: &str) -> String {
    let ca = ca
        .map(|c| format!("\n    certificate-authority-data: {}", b64(c)))
        .unwrap_or_default();
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: {CONTEXT}
  cluster:
    server: {server}{ca}
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

/// The admin kubeconfig text.
pub fn render(ep: Endpoint<'_>) -> anyhow::Result<String> {
    render_as(ep, &Identity::admin())
}

/// The kubeconfig text that authenticates as `who`: a ServiceAccount by token, anyone else
/// (over HTTPS) by a client certificate with `CN=user`, `O=group`.
pub fn render_as(ep: Endpoint<'_>, who: &Identity) -> anyhow::Result<String> {
    match ep {
        Endpoint::Http(addr) => Ok(token_config(&format!("http://{addr}"), None, &who.token())),
        Endpoint::Https(addr, pki) => {
            let server = format!("https://{addr}");
            let ca = pki.ca_pem();
            if who.service_account.is_some() {
                return Ok(token_config(&server, Some(&ca), &who.token()));
            }
            let groups: Vec<String> = who
                .groups
                .iter()
                .filter(|g| *g != "system:authenticated")
                .cloned()
                .collect();
            let cert = pki.client_cert(&who.user, &groups)?;
            Ok(format!(
                "apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: {}
    server: {server}
  name: default
contexts:
- context:
    cluster: default
    user: default
  name: default
current-context: default
kind: Config
preferences: {{}}
users:
- name: default
  user:
    client-certificate-data: {}
    client-key-data: {}
",
                b64(&ca),
                b64(&cert.cert_pem),
                b64(&cert.key_pem)
            ))
        }
    }
}

/// A kubeconfig that authenticates with a bearer token (e.g. one from TokenRequest).
pub fn render_token(ep: Endpoint<'_>, token: &str) -> String {
    match ep {
        Endpoint::Http(addr) => token_config(&format!("http://{addr}"), None, token),
        Endpoint::Https(addr, pki) => {
            token_config(&format!("https://{addr}"), Some(&pki.ca_pem()), token)
        }
    }
}

/// Writes text to `path` atomically (a temporary file renamed into place).
pub fn write_text(text: &str, path: &Path) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp-harvester-sim");
    std::fs::write(&tmp, text)
        .with_context(|| format!("cannot write kubeconfig {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move kubeconfig into place at {}", path.display()))?;
    Ok(())
}

/// Writes the admin kubeconfig to `path`.
pub fn write(ep: Endpoint<'_>, path: &Path) -> anyhow::Result<()> {
    write_text(&render(ep)?, path)
}

/// Writes a kubeconfig for `who` to `path`.
pub fn write_as(ep: Endpoint<'_>, who: &Identity, path: &Path) -> anyhow::Result<()> {
    write_text(&render_as(ep, who)?, path)
}
