//! The objects that say which versions a release runs, as `vmrecover check` reads them:
//! - the KubeVirt CR `kubevirt` in `harvester-system` (kubevirt
//!   `staging/src/kubevirt.io/api/core/v1/types.go` `KubeVirtStatus.ObservedKubeVirtVersion`,
//!   v1.4.0): the version virt-operator deployed, which on Harvester is the image tag of its
//!   SUSE build (the tag of [`ReleaseProfile::launcher_image`]);
//! - Harvester's Setting `server-version` (harvester `pkg/settings/settings.go`, v1.7.0):
//!   the release in `default`, `value` left empty;
//! - Longhorn's Setting `current-longhorn-version` in `longhorn-system` (longhorn-manager
//!   `types/setting.go` `SettingNameCurrentLonghornVersion`, v1.9.0).
//!
//! A scenario that already holds one of them keeps its own (a test of an odd version).

use serde_json::{json, Value};

use crate::profiles::ReleaseProfile;

/// The version objects of release `p`.
pub fn objects(p: &ReleaseProfile) -> Vec<Value> {
    let tag = p
        .launcher_image
        .rsplit_once(':')
        .map_or(p.kubevirt, |(_, t)| t);
    vec![
        json!({"apiVersion": "kubevirt.io/v1", "kind": "KubeVirt",
            "metadata": {"name": "kubevirt", "namespace": "harvester-system"},
            "spec": {"imageTag": tag},
            "status": {"phase": "Deployed", "observedKubeVirtVersion": tag}}),
        json!({"apiVersion": "harvesterhci.io/v1beta1", "kind": "Setting",
            "metadata": {"name": "server-version"}, "default": p.harvester_version, "value": ""}),
        json!({"apiVersion": "longhorn.io/v1beta2", "kind": "Setting",
            "metadata": {"name": "current-longhorn-version", "namespace": "longhorn-system"},
            "value": p.longhorn, "status": {"applied": true}}),
    ]
}

fn key(v: &Value) -> (String, String, String, String) {
    let s = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    (
        s("/apiVersion"),
        s("/kind"),
        s("/metadata/namespace"),
        s("/metadata/name"),
    )
}

/// Adds the version objects of `p` that `objects` does not hold yet.
pub fn add_missing(objects_in: &mut Vec<Value>, p: &ReleaseProfile) {
    for o in objects(p) {
        if !objects_in.iter().any(|x| key(x) == key(&o)) {
            objects_in.push(o);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubevirt_version_is_the_image_tag_of_the_release() {
        let p = crate::profiles::profile("1.4").expect("1.4");
        let objs = objects(p);
        assert_eq!(
            objs[0]["status"]["observedKubeVirtVersion"],
            "1.3.1-150600.5.9.1"
        );
        assert_eq!(objs[1]["default"], "v1.4.0");
        assert_eq!(objs[2]["value"], "v1.7.3");
        let mut mine = vec![
            json!({"apiVersion": "longhorn.io/v1beta2", "kind": "Setting",
            "metadata": {"name": "current-longhorn-version", "namespace": "longhorn-system"}, "value": "v0.1"}),
        ];
        add_missing(&mut mine, p);
        assert_eq!(mine.len(), 3);
        assert_eq!(mine[0]["value"], "v0.1");
    }
}
