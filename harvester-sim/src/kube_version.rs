//! What the simulated apiserver serves at its Kubernetes version (setting `kubeVersion`, from
//! the release profile or `--kube-version`): every version gate of the simulator is here, as
//! data, so `--release 1.4.0` (Kubernetes 1.29.9) and `--kube-version v1.29.9` serve the same.
//!
//! Sources (kubernetes/kubernetes at the tags named):
//! - `admissionregistration.k8s.io/v1` ValidatingAdmissionPolicy and Binding: GA and served
//!   from v1.30.0 (`pkg/controlplane/apiserver/options` / `pkg/registry/admissionregistration`;
//!   at v1.29.0 only `v1beta1` exists, behind feature `ValidatingAdmissionPolicy`, off, and
//!   `admissionregistration.k8s.io/v1beta1` disabled by default), so on 1.29 the kind is not in
//!   discovery and its paths are 404.
//! - Pod-bound ServiceAccount tokens carry `authentication.kubernetes.io/node-name`
//!   (`pkg/features/kube_features.go` ServiceAccountTokenPodNodeInfo: alpha, off, in v1.29.0;
//!   beta, on, in v1.30.0; GA in v1.32.0).
//! - CEL expressions compile against the previous minor's environment
//!   (k8s.io/apiserver `pkg/cel/environment/base.go` `DefaultCompatibilityVersion`, n-1 at
//!   every tag from v0.29.0 to v0.35.0): see [`crate::admission::vap::check`].
//! - Unchanged 1.29–1.35 for what vmrecover and its chart use: `events.k8s.io/v1` (GA 1.19),
//!   `coordination.k8s.io/v1` Leases, `authentication.k8s.io/v1` TokenRequest,
//!   SelfSubjectReview (GA 1.28; vmrecover does not call it). The chart's AppArmor setting is
//!   the annotation form every version understands, not `securityContext.appArmorProfile`
//!   (1.30+).

use crate::resources::ResourceDef;

/// The minor version Kubernetes releases before this one are refused as (`1.29` → 29):
/// the major is always 1 here. An unparsable version counts as the newest known.
pub fn minor(kube_version: &str) -> u32 {
    let v = kube_version.trim().trim_start_matches('v');
    let mut parts = v.split('.');
    let _major = parts.next();
    parts
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(NEWEST_MINOR)
}

/// The newest Kubernetes minor the simulator's gates know.
pub const NEWEST_MINOR: u32 = 35;

/// Resources served only from a Kubernetes minor on: (group, plural, first minor).
const SERVED_FROM: &[(&str, &str, u32)] = &[
    (
        "admissionregistration.k8s.io",
        "validatingadmissionpolicies",
        30,
    ),
    (
        "admissionregistration.k8s.io",
        "validatingadmissionpolicybindings",
        30,
    ),
];

/// Whether a resource is served at Kubernetes minor `minor`.
pub fn served(r: &ResourceDef, minor: u32) -> bool {
    SERVED_FROM
        .iter()
        .find(|(g, p, _)| *g == r.group && *p == r.plural)
        .is_none_or(|(_, _, from)| minor >= *from)
}

/// Whether a pod-bound token carries the pod's node (ServiceAccountTokenPodNodeInfo on).
pub fn pod_tokens_carry_node(minor: u32) -> bool {
    minor >= 30
}

/// The Kubernetes minor whose CEL environment new expressions compile against.
pub fn cel_environment_minor(minor: u32) -> u32 {
    minor.saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{find, RESOURCES};

    #[test]
    fn versions_parse_with_or_without_v_and_rke2_suffix() {
        assert_eq!(minor("1.29.9+rke2r1"), 29);
        assert_eq!(minor("v1.35.2"), 35);
        assert_eq!(minor("garbage"), NEWEST_MINOR);
    }

    #[test]
    fn policy_api_and_node_tokens_from_1_30() {
        let vap = find(
            "admissionregistration.k8s.io",
            "v1",
            "validatingadmissionpolicies",
        )
        .map(|i| &RESOURCES[i]);
        let pods = find("", "v1", "pods").map(|i| &RESOURCES[i]);
        let (Some(vap), Some(pods)) = (vap, pods) else {
            panic!("resources missing");
        };
        assert!(!served(vap, 29));
        assert!(served(vap, 30));
        assert!(served(pods, 29));
        assert!(!pod_tokens_carry_node(29));
        assert!(pod_tokens_carry_node(30));
        assert_eq!(cel_environment_minor(30), 29);
    }
}
