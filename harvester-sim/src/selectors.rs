//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`, `>`, `<`) and field selectors,
//! parsed and matched like the apiserver does.

use serde_json::Value;

use crate::resources::ResourceDef;

/// One label requirement.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelReq {
    /// `key=value` / `key==value` / `key in (a,b)`.
    In(String, Vec<String>),
    /// `key!=value` / `key notin (a,b)` (also matches objects without the key).
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
    /// `key>n`.
    Gt(String, i64),
    /// `key<n`.
    Lt(String, i64),
}

/// A parsed label selector: all requirements must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(pub Vec<LabelReq>);

fn split_top_level(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c)
            }
            ')' => {
                depth -= 1;
                cur.push(c)
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn parse_set(rest: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("found '{rest}', expected: '(' ... ')'"))?;
    let vals: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    if let Some(bad) = vals.iter().find(|v| !valid_value(v)) {
        return Err(format!("invalid label value: {bad:?}"));
    }
    Ok(vals)
}

impl LabelSelector {
    /// Parses the `labelSelector` query value. The error text is the reason for a 400.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector(reqs));
        }
        for part in split_top_level(s) {
            let p = part.trim();
            if p.is_empty() {
                return Err(format!(
                    "unable to parse requirement: found empty requirement in {s:?}"
                ));
            }
            reqs.push(Self::parse_req(p)?);
        }
        Ok(LabelSelector(reqs))
    }

    fn parse_req(p: &str) -> Result<LabelReq, String> {
        if let Some(k) = p.strip_prefix('!') {
            let k = k.trim();
            if !valid_key(k) {
                return Err(format!(
                    "unable to parse requirement: invalid label key {k:?}"
                ));
            }
            return Ok(LabelReq::DoesNotExist(k.to_string()));
        }
        for (op, len) in [("==", 2), ("!=", 2), ("=", 1), (">", 1), ("<", 1)] {
            if let Some(i) = p.find(op) {
                let k = p[..i].trim();
                let v = p[i + len..].trim();
                if !valid_key(k) {
                    return Err(format!(
                        "unable to parse requirement: invalid label key {k:?}"
                    ));
                }
                if !valid_value(v) {
                    return Err(format!(
                        "unable to parse requirement: invalid label value: {v:?}"
                    ));
                }
                return Ok(match op {
                    "!=" => LabelReq::NotIn(k.into(), vec![v.into()]),
                    ">" | "<" => {
                        let n: i64 = v
                            .parse()
                            .map_err(|_| format!("unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer, got {v:?}"))?;
                        if op == ">" {
                            LabelReq::Gt(k.into(), n)
                        } else {
                            LabelReq::Lt(k.into(), n)
                        }
                    }
                    _ => LabelReq::In(k.into(), vec![v.into()]),
                });
            }
        }
        let mut words = p.splitn(2, char::is_whitespace);
        let k = words.next().unwrap_or_default().trim();
        let rest = words.next().unwrap_or_default().trim();
        if !valid_key(k) {
            return Err(format!(
                "unable to parse requirement: invalid label key {k:?}"
            ));
        }
        if rest.is_empty() {
            return Ok(LabelReq::Exists(k.into()));
        }
        if let Some(set) = rest.strip_prefix("notin") {
            return Ok(LabelReq::NotIn(k.into(), parse_set(set)?));
        }
        if let Some(set) = rest.strip_prefix("in") {
            return Ok(LabelReq::In(k.into(), parse_set(set)?));
        }
        Err(format!(
            "unable to parse requirement: found '{rest}', expected: in, notin, =, ==, !=, gt, lt"
        ))
    }

    /// Whether an object's `metadata.labels` satisfy the selector.
    pub fn matches(&self, obj: &Value) -> bool {
        let get = |k: &str| Self::label_value(obj, k);
        self.0.iter().all(|r| match r {
            LabelReq::In(k, vs) => get(k).is_some_and(|v| vs.iter().any(|x| x == v)),
            LabelReq::NotIn(k, vs) => get(k).is_none_or(|v| !vs.iter().any(|x| x == v)),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::DoesNotExist(k) => get(k).is_none(),
            LabelReq::Gt(k, n) => get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            LabelReq::Lt(k, n) => get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        })
    }

    /// The string value of label `key` of an object, as the selector reads it.
    pub fn label_value<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
        obj.pointer("/metadata/labels")
            .and_then(|l| l.get(key))
            .and_then(Value::as_str)
    }

    /// If the selector pins `key` to exactly one value, that value (used for index look-ups).
    pub fn exact(&self, key: &str) -> Option<&str> {
        self.0.iter().find_map(|r| match r {
            LabelReq::In(k, vs) if k == key && vs.len() == 1 => vs.first().map(String::as_str),
            _ => None,
        })
    }
}

