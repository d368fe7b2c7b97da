//! What Harvester's VM mutator (`mutator.harvesterhci.io`, failurePolicy Ignore) does to an
//! UPDATE of a VM that is being deleted, in the releases where it still acts on one.
//!
//! Source: harvester `pkg/webhook/resources/virtualmachine/mutator.go`. Its `Update` at v1.4.0,
//! v1.4.1, v1.4.2 and v1.5.0 runs in full on every VM UPDATE, a finalizer-only patch of a
//! deleting VM included; the early return when the new VM has a `deletionTimestamp`
//! ("avoid to do mutation when deletion ts is not null") first ships in v1.4.3 (backport
//! 169209852) and v1.5.1 (backport b34ccfc4b), from commit 8f106a4f6 in v1.6.0 (read at
//! v1.7.0). Which releases act is profile data
//! ([`crate::profiles::ReleaseProfile::vm_mutator_on_deleting`]). Modelled, for a VM with a
//! `spec.template`:
//!
//! - `patchAffinity`: `spec.template.spec.affinity` is replaced by one recomputed from the
//!   VM's networks (`makeAffinityFromVMTemplate`, `addNodeSelectorTerms`): the required node
//!   selector terms lose every expression whose key starts with `network.harvesterhci.io`
//!   (a term left empty is dropped); each Multus network (`multus.networkName`, `name` or
//!   `namespace/name`, the VM's namespace by default; more than one `/` is the error
//!   `invalid network name <n>`) names a NetworkAttachmentDefinition looked up in
//!   Harvester's cache: a missing one is wrangler's NotFound error
//!   (`network-attachment-definitions.k8s.cni.cncf.io "<name>" not found`, wrangler v3
//!   `pkg/generic/cache.go` `Get`); a NAD labelled `network.harvesterhci.io/clusternetwork:
//!   <cn>` adds `network.harvesterhci.io/<cn> In ["true"]` to every term (one term if there
//!   is none); with no required term left, `nodeAffinity` goes (or only its required part,
//!   when preferred terms remain). A VM without any affinity thus gets `affinity: {}`.
//! - `patchTerminationGracePeriodSeconds`: when `spec.template.spec.
//!   terminationGracePeriodSeconds` is absent, it is set from Harvester's Setting
//!   `default-vm-termination-grace-period-seconds` (`value`, else `default`: "120" at v1.4.0,
//!   `pkg/settings/settings.go`); no Setting, no change.
//!
//! An error answers `Allowed: false` with an `InternalError` (`pkg/webhook/types/admission.go`
//! `AdmissionHandler.admit`: an error that is not an `AdmitError` becomes `werror.NewInternalError`, 500): the
//! webhook answered, so failurePolicy Ignore does not cover it, and the apiserver returns
//! `admission webhook "mutator.harvesterhci.io" denied the request: <error>`.
//!
//! Not modelled: the resource-overcommit and run-strategy patches (they need a change of
//! limits, reserved memory, host devices or run strategy, which a finalizer patch never
//! makes), and the mutator on CREATE and on UPDATEs of VMs that are not being deleted.

use serde_json::{json, Map, Value};

use crate::errors::ApiError;

/// The mutator's name.
pub const MUTATOR: &str = "mutator.harvesterhci.io";

/// The Setting the default grace period comes from.
pub const GRACE_SETTING: &str = "default-vm-termination-grace-period-seconds";

const NETWORK_GROUP: &str = "network.harvesterhci.io";
const CLUSTER_NETWORK_LABEL: &str = "network.harvesterhci.io/clusternetwork";

/// What the mutator reads from the cluster.
pub trait Cache {
    /// The NetworkAttachmentDefinition `namespace/name`, if it exists.
    fn nad(&self, namespace: &str, name: &str) -> Option<Value>;
    /// Harvester's Setting `name`, if it exists.
    fn setting(&self, name: &str) -> Option<Value>;
}

/// Applies the mutator's `Update` to `vm` (the object as the client wrote it), or returns the
/// apiserver's error for its denial.
pub fn mutate_update(vm: &mut Value, cache: &dyn Cache) -> Result<(), ApiError> {
    let namespace = vm
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let Some(spec) = vm
        .pointer_mut("/spec/template")
        .filter(|t| !t.is_null())
        .map(|t| &mut t["spec"])
    else {
        return Ok(());
    };
    let affinity = affinity(spec, &namespace, cache).map_err(|e| denied(&e))?;
    let Some(spec) = spec.as_object_mut() else {
        return Ok(());
    };
    spec.insert("affinity".into(), affinity);
    if spec
        .get("terminationGracePeriodSeconds")
        .is_none_or(Value::is_null)
    {
        if let Some(grace) = default_grace(cache) {
            spec.insert("terminationGracePeriodSeconds".into(), grace);
        }
    }
    Ok(())
}

