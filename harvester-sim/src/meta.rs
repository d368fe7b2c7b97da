//! Small helpers to read and write `metadata` fields of schema-free objects.

use serde_json::{json, Map, Value};

/// `metadata.name` or "".
pub fn name(o: &Value) -> &str {
    o.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.namespace` or "".
pub fn namespace(o: &Value) -> &str {
    o.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.uid` or "".
pub fn uid(o: &Value) -> &str {
    o.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.resourceVersion` or "".
pub fn resource_version(o: &Value) -> &str {
    o.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Whether `metadata.deletionTimestamp` is set.
pub fn is_deleting(o: &Value) -> bool {
    o.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

/// `metadata.finalizers` as strings.
pub fn finalizers(o: &Value) -> Vec<String> {
    o.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The `metadata` map, created when missing (and replacing a non-object).
pub fn meta_mut(o: &mut Value) -> &mut Map<String, Value> {
    if !o.is_object() {
        *o = json!({});
    }
    let Some(obj) = o.as_object_mut() else {
        unreachable!("just made an object")
    };
    let m = obj.entry("metadata").or_insert_with(|| json!({}));
    if !m.is_object() {
        *m = json!({});
    }
    match m.as_object_mut() {
        Some(m) => m,
        None => unreachable!("just made an object"),
    }
}

/// Sets (or with an empty list, removes) `metadata.finalizers`.
pub fn set_finalizers(o: &mut Value, f: &[String]) {
    let m = meta_mut(o);
    if f.is_empty() {
        m.remove("finalizers");
    } else {
        m.insert("finalizers".into(), json!(f));
    }
}

/// Owner UIDs from `metadata.ownerReferences`.
pub fn owner_uids(o: &Value) -> Vec<String> {
    o.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// A label value.
pub fn label<'a>(o: &'a Value, key: &str) -> Option<&'a str> {
    o.pointer("/metadata/labels")
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
}

/// The current time as the apiserver writes timestamps (RFC 3339, whole seconds, UTC).
pub fn now_rfc3339() -> String {
    ts_rfc3339(jiff::Timestamp::now().as_second())
}

/// Seconds since the epoch as an RFC 3339 timestamp.
pub fn ts_rfc3339(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// Parses an RFC 3339 timestamp into seconds since the epoch.
pub fn parse_ts(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

/// The object without `metadata` and `status`, used to decide whether `generation` moves.
pub fn spec_part(o: &Value) -> Value {
    let mut c = o.clone();
    if let Some(m) = c.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_metadata() {
        let mut o = json!({"metadata": {"name": "a", "finalizers": ["x", "y"], "ownerReferences": [{"uid": "u1"}]}});
        assert_eq!(name(&o), "a");
        assert_eq!(finalizers(&o), vec!["x", "y"]);
        assert_eq!(owner_uids(&o), vec!["u1"]);
        set_finalizers(&mut o, &[]);
        assert!(o.pointer("/metadata/finalizers").is_none());
        assert!(!is_deleting(&o));
        let t = now_rfc3339();
        assert!(t.ends_with('Z') && !t.contains('.'), "{t}");
        assert_eq!(parse_ts(&ts_rfc3339(1_700_000_000)), Some(1_700_000_000));
    }
}
