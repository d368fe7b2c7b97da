//! Harvester state that would hold recovery back right now: a pause left on (the node's
//! annotation or the cluster-wide ConfigMap), an Upgrade running, and Harvester's own
//! node-down policy (`vm-force-reset-policy`), shown as evidence.

use k8s_openapi::api::core::v1::Node;
use kube::Client;

use super::Check;
use crate::cluster::{read_harvester_extras, HarvesterFacts, ANNOTATION_PAUSE, PAUSE_CONFIGMAP};
use crate::config::Config;
use crate::evidence::Gathered;

/// The pause, Upgrade and policy checks (`node`: the Node as read, if it could be).
pub async fn checks(cfg: &Config, client: &Client, node: Option<&Node>) -> Vec<Check> {
    let mut facts = node.map(HarvesterFacts::of_node).unwrap_or(HarvesterFacts {
        cluster_paused: None,
        force_reset_policy: None,
        upgrades_in_progress: None,
        ..HarvesterFacts::default()
    });
    read_harvester_extras(client, &cfg.cluster.namespace, &mut facts).await;
    judge(&facts, &cfg.cluster.namespace)
}

/// The verdicts on what was read.
fn judge(f: &HarvesterFacts, ns: &str) -> Vec<Check> {
    let pause = match (&f.cluster_paused, f.paused()) {
        (_, Some(why)) => Check::warn(
            "harvester.pause",
            format!("vmrecover is paused: {why}; no VM is recovered automatically"),
            format!(
                "when the maintenance is over: kubectl annotate node <node> {ANNOTATION_PAUSE}- ; \
                 kubectl -n {ns} delete configmap {PAUSE_CONFIGMAP}"
            ),
        ),
        (Some(Gathered::Unreadable { source, reason }), None) => Check::fail(
            "harvester.pause",
            format!("{source}: {reason}"),
            "grant get on configmaps vmrecover-pause (the chart's Role does)",
        ),
        _ => Check::ok("harvester.pause", "not paused"),
    };
    let upgrade = match &f.upgrades_in_progress {
        Some(Gathered::Read { value }) if value.is_empty() => {
            Check::ok("harvester.upgrade", "no Harvester Upgrade running")
        }
        Some(Gathered::Read { value }) => Check::warn(
            "harvester.upgrade",
            format!(
                "Harvester Upgrade running: {}; the agent changes nothing meanwhile",
                value.join(", ")
            ),
            "let the Upgrade finish; a person may run `vmrecover run --during-upgrade`",
        ),
        Some(Gathered::Unreadable { source, reason }) => Check::fail(
            "harvester.upgrade",
            format!("{source}: {reason}"),
            "grant list on upgrades.harvesterhci.io in harvester-system (the chart's Role does)",
        ),
        None => Check::fail("harvester.upgrade", "not read", "a bug: report it"),
    };
    let policy = match &f.force_reset_policy {
        Some(Gathered::Read { value: Some(p) }) => Check::ok(
            "harvester.force-reset-policy",
            format!(
                "vm-force-reset-policy: enable {}, period {} s, vmMigrationTimeout {} s",
                p.enable, p.period, p.vm_migration_timeout
            ),
        ),
        Some(Gathered::Read { value: None }) => Check::ok(
            "harvester.force-reset-policy",
            "vm-force-reset-policy not set: Harvester's defaults apply",
        ),
        Some(Gathered::Unreadable { source, reason }) => Check::fail(
            "harvester.force-reset-policy",
            format!("{source}: {reason}"),
            "grant get on settings.harvesterhci.io vm-force-reset-policy (the chart's ClusterRole does)",
        ),
        None => Check::fail("harvester.force-reset-policy", "not read", "a bug: report it"),
    };
    vec![pause, upgrade, policy]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Status;

    #[test]
    fn a_pause_left_on_warns_with_how_to_lift_it() {
        let f = HarvesterFacts {
            node_paused: Some("maintenance".into()),
            ..HarvesterFacts::default()
        };
        let c = &judge(&f, "harvester-system")[0];
        assert_eq!(c.status, Status::Warn);
        assert!(c.fix.contains(ANNOTATION_PAUSE), "{c:?}");
        let ok = judge(&HarvesterFacts::default(), "harvester-system");
        assert!(ok.iter().all(|c| c.status == Status::Ok), "{ok:?}");
    }
}
