//! The four patch types of the apiserver, applied to schema-free objects.

use serde_json::Value;

use crate::errors::ApiError;
use crate::resources::ResourceDef;

/// A patch content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json` (merge patch plus finalizer-list directives).
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply, simplified).
    Apply,
}

impl PatchKind {
    /// Maps a `Content-Type` header value to a patch kind.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
}

/// Parses a server-side apply body (YAML or JSON).
pub fn parse_apply_body(body: &[u8]) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    let v: Value = serde_saphyr::from_str(text)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "error decoding YAML: the applied configuration is not an object",
        ));
    }
    Ok(v)
}

/// Applies a JSON, merge or strategic merge patch to `current`. Server-side apply is
/// handled by [`apply_configuration`].
pub fn apply_patch(
    kind: PatchKind,
    res: &ResourceDef,
    current: &Value,
    body: &[u8],
) -> Result<Value, ApiError> {
    match kind {
        PatchKind::Json => {
            let p: json_patch::Patch =
                serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
            let mut doc = current.clone();
            json_patch::patch(&mut doc, &p).map_err(|_| ApiError::patch_not_applied())?;
            Ok(doc)
        }
        PatchKind::Merge => {
            let p = parse_json(body)?;
            let mut doc = current.clone();
            json_patch::merge(&mut doc, &p);
            Ok(doc)
        }
        PatchKind::Strategic => {
            if res.custom {
                return Err(ApiError::unsupported_media_type_for_custom());
            }
            let p = parse_json(body)?;
            Ok(strategic_merge(current, &p))
        }
        PatchKind::Apply => {
            let applied = parse_apply_body(body)?;
            Ok(apply_configuration(current, &applied))
        }
    }
}

impl ApiError {
    /// 415 for a strategic merge patch on a custom resource, as the real apiserver answers.
    pub fn unsupported_media_type_for_custom() -> Self {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        )
    }
}

/// Server-side apply, simplified: the applied configuration is deep-merged into the current
/// object (maps merge, everything else is replaced).
pub fn apply_configuration(current: &Value, applied: &Value) -> Value {
    let mut out = current.clone();
    deep_merge(&mut out, applied);
    out
}

