//! A minimal OpenAPI v3 document per group/version. kubectl reads it to learn that the server
//! validates fields itself (the `fieldValidation` query parameter of each PATCH operation), so
//! `kubectl create -f` and `kubectl apply -f` send `fieldValidation=Strict` instead of failing to
//! download schemas for client-side validation. No schemas are served: kubectl then uses JSON
//! merge patch for custom resources and its built-in strategic merge for core kinds.

use serde_json::{json, Map, Value};

use crate::resources::RESOURCES;

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `GET /openapi/v3`: the index of group/version documents.
pub fn index() -> Value {
    let mut paths = Map::new();
    for r in RESOURCES {
        let p = gv_path(r.group, r.version);
        paths.entry(p.clone()).or_insert_with(
            || json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=harvester-sim-1")}),
        );
    }
    json!({"paths": paths})
}

/// `GET /openapi/v3/api/v1` or `/openapi/v3/apis/GROUP/VERSION`; `None` when not served.
pub fn group_version(group: &str, version: &str) -> Option<Value> {
    let mut paths = Map::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let base = format!("/{}", gv_path(r.group, r.version));
        let item = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{base}/{}/{{name}}", r.plural)
        };
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let params = json!([
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}},
        ]);
        let mut content = vec![
            "application/apply-patch+yaml",
            "application/json-patch+json",
            "application/merge-patch+json",
        ];
        if !r.custom {
            content.push("application/strategic-merge-patch+json");
        }
        let content: Map<String, Value> = content
            .into_iter()
            .map(|c| (c.to_string(), json!({"schema": {"type": "object"}})))
            .collect();
        paths.insert(
            item,
            json!({
                "patch": {
                    "operationId": format!("patch{}", r.kind),
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": gvk,
                    "parameters": params,
                    "requestBody": {"content": content, "required": true},
                    "responses": {"200": {"description": "OK"}},
                }
            }),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (harvester-sim)", "version": "unversioned"},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_version_has_patch_with_field_validation() {
        let idx = index();
        assert!(idx["paths"]["apis/kubevirt.io/v1"]["serverRelativeURL"].is_string());
        let doc = group_version("kubevirt.io", "v1").unwrap_or_default();
        let p = &doc["paths"]
            ["/apis/kubevirt.io/v1/namespaces/{namespace}/virtualmachineinstances/{name}"]["patch"];
        assert_eq!(
            p["x-kubernetes-group-version-kind"]["kind"],
            "VirtualMachineInstance"
        );
        assert!(p["parameters"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["name"] == "fieldValidation")));
        assert!(group_version("nope.io", "v1").is_none());
    }
}
