//! Who a request comes from: the bearer token of the kubeconfig the simulator wrote.
//!
//! The admin token ([`TOKEN`], which the kubeconfigs carry) is `kubernetes-admin` in `system:masters`,
//! which the real authorizer never denies. A ServiceAccount token names the account; the user
//! and groups are the ones the real token authenticator gives it
//! (`system:serviceaccount:<ns>:<name>`, `system:serviceaccounts`,
//! `system:serviceaccounts:<ns>`, `system:authenticated`).

use std::collections::BTreeMap;

/// Bearer token of the admin kubeconfig (any token is accepted unless RBAC is enforced; then
/// this one is `system:masters`, see [`crate::rbac`]).
pub const TOKEN: &str = "harvester-sim-token";

/// Prefix of the tokens the simulator issues for ServiceAccounts: `<prefix><ns>:<name>`.
pub const SA_TOKEN_PREFIX: &str = "harvester-sim-serviceaccount:";

/// User name of the admin identity.
pub const ADMIN_USER: &str = "kubernetes-admin";

/// The group the authorizer always allows (as the real `system:masters`).
pub const MASTERS_GROUP: &str = "system:masters";

/// The namespace Harvester installs KubeVirt in.
pub const KUBEVIRT_NAMESPACE: &str = "harvester-system";

/// KubeVirt's ServiceAccounts whose VMI status writes virt-api's VMI mutating webhook keeps:
/// kubevirt `pkg/virt-api/webhooks/serviceaccounts.go` `KubeVirtServiceAccounts` (v1.4.0:
/// `kubevirt-apiserver`, `kubevirt-controller`, `kubevirt-handler`, in KubeVirt's namespace).
pub const KUBEVIRT_SERVICE_ACCOUNTS: [&str; 3] = [
    "kubevirt-apiserver",
    "kubevirt-controller",
    "kubevirt-handler",
];

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User name (`kubernetes-admin`, `system:serviceaccount:harvester-system:vmrecover`).
    pub user: String,
    /// Groups the user is in.
    pub groups: Vec<String>,
    /// The ServiceAccount (namespace, name) behind the user, if any.
    pub service_account: Option<(String, String)>,
    /// `user.Info` extra: a token bound to a pod carries `authentication.kubernetes.io/pod-name`,
    /// `pod-uid` and `node-name` (k8s.io/kubernetes `pkg/serviceaccount/claims.go`, v1.33.0;
    /// feature ServiceAccountTokenPodNodeInfo, GA in 1.32).
    pub extra: BTreeMap<String, Vec<String>>,
    /// The field manager its writes are recorded under in managedFields (the request's
    /// `fieldManager` or user-agent prefix, see [`crate::managed_fields::manager_of`]).
    pub manager: String,
}

impl Identity {
    /// The cluster admin (bypasses RBAC, like `system:masters`).
    pub fn admin() -> Self {
        Identity {
            user: ADMIN_USER.into(),
            groups: vec![MASTERS_GROUP.into(), "system:authenticated".into()],
            service_account: None,
            extra: BTreeMap::new(),
            manager: String::new(),
        }
    }

    /// A ServiceAccount, with the user name and groups of a real ServiceAccount token.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        Identity {
            user: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
            service_account: Some((namespace.into(), name.into())),
            extra: BTreeMap::new(),
            manager: String::new(),
        }
    }

    /// Parses `NS/NAME`, `NS:NAME` or `system:serviceaccount:NS:NAME` into a ServiceAccount identity.
    pub fn parse_service_account(s: &str) -> Result<Self, String> {
        let rest = s.strip_prefix("system:serviceaccount:").unwrap_or(s);
        let (ns, name) = rest
            .split_once('/')
            .or_else(|| rest.split_once(':'))
            .ok_or_else(|| {
                format!("service account {s:?}: expected NAMESPACE/NAME (e.g. harvester-system/vmrecover)")
            })?;
        if ns.is_empty() || name.is_empty() || name.contains([':', '/']) {
            return Err(format!(
                "service account {s:?}: expected NAMESPACE/NAME (e.g. harvester-system/vmrecover)"
            ));
        }
        Ok(Self::service_account(ns, name))
    }

    /// The identity an `Impersonate-User` (and `Impersonate-Group`) header asks for: a
    /// ServiceAccount's user name gets its usual groups, any other user the given ones.
    pub fn impersonated(user: &str, groups: &[String]) -> Self {
        if let Some(rest) = user.strip_prefix("system:serviceaccount:") {
            if let Some((ns, name)) = rest.split_once(':') {
                let mut who = Self::service_account(ns, name);
                who.groups.extend(groups.iter().cloned());
                return who;
            }
        }
        let mut all = groups.to_vec();
        all.push("system:authenticated".into());
        Identity {
            user: user.to_string(),
            groups: all,
            service_account: None,
            extra: BTreeMap::new(),
            manager: String::new(),
        }
    }

    /// virt-controller's ServiceAccount (`system:serviceaccount:harvester-system:kubevirt-controller`).
    pub fn kubevirt_controller() -> Self {
        Self::service_account(KUBEVIRT_NAMESPACE, "kubevirt-controller")
    }

    /// Whether this is one of KubeVirt's own ServiceAccounts (by user name, as the webhook
    /// checks it: `ar.Request.UserInfo.Username`).
    pub fn is_kubevirt(&self) -> bool {
        KUBEVIRT_SERVICE_ACCOUNTS
            .iter()
            .any(|sa| self.user == format!("system:serviceaccount:{KUBEVIRT_NAMESPACE}:{sa}"))
    }

    /// Whether the authorizer lets this identity do anything.
    pub fn is_superuser(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS_GROUP)
    }

    /// The bearer token that authenticates as this identity.
    pub fn token(&self) -> String {
        match &self.service_account {
            Some((ns, name)) => format!("{SA_TOKEN_PREFIX}{ns}:{name}"),
            None => TOKEN.to_string(),
        }
    }

    /// The identity a bearer token stands for (`None`: not a token this simulator issued).
    pub fn from_token(token: &str) -> Option<Self> {
        if token == TOKEN {
            return Some(Self::admin());
        }
        let rest = token.strip_prefix(SA_TOKEN_PREFIX)?;
        let (ns, name) = rest.split_once(':')?;
        (!ns.is_empty() && !name.is_empty()).then(|| Self::service_account(ns, name))
    }

    /// The identity of an `Authorization` header value (`Bearer <token>`).
    pub fn from_authorization(header: &str) -> Option<Self> {
        let (scheme, token) = header.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        Self::from_token(token.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let sa = Identity::service_account("harvester-system", "vmrecover");
        assert_eq!(sa.user, "system:serviceaccount:harvester-system:vmrecover");
        assert_eq!(
            Identity::from_authorization(&format!("Bearer {}", sa.token())),
            Some(sa.clone())
        );
        assert_eq!(Identity::from_token(TOKEN), Some(Identity::admin()));
        assert!(Identity::admin().is_superuser() && !sa.is_superuser());
        assert_eq!(Identity::from_token("nope"), None);
        assert_eq!(Identity::from_authorization("Basic abc"), None);
        assert_eq!(
            Identity::parse_service_account("system:serviceaccount:harvester-system:vmrecover"),
            Ok(sa.clone())
        );
        assert_eq!(
            Identity::parse_service_account("harvester-system/vmrecover"),
            Ok(sa)
        );
        assert!(Identity::parse_service_account("vmrecover").is_err());
    }
}
