//! Version strings a release shows: the nodes' OS image and kubelet, Longhorn's engine image.

use serde_json::Value;

use crate::profiles::ReleaseProfile;

/// Rewrites a Node's `status.nodeInfo` for release `p`.
pub fn node(obj: &mut Value, p: &ReleaseProfile) {
    let Some(info) = obj
        .pointer_mut("/status/nodeInfo")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    info.insert(
        "osImage".into(),
        Value::from(format!("Harvester {}", p.harvester_version)),
    );
    for k in ["kubeletVersion", "kubeProxyVersion"] {
        info.insert(k.into(), Value::from(format!("v{}", p.kube_version)));
    }
}

/// Rewrites a Longhorn volume's engine image for release `p` (`spec.image` and
/// `status.currentImage`, longhorn-manager `k8s/pkg/apis/longhorn/v1beta2/volume.go`).
pub fn longhorn_volume(obj: &mut Value, p: &ReleaseProfile) {
    let image = format!("longhornio/longhorn-engine:{}", p.longhorn);
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("image".into(), Value::from(image.clone()));
    }
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
        status.insert("currentImage".into(), Value::from(image));
    }
}
