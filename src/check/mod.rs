//! `vmrecover check`: proves on this node and this cluster, without changing either, that a
//! recovery would work here — the host evidence is readable, the node is this machine, the
//! token carries the node, every permission is granted, every write kind passes admission
//! (rehearsed with server-side dry-run), the versions are tested ones, no unknown finalizer
//! waits on this node's VMs, and nothing of Harvester's holds recovery back right now.
//!
//! One [`Check`] per line: `ok`, `warn` or `fail`, the evidence, and for anything not ok the
//! fix. A check that cannot run is `fail` with why, never `ok`. The only requests without
//! `dryRun=All` are reads and the review POSTs (questions, not writes).

mod finalizers;
mod harvester;
mod host;
mod identity;
pub mod permissions;
mod rehearsal;
mod render;
mod versions;

use kube::Client;
use serde::Serialize;

use crate::config::Config;
use crate::exit::Outcome;

pub use rehearsal::policy_api_served;
pub use render::table;

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Ready.
    Ok,
    /// Works, but a person should look (or nothing could be rehearsed).
    Warn,
    /// Recovery would not work here, or the check could not run.
    Fail,
}

impl Status {
    /// `ok`, `warn` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One check's result, as a line of the table and an object of `--output json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable name (`host.machine-id`, `permission.patch kubevirt.io/virtualmachineinstances`).
    pub name: String,
    /// The verdict.
    pub status: Status,
    /// The evidence.
    pub detail: String,
    /// What to do when not ok ("" when ok).
    pub fix: String,
}

impl Check {
    /// An `ok` line.
    pub fn ok(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Check {
            name: name.into(),
            status: Status::Ok,
            detail: detail.into(),
            fix: String::new(),
        }
    }

    /// A `warn` line with its fix.
    pub fn warn(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Check {
            name: name.into(),
            status: Status::Warn,
            detail: detail.into(),
            fix: fix.into(),
        }
    }

    /// A `fail` line with its fix.
    pub fn fail(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Check {
            name: name.into(),
            status: Status::Fail,
            detail: detail.into(),
            fix: fix.into(),
        }
    }
}

pub use crate::config::{CheckOptions, FailOn};

/// The exit code for a list of checks.
pub fn outcome(checks: &[Check], fail_on: FailOn) -> Outcome {
    let worst = checks.iter().map(|c| c.status).max().unwrap_or(Status::Ok);
    match (worst, fail_on) {
        (Status::Fail, _) | (Status::Warn, FailOn::Warn) => Outcome::Blocked,
        _ => Outcome::Done,
    }
}

/// Runs every check against `client` (already shown to reach the API server).
pub async fn run_all(cfg: &Config, opts: &CheckOptions, client: &Client) -> Vec<Check> {
    let mut out = host::checks(cfg);
    let node = host::node_identity(cfg, client).await;
    out.extend(node.checks);
    let policy_api = rehearsal::policy_api_served(client).await.ok();
    let whoami = identity::check(client, &cfg.node, policy_api).await;
    out.push(whoami);
    out.extend(permissions::check(client, &cfg.cluster.namespace).await);
    out.extend(rehearsal::checks(cfg, client).await);
    out.extend(versions::checks(client).await);
    out.extend(finalizers::checks(cfg, client, opts.site).await);
    out.extend(harvester::checks(cfg, client, node.node.as_ref()).await);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_worst_line() {
        let ok = Check::ok("a", "fine");
        let warn = Check::warn("b", "hm", "look");
        let fail = Check::fail("c", "no", "fix");
        assert_eq!(
            outcome(std::slice::from_ref(&ok), FailOn::Warn),
            Outcome::Done
        );
        assert_eq!(
            outcome(&[ok.clone(), warn.clone()], FailOn::Warn),
            Outcome::Blocked
        );
        assert_eq!(
            outcome(&[ok.clone(), warn.clone()], FailOn::Fail),
            Outcome::Done
        );
        assert_eq!(outcome(&[warn, fail], FailOn::Fail), Outcome::Blocked);
        let json = serde_json::to_value(&ok).unwrap_or_default();
        assert_eq!(json["status"], "ok");
        assert_eq!(json["fix"], "");
    }
}