/// The 500 the apiserver answers for the mutator's error.
fn denied(message: &str) -> ApiError {
    crate::admission::denied(MUTATOR, message, 500)
}

fn default_grace(cache: &dyn Cache) -> Option<Value> {
    let s = cache.setting(GRACE_SETTING)?;
    let field = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let value = Some(field("value"))
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| field("default"));
    // The mutator writes the text into its JSON patch as is.
    serde_json::from_str(&value).ok()
}

/// `makeAffinityFromVMTemplate` + `addNodeSelectorTerms` + the clean-up of `patchAffinity`.
fn affinity(spec: &Value, namespace: &str, cache: &dyn Cache) -> Result<Value, String> {
    let mut affinity = spec
        .get("affinity")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut node = affinity
        .get("nodeAffinity")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut terms: Vec<Value> = required_terms(&node)
        .into_iter()
        .filter_map(|mut t| {
            let kept: Vec<Value> = t
                .get("matchExpressions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|e| {
                    !e.get("key")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .starts_with(NETWORK_GROUP)
                })
                .cloned()
                .collect();
            if kept.is_empty() {
                return None;
            }
            t["matchExpressions"] = json!(kept);
            Some(t)
        })
        .collect();
    let networks = spec
        .get("networks")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for network in &networks {
        let Some(req) = requirement(network, namespace, cache)? else {
            continue;
        };
        for t in terms.iter_mut() {
            let exprs = t
                .as_object_mut()
                .map(|o| o.entry("matchExpressions").or_insert_with(|| json!([])));
            if let Some(Value::Array(exprs)) = exprs {
                if !exprs.contains(&req) {
                    exprs.push(req.clone());
                }
            }
        }
        if terms.is_empty() {
            terms.push(json!({"matchExpressions": [req]}));
        }
    }
    let preferred = node
        .get("preferredDuringSchedulingIgnoredDuringExecution")
        .and_then(Value::as_array)
        .is_some_and(|p| !p.is_empty());
    if terms.is_empty() {
        if preferred {
            node.remove("requiredDuringSchedulingIgnoredDuringExecution");
            affinity.insert("nodeAffinity".into(), Value::Object(node));
        } else {
            affinity.remove("nodeAffinity");
        }
    } else {
        let mut required = node
            .get("requiredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        required.insert("nodeSelectorTerms".into(), json!(terms));
        node.insert(
            "requiredDuringSchedulingIgnoredDuringExecution".into(),
            Value::Object(required),
        );
        affinity.insert("nodeAffinity".into(), Value::Object(node));
    }
    Ok(Value::Object(affinity))
}