/// One field requirement.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldReq {
    /// Field path, e.g. `spec.nodeName`.
    pub field: String,
    /// Expected value.
    pub value: String,
    /// True for `!=`.
    pub negate: bool,
}

/// A parsed field selector.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(pub Vec<FieldReq>);

fn unescape(v: &str) -> String {
    let mut out = String::new();
    let mut it = v.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            if let Some(n) = it.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut esc = false;
    for c in s.chars() {
        if esc {
            cur.push('\\');
            cur.push(c);
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

/// JSON pointer of a supported selectable field of a resource, beyond `metadata.name`/`metadata.namespace`.
fn field_pointer(res: &ResourceDef, field: &str) -> Option<&'static str> {
    match field {
        "metadata.name" => return Some("/metadata/name"),
        "metadata.namespace" => return Some("/metadata/namespace"),
        _ => {}
    }
    let table: &[(&str, &'static str)] = match (res.group, res.plural) {
        ("", "pods") => &[
            ("spec.nodeName", "/spec/nodeName"),
            ("spec.restartPolicy", "/spec/restartPolicy"),
            ("spec.schedulerName", "/spec/schedulerName"),
            ("spec.serviceAccountName", "/spec/serviceAccountName"),
            ("status.phase", "/status/phase"),
            ("status.podIP", "/status/podIP"),
            ("status.nominatedNodeName", "/status/nominatedNodeName"),
        ],
        ("", "nodes") => &[("spec.unschedulable", "/spec/unschedulable")],
        ("", "namespaces") => &[("status.phase", "/status/phase")],
        ("", "persistentvolumeclaims") => &[],
        ("", "events") => &[
            ("involvedObject.kind", "/involvedObject/kind"),
            ("involvedObject.namespace", "/involvedObject/namespace"),
            ("involvedObject.name", "/involvedObject/name"),
            ("involvedObject.uid", "/involvedObject/uid"),
            ("involvedObject.apiVersion", "/involvedObject/apiVersion"),
            (
                "involvedObject.resourceVersion",
                "/involvedObject/resourceVersion",
            ),
            ("involvedObject.fieldPath", "/involvedObject/fieldPath"),
            ("reason", "/reason"),
            ("reportingComponent", "/reportingComponent"),
            ("source", "/source/component"),
            ("type", "/type"),
        ],
        // k8s.io/kubernetes pkg/apis/events/v1/conversion.go AddFieldLabelConversionsForEvent
        // (v1.33.0): the events.k8s.io names of the core Event's selectable fields.
        ("events.k8s.io", "events") => &[
            ("regarding.kind", "/regarding/kind"),
            ("regarding.namespace", "/regarding/namespace"),
            ("regarding.name", "/regarding/name"),
            ("regarding.uid", "/regarding/uid"),
            ("regarding.apiVersion", "/regarding/apiVersion"),
            ("regarding.resourceVersion", "/regarding/resourceVersion"),
            ("regarding.fieldPath", "/regarding/fieldPath"),
            ("reason", "/reason"),
            ("reportingController", "/reportingController"),
            ("source", "/deprecatedSource/component"),
            ("type", "/type"),
        ],
        _ => &[],
    };
    table.iter().find(|(f, _)| *f == field).map(|(_, p)| *p)
}

/// Whether `field` is a selectable field of the resource.
pub fn selectable(res: &ResourceDef, field: &str) -> bool {
    field_pointer(res, field).is_some()
}

/// The value a field selector compares `field` of `obj` with: a missing field (or one the
/// resource cannot select on) reads as the empty string, a non-string as its JSON text.
pub fn field_value(res: &ResourceDef, field: &str, obj: &Value) -> String {
    let read = |p: &str| {
        obj.pointer(p)
            .map(|v| match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            })
            .unwrap_or_default()
    };
    let actual = field_pointer(res, field).map(read).unwrap_or_default();
    // pkg/registry/core/event/strategy.go ToSelectableFields (v1.33.0): `source` is
    // the source component, or the reporting controller when that is empty.
    if field == "source" && actual.is_empty() && res.plural == "events" {
        return read(if res.group.is_empty() {
            "/reportingComponent"
        } else {
            "/reportingController"
        });
    }
    actual
}

impl FieldSelector {
    /// Parses a `fieldSelector` for a resource; unknown fields are an error (a 400 like the real server).
    pub fn parse(res: &ResourceDef, s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector(reqs));
        }
        for part in split_unescaped(s, ',') {
            let p = part.trim();
            let (field, value, negate) = if let Some((f, v)) = p.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = p.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = p.split_once('=') {
                (f, v, false)
            } else {
                return Err(format!("invalid selector: '{s}'; can't understand '{p}'"));
            };
            let field = field.trim();
            if field_pointer(res, field).is_none() {
                return Err(format!("field label not supported: {field}"));
            }
            reqs.push(FieldReq {
                field: field.to_string(),
                value: unescape(value.trim()),
                negate,
            });
        }
        Ok(FieldSelector(reqs))
    }

    /// Whether an object satisfies the selector (a missing field reads as the empty string).
    pub fn matches(&self, res: &ResourceDef, obj: &Value) -> bool {
        self.0
            .iter()
            .all(|r| (field_value(res, &r.field, obj) == r.value) != r.negate)
    }

    /// If the selector pins `field` to exactly one value, that value (for index look-ups).
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|r| r.field == field && !r.negate)
            .map(|r| r.value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{find, RESOURCES};
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns", "labels": labels}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    }

    #[test]
    fn label_selector_operators() {
        let o = obj(json!({"app": "web", "tier": "front", "n": "5"}));
        let cases = [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("app in (db, web)", true),
            ("app notin (db,web)", false),
            ("app notin (db)", true),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("app=web,tier=back", false),
            ("app=web,tier in (front,back)", true),
            ("n>4", true),
            ("n<4", false),
            ("", true),
        ];
        for (sel, want) in cases {
            let parsed = LabelSelector::parse(sel);
            assert!(parsed.is_ok(), "{sel}: {parsed:?}");
            assert_eq!(parsed.map(|p| p.matches(&o)).ok(), Some(want), "{sel}");
        }
    }

    #[test]
    fn label_selector_rejects_garbage() {
        for bad in ["app=(web", "a b c", "app in web", ",", "!"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selector_per_resource() {
        let pods = find("", "v1", "pods").map(|i| &RESOURCES[i]);
        let vmis = find("kubevirt.io", "v1", "virtualmachineinstances").map(|i| &RESOURCES[i]);
        let (Some(pods), Some(vmis)) = (pods, vmis) else {
            panic!("resources missing")
        };
        let o = obj(json!({}));
        let s = FieldSelector::parse(pods, "spec.nodeName=n1,status.phase!=Failed");
        assert_eq!(s.map(|s| s.matches(pods, &o)), Ok(true));
        let s = FieldSelector::parse(pods, "spec.nodeName==n2");
        assert_eq!(s.map(|s| s.matches(pods, &o)), Ok(false));
        assert_eq!(
            FieldSelector::parse(vmis, "status.phase=Running"),
            Err("field label not supported: status.phase".to_string())
        );
        let s = FieldSelector::parse(vmis, "metadata.name=a,metadata.namespace=ns");
        assert_eq!(s.map(|s| s.matches(vmis, &o)), Ok(true));
    }
}
