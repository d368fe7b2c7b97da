//! The store as the admission policies see the cluster: their own objects, params and
//! namespaces (see [`crate::admission::vap`]).

use serde_json::Value;

use super::Inner;
use crate::admission::vap::{self, Lookup};
use crate::admission::Operation;
use crate::convert::{storage_of, to_view};
use crate::errors::ApiError;
use crate::identity::Identity;
use crate::resources::{find, find_kind, ResourceDef, RESOURCES};
use crate::store_vocab::Key;

impl Inner {
    /// Every stored object of a kind, none when this Kubernetes version does not serve it
    /// (a policy loaded from a scenario into a 1.29 cluster enforces nothing, as on 1.29).
    fn all_of(&self, group: &str, plural: &str) -> Vec<Value> {
        let minor = self.settings.kube_minor();
        find(group, "v1", plural)
            .filter(|i| crate::kube_version::served(&RESOURCES[*i], minor))
            .and_then(|i| self.objects.get(i))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The validating admission policies over one write, as the client that sent it (the
    /// simulated controllers write as the admin).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn policy_check(
        &self,
        operation: Operation,
        resource: &ResourceDef,
        subresource: &str,
        namespace: &str,
        name: &str,
        object: Option<&Value>,
        old_object: Option<&Value>,
    ) -> Result<(), ApiError> {
        let admin;
        let user = match &self.requester {
            Some(who) => who,
            None => {
                admin = Identity::admin();
                &admin
            }
        };
        self.admit_policies(&vap::Request {
            operation,
            resource,
            subresource,
            namespace: if resource.namespaced { namespace } else { "" },
            name,
            object,
            old_object,
            user,
            dry_run: self.dry_run,
        })
    }

    /// [`vap::admit`] over this store.
    pub(super) fn admit_policies(&self, req: &vap::Request<'_>) -> Result<(), ApiError> {
        vap::admit(self, req)
    }
}

impl Lookup for Inner {
    fn policies(&self) -> Vec<Value> {
        self.all_of(
            "admissionregistration.k8s.io",
            "validatingadmissionpolicies",
        )
    }

    fn bindings(&self) -> Vec<Value> {
        self.all_of(
            "admissionregistration.k8s.io",
            "validatingadmissionpolicybindings",
        )
    }

    fn param(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, String> {
        let res = find_kind(api_version, kind).ok_or_else(|| {
            format!("failed to find resource referenced by paramKind: '{api_version}, Kind={kind}'")
        })?;
        let key: Key = (namespace.to_string(), name.to_string());
        Ok(self.view_get(res, &key))
    }

    fn params_selected(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        selector: &Value,
    ) -> Result<Vec<Value>, String> {
        let res = find_kind(api_version, kind).ok_or_else(|| {
            format!("failed to find resource referenced by paramKind: '{api_version}, Kind={kind}'")
        })?;
        let mut out = Vec::new();
        for ((ns, _), obj) in self.objects.get(storage_of(res)).into_iter().flatten() {
            if ns == namespace && vap::labels_match(selector, &obj["metadata"]["labels"])? {
                out.push(to_view(res, obj));
            }
        }
        Ok(out)
    }

    fn namespaced(&self, api_version: &str, kind: &str) -> Option<bool> {
        find_kind(api_version, kind).map(|i| RESOURCES[i].namespaced)
    }

    fn namespace(&self, name: &str) -> Option<Value> {
        let res = find("", "v1", "namespaces")?;
        self.view_get(res, &(String::new(), name.to_string()))
    }
}
