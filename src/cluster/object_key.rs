//! How a cluster view names the object it was read from, and whose it is.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// The identity of an object and the version it was read at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// resourceVersion when read.
    pub resource_version: String,
}

impl ObjectKey {
    pub(super) fn of(meta: &ObjectMeta) -> Self {
        ObjectKey {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone().unwrap_or_default(),
        }
    }
}

/// The controlling owner of `kind`: (name, uid).
pub(super) fn controller_of(meta: &ObjectMeta, kind: &str) -> Option<(String, String)> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|o| o.kind == kind && o.controller == Some(true))
        .or_else(|| {
            meta.owner_references
                .as_ref()?
                .iter()
                .find(|o| o.kind == kind)
        })
        .map(|o| (o.name.clone(), o.uid.clone()))
}
