//! Who am I: a `SelfSubjectReview` (authentication.k8s.io/v1, GA 1.28) of the token vmrecover
//! uses. The admission policy keeps a node's agent to its own node's VMs by the token's
//! `authentication.kubernetes.io/node-name` extra: a token without it (host mode's
//! kubeconfig, a token not bound to a pod) has every write refused, which must show here,
//! not as a 422 during an outage.

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::PostParams;
use kube::{Api, Client};

use super::Check;
use crate::cluster::describe;

const NAME: &str = "identity.token";

/// The `extra` key of a pod-bound ServiceAccount token that names its node.
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

/// Asks who the token is and whether it carries `node`.
/// `policy_api`: whether the cluster serves the admission policy API (`None`: unknown).
pub async fn check(client: &Client, node: &str, policy_api: Option<bool>) -> Check {
    let api = Api::<SelfSubjectReview>::all(client.clone());
    let review = match api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
    {
        Ok(r) => r,
        Err(e) => {
            return Check::fail(
                NAME,
                describe(&e, "create", "selfsubjectreviews.authentication.k8s.io"),
                "the API server must serve authentication.k8s.io/v1 SelfSubjectReview \
                 (Kubernetes >= 1.28) to every authenticated user (ClusterRole system:basic-user)",
            )
        }
    };
    let user = review.status.and_then(|s| s.user_info).unwrap_or_default();
    let name = user.username.unwrap_or_default();
    let nodes = user
        .extra
        .as_ref()
        .and_then(|x| x.get(NODE_NAME_EXTRA))
        .cloned()
        .unwrap_or_default();
    decide(&name, &nodes, node, policy_api)
}

/// The verdict for user `user` whose token names `nodes`, running for `node`, on a cluster
/// that serves the admission policy API or not (`policy_api`).
fn decide(user: &str, nodes: &[String], node: &str, policy_api: Option<bool>) -> Check {
    match nodes {
        // Kubernetes < 1.30 (Harvester 1.4.0): pod-bound tokens carry no node and there is no
        // policy to refuse the writes; what is missing is the node restriction itself.
        [] if policy_api == Some(false) => Check::warn(
            NAME,
            format!("{user}: the token names no node and this cluster serves no ValidatingAdmissionPolicy (Kubernetes < 1.30): nothing but RBAC bounds this agent to its node"),
            "upgrade to Harvester 1.4.1 or later (Kubernetes 1.30+) for vmrecover's node restriction (docs/safety.md)",
        ),
        [n] if n == node => Check::ok(
            NAME,
            format!("{user}, token bound to a pod on {node}"),
        ),
        [] => Check::fail(
            NAME,
            format!("{user}: the token names no node (extra {NODE_NAME_EXTRA} missing), so the admission policy refuses every write"),
            "run vmrecover with a pod-bound ServiceAccount token (the chart's DaemonSet pod), \
             not a kubeconfig or a long-lived token; Kubernetes 1.30-1.31 need feature gate \
             ServiceAccountTokenPodNodeInfo",
        ),
        other => Check::fail(
            NAME,
            format!("{user}: the token is bound to a pod on {} but --node is {node}", other.join(", ")),
            "pass --node (NODE_NAME) from the pod's spec.nodeName",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Status;

    #[test]
    fn a_token_must_name_exactly_this_node() {
        let sa = "system:serviceaccount:harvester-system:vmrecover";
        assert_eq!(
            decide(sa, &["n1".into()], "n1", Some(true)).status,
            Status::Ok
        );
        let none = decide(sa, &[], "n1", Some(true));
        assert_eq!(decide(sa, &[], "n1", Some(false)).status, Status::Warn);
        assert_eq!(none.status, Status::Fail);
        assert!(none.detail.contains("names no node"), "{none:?}");
        let other = decide(sa, &["n2".into()], "n1", Some(true));
        assert_eq!(other.status, Status::Fail);
        assert!(other.detail.contains("n2") && other.detail.contains("n1"));
    }
}