/// The required node selector terms of a `nodeAffinity`.
fn required_terms(node: &Map<String, Value>) -> Vec<Value> {
    node.get("requiredDuringSchedulingIgnoredDuringExecution")
        .and_then(|r| r.get("nodeSelectorTerms"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// `getNodeSelectorRequirementFromNetwork`.
fn requirement(
    network: &Value,
    namespace: &str,
    cache: &dyn Cache,
) -> Result<Option<Value>, String> {
    let name = network
        .pointer("/multus/networkName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.is_empty() {
        return Ok(None);
    }
    let words: Vec<&str> = name.split('/').collect();
    let (ns, nad) = match words.as_slice() {
        [n] => (namespace, *n),
        [ns, n] => (*ns, *n),
        _ => return Err(format!("invalid network name {name}")),
    };
    let Some(obj) = cache.nad(ns, nad) else {
        return Err(format!(
            "network-attachment-definitions.k8s.cni.cncf.io {nad:?} not found"
        ));
    };
    let cluster_network = obj
        .pointer("/metadata/labels")
        .and_then(|l| l.get(CLUSTER_NETWORK_LABEL))
        .and_then(Value::as_str);
    Ok(cluster_network.map(
        |cn| json!({"key": format!("{NETWORK_GROUP}/{cn}"), "operator": "In", "values": ["true"]}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed {
        nads: Vec<Value>,
        grace: Option<Value>,
    }

    impl Cache for Fixed {
        fn nad(&self, namespace: &str, name: &str) -> Option<Value> {
            self.nads
                .iter()
                .find(|n| n["metadata"]["namespace"] == namespace && n["metadata"]["name"] == name)
                .cloned()
        }
        fn setting(&self, _: &str) -> Option<Value> {
            self.grace.clone()
        }
    }

    fn nad(ns: &str, name: &str, cn: Option<&str>) -> Value {
        let mut n = json!({"metadata": {"namespace": ns, "name": name}});
        if let Some(cn) = cn {
            n["metadata"]["labels"] = json!({CLUSTER_NETWORK_LABEL: cn});
        }
        n
    }

    fn vm(spec: Value) -> Value {
        json!({"metadata": {"namespace": "default", "name": "vm-1",
            "deletionTimestamp": "2025-06-02T08:31:40Z"},
            "spec": {"template": {"spec": spec}}})
    }

    fn grace(value: &str, default: &str) -> Option<Value> {
        Some(json!({"metadata": {"name": GRACE_SETTING}, "value": value, "default": default}))
    }

    #[test]
    fn a_missing_nad_is_a_500_denial_with_wranglers_not_found() {
        let cache = Fixed {
            nads: vec![],
            grace: None,
        };
        let mut v = vm(json!({"networks": [{"name": "default",
            "multus": {"networkName": "default/vlan10"}}]}));
        let Err(e) = mutate_update(&mut v, &cache) else {
            panic!("allowed")
        };
        assert_eq!((e.code, e.reason), (500, "InternalError"));
        assert_eq!(
            e.message,
            "admission webhook \"mutator.harvesterhci.io\" denied the request: network-attachment-definitions.k8s.cni.cncf.io \"vlan10\" not found"
        );
        let mut bad = vm(json!({"networks": [{"multus": {"networkName": "a/b/c"}}]}));
        assert!(mutate_update(&mut bad, &cache)
            .is_err_and(|e| e.message.ends_with("invalid network name a/b/c")));
    }

    #[test]
    fn affinity_is_recomputed_from_the_networks() {
        let cache = Fixed {
            nads: vec![
                nad("default", "vlan10", Some("mgmt")),
                nad("other", "plain", None),
            ],
            grace: None,
        };
        let own = json!({"key": "disk", "operator": "In", "values": ["ssd"]});
        let stale =
            json!({"key": "network.harvesterhci.io/old", "operator": "In", "values": ["true"]});
        let mut v = vm(json!({
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchExpressions": [own, stale]},
                    {"matchExpressions": [stale]}]}}},
            "networks": [{"name": "a", "multus": {"networkName": "vlan10"}},
                {"name": "b", "multus": {"networkName": "other/plain"}}, {"name": "c", "pod": {}}],
            "terminationGracePeriodSeconds": 30}));
        assert!(mutate_update(&mut v, &cache).is_ok());
        let mgmt =
            json!({"key": "network.harvesterhci.io/mgmt", "operator": "In", "values": ["true"]});
        assert_eq!(
            v["spec"]["template"]["spec"]["affinity"],
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [{"matchExpressions": [own, mgmt]}]}}})
        );
        assert_eq!(
            v["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
            30
        );
        // Recomputing what is already there changes nothing.
        let before = v.clone();
        assert!(mutate_update(&mut v, &cache).is_ok());
        assert_eq!(v, before);
    }

    #[test]
    fn no_affinity_becomes_empty_and_grace_comes_from_the_setting() {
        let mut v = vm(json!({}));
        let cache = Fixed {
            nads: vec![],
            grace: grace("", "120"),
        };
        assert!(mutate_update(&mut v, &cache).is_ok());
        assert_eq!(
            v["spec"]["template"]["spec"],
            json!({"affinity": {}, "terminationGracePeriodSeconds": 120})
        );
        let mut v = vm(json!({}));
        let set = Fixed {
            nads: vec![],
            grace: grace("45", "120"),
        };
        assert!(mutate_update(&mut v, &set).is_ok());
        assert_eq!(
            v["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
            45
        );
        // No template: nothing to do.
        let mut bare = json!({"metadata": {"name": "x"}, "spec": {"runStrategy": "Halted"}});
        let copy = bare.clone();
        assert!(mutate_update(&mut bare, &set).is_ok());
        assert_eq!(bare, copy);
    }
}
