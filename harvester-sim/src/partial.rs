//! Metadata-only responses: `Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1`
//! for a list, `...;as=PartialObjectMetadata;...` for a get or a watch (client-go's metadata
//! client, kube-rs `list_metadata`/`get_metadata`/`watch_metadata`).
//!
//! Follows k8s.io/apiserver `pkg/endpoints/handlers/response.go` (kubernetes v1.33.0):
//! `doTransformObject` turns each object into a `PartialObjectMetadata` (its `metadata`
//! only, managedFields included) in group version meta.k8s.io/v1 or v1beta1;
//! `asPartialObjectMetadata` refuses a list and `asPartialObjectMetadataList` refuses a single
//! object, both with 406 NotAcceptable. A watch transforms each event's object the same way
//! (`watchEmbeddedEncoder`); when that fails (a watch asking for the List form) the apiserver
//! logs the error and sends the full object, and so does the simulator.

use serde_json::{json, Value};

use crate::errors::ApiError;
use crate::resources::ResourceDef;

/// Which metadata-only form an `Accept` header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partial {
    /// `as=PartialObjectMetadata`: one object (get, and each object of a watch).
    Object,
    /// `as=PartialObjectMetadataList`: a list.
    List,
}

/// The metadata-only form the first media range of `accept` asks for, if any. Only
/// `application/json` in group `meta.k8s.io`, version `v1` or `v1beta1` is such a form
/// (`targetEncodingForTransform`); any other `as=` is not this module's.
pub fn wants(accept: &str) -> Option<Partial> {
    let first = accept.split(',').next()?;
    let mut parts = first.split(';').map(str::trim);
    if parts.next()? != "application/json" {
        return None;
    }
    let (mut kind, mut group, mut version) = (None, None, None);
    for p in parts {
        match p.split_once('=') {
            Some(("as", v)) => kind = Some(v),
            Some(("g", v)) => group = Some(v),
            Some(("v", v)) => version = Some(v),
            _ => {}
        }
    }
    if group != Some("meta.k8s.io") || !matches!(version, Some("v1" | "v1beta1")) {
        return None;
    }
    match kind? {
        "PartialObjectMetadata" => Some(Partial::Object),
        "PartialObjectMetadataList" => Some(Partial::List),
        _ => None,
    }
}

/// The Go type the apiserver names in its 406 message (internal types for built-in kinds,
/// unstructured for custom resources).
fn go_type(def: &ResourceDef, list: bool) -> String {
    let suffix = if list { "List" } else { "" };
    if def.custom {
        return format!("*unstructured.Unstructured{suffix}");
    }
    let package = match def.group {
        "" | "events.k8s.io" => "core",
        g => g.split('.').next().unwrap_or(g),
    };
    format!("*{package}.{}{suffix}", def.kind)
}

/// One object as a `PartialObjectMetadata`.
pub fn object(v: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": v.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// Transforms a list or object response as `want` asks, or refuses like the apiserver.
pub fn transform(def: &ResourceDef, want: Partial, v: Value) -> Result<Value, ApiError> {
    let is_list = v.get("items").is_some();
    match (want, is_list) {
        (Partial::Object, false) => Ok(object(&v)),
        (Partial::List, true) => {
            let mut md = json!({});
            for key in ["resourceVersion", "continue", "remainingItemCount"] {
                if let Some(x) = v.pointer(&format!("/metadata/{key}")) {
                    md[key] = x.clone();
                }
            }
            let items: Vec<Value> = v["items"]
                .as_array()
                .map(|items| items.iter().map(object).collect())
                .unwrap_or_default();
            Ok(json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": md,
                "items": items,
            }))
        }
        (Partial::Object, true) => Err(not_acceptable(format!(
            "you requested PartialObjectMetadata, but the requested object is a list ({})",
            go_type(def, true)
        ))),
        (Partial::List, false) => Err(not_acceptable(format!(
            "you requested PartialObjectMetadataList, but the requested object is not a list ({})",
            go_type(def, false)
        ))),
    }
}

fn not_acceptable(message: String) -> ApiError {
    ApiError::new(406, "NotAcceptable", message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{find, RESOURCES};

    fn def(group: &str, version: &str, plural: &str) -> &'static ResourceDef {
        match find(group, version, plural).and_then(|i| RESOURCES.get(i)) {
            Some(d) => d,
            None => panic!("no {plural}"),
        }
    }

    const LIST: &str = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
    const ONE: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";

    #[test]
    fn accept_headers() {
        assert_eq!(wants(LIST), Some(Partial::List));
        assert_eq!(
            wants(&format!("{ONE},application/json")),
            Some(Partial::Object)
        );
        assert_eq!(
            wants("application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1beta1"),
            Some(Partial::Object)
        );
        assert_eq!(wants("application/json"), None);
        assert_eq!(wants("application/json;as=Table;g=meta.k8s.io;v=v1"), None);
        assert_eq!(
            wants("application/json;as=PartialObjectMetadata;g=apps;v=v1"),
            None
        );
        assert_eq!(wants(&format!("application/json,{LIST}")), None);
    }

    #[test]
    fn list_keeps_metadata_only() {
        let def = def("kubevirt.io", "v1", "virtualmachineinstances");
        let list = json!({"kind": "VirtualMachineInstanceList", "apiVersion": "kubevirt.io/v1",
            "metadata": {"resourceVersion": "42", "continue": "c"},
            "items": [{"kind": "VirtualMachineInstance", "metadata": {"name": "a", "finalizers": ["f"]},
                       "spec": {"domain": {}}, "status": {"phase": "Running"}}]});
        let Ok(out) = transform(def, Partial::List, list.clone()) else {
            panic!("refused")
        };
        assert_eq!(out["kind"], "PartialObjectMetadataList");
        assert_eq!(
            out["metadata"],
            json!({"resourceVersion": "42", "continue": "c"})
        );
        assert_eq!(
            out["items"][0],
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                   "metadata": {"name": "a", "finalizers": ["f"]}})
        );
        let Err(e) = transform(def, Partial::Object, list) else {
            panic!("a list as one object was accepted")
        };
        assert_eq!(e.code, 406);
        assert!(
            e.message.contains("*unstructured.UnstructuredList"),
            "{}",
            e.message
        );
    }

    #[test]
    fn object_as_list_is_refused() {
        let def = def("", "v1", "pods");
        let Err(e) = transform(def, Partial::List, json!({"metadata": {"name": "p"}})) else {
            panic!("accepted")
        };
        assert_eq!(e.code, 406);
        assert!(e.message.ends_with("(*core.Pod)"), "{}", e.message);
    }
}