fn deep_merge(target: &mut Value, src: &Value) {
    match (target.as_object_mut(), src.as_object()) {
        (Some(t), Some(s)) => {
            for (k, v) in s {
                match t.get_mut(k) {
                    Some(tv) if tv.is_object() && v.is_object() => deep_merge(tv, v),
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        _ => *target = src.clone(),
    }
}

fn strings(v: Option<&Value>) -> Option<Vec<String>> {
    v.and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    })
}

/// Strategic merge patch for built-in kinds: a JSON merge patch in which `metadata.finalizers`
/// merges as a set (`patchStrategy: merge`), honouring `$deleteFromPrimitiveList/finalizers`
/// and `$setElementOrder/finalizers`; other `$` directives are dropped.
pub fn strategic_merge(current: &Value, patch: &Value) -> Value {
    let mut p = patch.clone();
    let mut add: Option<Option<Vec<String>>> = None;
    let mut remove: Vec<String> = Vec::new();
    let mut order: Option<Vec<String>> = None;
    if let Some(m) = p.get_mut("metadata").and_then(Value::as_object_mut) {
        if let Some(f) = m.remove("finalizers") {
            add = Some(if f.is_null() { None } else { strings(Some(&f)) });
        }
        remove =
            strings(m.remove("$deleteFromPrimitiveList/finalizers").as_ref()).unwrap_or_default();
        order = strings(m.remove("$setElementOrder/finalizers").as_ref());
    }
    strip_directives(&mut p);
    let mut doc = current.clone();
    json_patch::merge(&mut doc, &p);
    let touched = add.is_some() || !remove.is_empty() || order.is_some();
    if touched {
        let mut fins = crate::meta::finalizers(&doc);
        match add {
            Some(None) => fins.clear(),
            Some(Some(list)) => {
                for f in list {
                    if !fins.contains(&f) {
                        fins.push(f);
                    }
                }
            }
            None => {}
        }
        fins.retain(|f| !remove.contains(f));
        if let Some(order) = order {
            let mut sorted: Vec<String> = order.into_iter().filter(|f| fins.contains(f)).collect();
            for f in fins {
                if !sorted.contains(&f) {
                    sorted.push(f);
                }
            }
            fins = sorted;
        }
        crate::meta::set_finalizers(&mut doc, &fins);
    }
    doc
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let keys: Vec<String> = m.keys().filter(|k| k.starts_with('$')).cloned().collect();
            for k in keys {
                m.remove(&k);
            }
            for child in m.values_mut() {
                strip_directives(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{find, RESOURCES};
    use serde_json::json;

    fn res(g: &str, p: &str) -> &'static ResourceDef {
        match find(g, "v1", p) {
            Some(i) => &RESOURCES[i],
            None => panic!("no resource {p}"),
        }
    }

    #[test]
    fn json_patch_test_failure_is_the_generic_422() {
        let cur = json!({"metadata": {"name": "a", "finalizers": ["x"]}});
        let ok = apply_patch(
            PatchKind::Json,
            res("kubevirt.io", "virtualmachineinstances"),
            &cur,
            br#"[{"op":"test","path":"/metadata/finalizers","value":["x"]},{"op":"remove","path":"/metadata/finalizers"}]"#,
        );
        assert_eq!(
            ok.map(|v| v["metadata"].get("finalizers").is_none()),
            Ok(true)
        );
        let bad = apply_patch(
            PatchKind::Json,
            res("kubevirt.io", "virtualmachineinstances"),
            &cur,
            br#"[{"op":"test","path":"/metadata/finalizers","value":["y"]}]"#,
        );
        let err = bad.err().map(|e| (e.code, e.reason, e.message));
        assert_eq!(
            err,
            Some((
                422,
                "Invalid",
                "the server rejected our request due to an error in our request".to_string()
            ))
        );
    }

    #[test]
    fn strategic_merge_finalizers_are_a_set() {
        let pods = res("", "pods");
        let cur = json!({"metadata": {"name": "p", "finalizers": ["a", "b"]}});
        let added = apply_patch(
            PatchKind::Strategic,
            pods,
            &cur,
            br#"{"metadata":{"finalizers":["c"]}}"#,
        );
        assert_eq!(
            added.map(|v| crate::meta::finalizers(&v)),
            Ok(vec!["a".into(), "b".into(), "c".into()])
        );
        let removed = apply_patch(
            PatchKind::Strategic,
            pods,
            &cur,
            br#"{"metadata":{"$deleteFromPrimitiveList/finalizers":["a"]}}"#,
        );
        assert_eq!(
            removed.map(|v| crate::meta::finalizers(&v)),
            Ok(vec!["b".to_string()])
        );
        let cleared = apply_patch(
            PatchKind::Strategic,
            pods,
            &cur,
            br#"{"metadata":{"finalizers":null}}"#,
        );
        assert_eq!(
            cleared.map(|v| crate::meta::finalizers(&v)),
            Ok(Vec::<String>::new())
        );
        let custom = apply_patch(
            PatchKind::Strategic,
            res("kubevirt.io", "virtualmachines"),
            &cur,
            b"{}",
        );
        assert_eq!(custom.err().map(|e| e.code), Some(415));
    }

    #[test]
    fn merge_and_apply() {
        let vms = res("kubevirt.io", "virtualmachines");
        let cur = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"runStrategy": "Always"}});
        let merged = apply_patch(
            PatchKind::Merge,
            vms,
            &cur,
            br#"{"metadata":{"labels":{"x":null,"y":"2"}}}"#,
        );
        assert_eq!(
            merged.map(|v| v["metadata"]["labels"].clone()),
            Ok(json!({"y": "2"}))
        );
        let applied = apply_patch(
            PatchKind::Apply,
            vms,
            &cur,
            b"spec:\n  runStrategy: Halted\n",
        );
        assert_eq!(
            applied.map(|v| v["spec"]["runStrategy"].clone()),
            Ok(json!("Halted"))
        );
        assert_eq!(
            PatchKind::from_content_type("application/merge-patch+json; charset=utf-8"),
            Some(PatchKind::Merge)
        );
    }
}
