//! Minimal OpenAPI documents: v3 (JSON, per group/version) and v2 (protobuf). kubectl reads it to learn that the server
//! validates fields itself (the `fieldValidation` query parameter of each PATCH operation), so
//! `kubectl create -f` and `kubectl apply -f` send `fieldValidation=Strict` instead of failing to
//! download schemas for client-side validation. No schemas are served: kubectl then uses JSON
//! merge patch for custom resources and its built-in strategic merge for core kinds.

use serde_json::{json, Map, Value};

use crate::discovery::served_resources;

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `GET /openapi/v3`: the index of group/version documents served at Kubernetes minor `minor`.
pub fn index(minor: u32) -> Value {
    let mut paths = Map::new();
    for r in served_resources(minor) {
        let p = gv_path(r.group, r.version);
        paths.entry(p.clone()).or_insert_with(
            || json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=harvester-sim-1")}),
        );
    }
    json!({"paths": paths})
}

/// `GET /openapi/v3/api/v1` or `/openapi/v3/apis/GROUP/VERSION`; `None` when not served.
pub fn group_version(group: &str, version: &str, minor: u32) -> Option<Value> {
    let mut paths = Map::new();
    for r in served_resources(minor).filter(|r| r.group == group && r.version == version) {
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

/// Protocol-buffer encoding of the few gnostic `openapi.v2` messages kubectl reads.
mod pb {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// A length-delimited field (string, bytes or embedded message).
    pub fn field(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
        varint(out, (u64::from(number) << 3) | 2);
        varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }

    /// A message built from a closure.
    pub fn msg(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut v = Vec::new();
        f(&mut v);
        v
    }
}

/// `GET /openapi/v2`: a protobuf `openapi.v2.Document` (the only form kubectl accepts) with one
/// PATCH operation per kind that declares the `fieldValidation` query parameter and the
/// `x-kubernetes-group-version-kind` extension, and no definitions. kubectl ≤1.29 reads it to
/// decide on server-side field validation (else `create -f`/`apply -f` fail to "download openapi").
pub fn v2_protobuf(minor: u32) -> Vec<u8> {
    use pb::{field, msg};
    let paths = msg(|paths| {
        for r in served_resources(minor) {
            let base = format!("/{}", gv_path(r.group, r.version));
            let item = if r.namespaced {
                format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
            } else {
                format!("{base}/{}/{{name}}", r.plural)
            };
            let gvk_yaml = format!(
                "group: \"{}\"\nkind: {}\nversion: {}\n",
                r.group, r.kind, r.version
            );
            let operation = msg(|op| {
                field(op, 5, format!("patch{}", r.kind).as_bytes());
                for name in ["dryRun", "fieldManager", "fieldValidation", "force"] {
                    let query = msg(|q| {
                        field(q, 2, b"query");
                        field(q, 4, name.as_bytes());
                        field(
                            q,
                            6,
                            if name == "force" {
                                b"boolean"
                            } else {
                                b"string"
                            },
                        );
                    });
                    let non_body = msg(|n| field(n, 3, &query));
                    let parameter = msg(|p| field(p, 2, &non_body));
                    let item = msg(|i| field(i, 1, &parameter));
                    field(op, 8, &item);
                }
                let any = msg(|a| field(a, 2, gvk_yaml.as_bytes()));
                let ext = msg(|e| {
                    field(e, 1, b"x-kubernetes-group-version-kind");
                    field(e, 2, &any);
                });
                field(op, 13, &ext);
            });
            let path_item = msg(|pi| field(pi, 8, &operation));
            let named = msg(|n| {
                field(n, 1, item.as_bytes());
                field(n, 2, &path_item);
            });
            field(paths, 2, &named);
        }
    });
    msg(|doc| {
        field(doc, 1, b"2.0");
        let info = msg(|i| {
            field(i, 1, b"Kubernetes (harvester-sim)");
            field(i, 2, b"unversioned");
        });
        field(doc, 2, &info);
        field(doc, 8, &paths);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_version_has_patch_with_field_validation() {
        let idx = index(33);
        assert!(idx["paths"]["apis/kubevirt.io/v1"]["serverRelativeURL"].is_string());
        let doc = group_version("kubevirt.io", "v1", 33).unwrap_or_default();
        let p = &doc["paths"]
            ["/apis/kubevirt.io/v1/namespaces/{namespace}/virtualmachineinstances/{name}"]["patch"];
        assert_eq!(
            p["x-kubernetes-group-version-kind"]["kind"],
            "VirtualMachineInstance"
        );
        assert!(p["parameters"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["name"] == "fieldValidation")));
        assert!(group_version("nope.io", "v1", 33).is_none());
        let pb = v2_protobuf(33);
        // Field 1 (swagger) comes first: tag 0x0a, length 3, "2.0".
        assert_eq!(pb.get(..5), Some(&b"\x0a\x032.0"[..]));
        let text = String::from_utf8_lossy(&pb);
        assert!(text.contains("fieldValidation") && text.contains("kind: VirtualMachineInstance"));
    }
}
