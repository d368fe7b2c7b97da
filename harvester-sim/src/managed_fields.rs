//! `metadata.managedFields`, as the apiserver keeps them on every object (several kB on a real
//! VMI), so that the bytes a client reads mean what they mean on a real cluster.
//!
//! Follows the update path of k8s.io/apiserver `pkg/endpoints/handlers/fieldmanager` and
//! sigs.k8s.io/structured-merge-diff (kubernetes v1.33.0): a manager is the request's
//! `fieldManager` or the user agent up to its first `/` (`prefixFromUserAgent`); an `Update`
//! gives its manager every field whose value it set or changed and takes those fields from
//! every other manager; fields the object no longer has leave every set; a manager left with no
//! field loses its entry. Without the schema the apiserver has, lists are keyed by the usual
//! associative keys (`name`, `type`, `uid` of ownerReferences), scalar lists are sets and any
//! other list is atomic; a map the manager owns as a whole carries `"."`. Status of a resource
//! with a status subresource belongs to `/status` writes only (the strategy's reset fields).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use crate::resources::ResourceDef;

/// One path into an object's fields, in fieldsV1 element syntax (`f:spec`, `k:{"name":"a"}`, `v:"x"`, `.`).
type Path = Vec<String>;

/// Who writes, as managedFields records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writer {
    /// `manager`.
    pub manager: String,
    /// `operation`: `Update` or `Apply`.
    pub operation: &'static str,
    /// `subresource` (`status`), empty for the main resource.
    pub subresource: &'static str,
}

impl Writer {
    /// An `Update` by `manager` of the main resource, or of `/status` when `status`.
    pub fn update(manager: &str, status: bool) -> Self {
        Writer {
            manager: manager.to_string(),
            operation: "Update",
            subresource: if status { "status" } else { "" },
        }
    }
}

/// The manager of a request: `fieldManager` if given, else the user agent's prefix
/// (`prefixFromUserAgent`: up to the first `/`, at most 128 bytes).
pub fn manager_of(field_manager: Option<&str>, user_agent: &str) -> String {
    if let Some(m) = field_manager.filter(|m| !m.is_empty()) {
        return m.to_string();
    }
    let prefix = user_agent.split('/').next().unwrap_or_default();
    let mut end = prefix.len().min(128);
    while !prefix.is_char_boundary(end) {
        end -= 1;
    }
    prefix[..end].to_string()
}

/// Metadata the apiserver sets itself: never in a field set.
const SYSTEM_METADATA: &[&str] = &[
    "name",
    "namespace",
    "generateName",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The key of one list item: `k:{...}` for the usual associative keys, `v:` for scalars.
fn item_key(list_field: &str, item: &Value) -> Option<String> {
    match item {
        Value::Object(o) => {
            let key = if list_field == "ownerReferences" {
                "uid"
            } else if o.contains_key("name") {
                "name"
            } else if o.contains_key("type") {
                "type"
            } else {
                return None;
            };
            let mut k = Map::new();
            k.insert(key.into(), o.get(key).cloned().unwrap_or(Value::Null));
            Some(format!("k:{}", Value::Object(k)))
        }
        Value::Array(_) => None,
        scalar => Some(format!("v:{scalar}")),
    }
}

/// Every leaf path of `v` below `prefix`, with the value found there (`Null` for `.`).
fn leaves(field: &str, v: &Value, prefix: &mut Path, out: &mut BTreeMap<Path, Value>) {
    match v {
        Value::Object(o) if !o.is_empty() => {
            if prefix.len() >= 2 {
                prefix.push(".".into());
                out.insert(prefix.clone(), Value::Null);
                prefix.pop();
            }
            for (k, child) in o {
                prefix.push(format!("f:{k}"));
                leaves(k, child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let keys: Option<Vec<String>> = items.iter().map(|i| item_key(field, i)).collect();
            match keys {
                Some(keys) => {
                    for (key, item) in keys.into_iter().zip(items) {
                        prefix.push(key);
                        if item.is_object() {
                            prefix.push(".".into());
                            out.insert(prefix.clone(), Value::Null);
                            prefix.pop();
                            if let Some(o) = item.as_object() {
                                for (k, child) in o {
                                    prefix.push(format!("f:{k}"));
                                    leaves(k, child, prefix, out);
                                    prefix.pop();
                                }
                            }
                        } else {
                            out.insert(prefix.clone(), Value::Null);
                        }
                        prefix.pop();
                    }
                }
                // Atomic: owned as a whole.
                None => {
                    out.insert(prefix.clone(), v.clone());
                }
            }
        }
        _ => {
            out.insert(prefix.clone(), v.clone());
        }
    }
}

/// The owned-field paths of an object (system metadata, apiVersion and kind left out).
fn field_paths(obj: &Value) -> BTreeMap<Path, Value> {
    let mut out = BTreeMap::new();
    let Some(o) = obj.as_object() else {
        return out;
    };
    for (k, v) in o {
        if k == "apiVersion" || k == "kind" {
            continue;
        }
        let mut prefix = vec![format!("f:{k}")];
        if k == "metadata" {
            if let Some(m) = v.as_object() {
                for (mk, mv) in m {
                    if SYSTEM_METADATA.contains(&mk.as_str()) {
                        continue;
                    }
                    prefix.push(format!("f:{mk}"));
                    leaves(mk, mv, &mut prefix, &mut out);
                    prefix.pop();
                }
            }
            continue;
        }
        leaves(k, v, &mut prefix, &mut out);
    }
    out
}

/// A set of paths as a fieldsV1 tree.
fn to_fields_v1(paths: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut node = &mut root;
        for el in p {
            let entry = node.entry(el.clone()).or_insert_with(|| json!({}));
            let Some(next) = entry.as_object_mut() else {
                break;
            };
            node = next;
        }
    }
    Value::Object(root)
}

/// A fieldsV1 tree as a set of paths (its leaves).
fn from_fields_v1(tree: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    match tree.as_object() {
        Some(o) if !o.is_empty() => {
            for (k, child) in o {
                prefix.push(k.clone());
                from_fields_v1(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
            }
        }
    }
}

/// One managedFields entry, parsed.
struct Entry {
    manager: String,
    operation: String,
    subresource: String,
    api_version: String,
    time: String,
    fields: BTreeSet<Path>,
}

fn parse_entries(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|e| {
                    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                    let mut fields = BTreeSet::new();
                    if let Some(t) = e.get("fieldsV1") {
                        from_fields_v1(t, &mut Vec::new(), &mut fields);
                    }
                    Entry {
                        manager: s("manager"),
                        operation: s("operation"),
                        subresource: s("subresource"),
                        api_version: s("apiVersion"),
                        time: s("time"),
                        fields,
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

fn render(entries: &[Entry]) -> Value {
    Value::Array(
        entries
            .iter()
            .filter(|e| !e.fields.is_empty())
            .map(|e| {
                let mut m = json!({
                    "manager": e.manager,
                    "operation": e.operation,
                    "apiVersion": e.api_version,
                    "time": e.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": to_fields_v1(&e.fields),
                });
                if !e.subresource.is_empty() {
                    m["subresource"] = json!(e.subresource);
                }
                m
            })
            .collect(),
    )
}

/// Whether a path is the writer's to own: a main-resource write of a resource with a status
/// subresource never owns status, a status write owns status only.
fn writable(def: &ResourceDef, w: &Writer, p: &Path) -> bool {
    let is_status = p.first().is_some_and(|f| f == "f:status");
    match (def.status_subresource, w.subresource) {
        (true, "") => !is_status,
        (_, "status") => is_status,
        _ => true,
    }
}

/// Records `writer`'s write of `new` (the object before it: `old`) in `new`'s managedFields.
pub fn stamp(def: &ResourceDef, old: Option<&Value>, new: &mut Value, writer: &Writer, now: &str) {
    let before = old.map(field_paths).unwrap_or_default();
    let after = field_paths(new);
    let changed: BTreeSet<Path> = after
        .iter()
        .filter(|(p, v)| before.get(*p) != Some(*v) && writable(def, writer, p))
        .map(|(p, _)| p.clone())
        .collect();
    let mut entries = parse_entries(old.unwrap_or(new));
    for e in &mut entries {
        e.fields
            .retain(|p| after.contains_key(p) && !changed.contains(p));
    }
    let api_version = new
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mine = entries.iter_mut().find(|e| {
        e.manager == writer.manager
            && e.operation == writer.operation
            && e.subresource == writer.subresource
    });
    match mine {
        Some(e) if !changed.is_empty() => {
            e.fields.extend(changed);
            e.time = now.to_string();
            e.api_version = api_version;
        }
        Some(_) => {}
        None if !changed.is_empty() => entries.push(Entry {
            manager: writer.manager.clone(),
            operation: writer.operation.to_string(),
            subresource: writer.subresource.to_string(),
            api_version,
            time: now.to_string(),
            fields: changed,
        }),
        None => {}
    }
    if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
        let rendered = render(&entries);
        if rendered.as_array().is_some_and(Vec::is_empty) {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), rendered);
        }
    }
}

/// The managers a real cluster's objects of this kind show: (main resource, status).
fn usual_managers(def: &ResourceDef) -> (&'static str, &'static str) {
    match (def.group, def.plural) {
        ("kubevirt.io", "virtualmachineinstances") => ("virt-controller", "virt-handler"),
        ("kubevirt.io", "virtualmachines") => ("harvester", "virt-controller"),
        ("", "pods") => ("virt-controller", "kubelet"),
        ("", "nodes") => ("kubelet", "kubelet"),
        ("", "persistentvolumeclaims") => ("harvester", "kube-controller-manager"),
        ("", "persistentvolumes") => ("csi-provisioner", "kube-controller-manager"),
        ("storage.k8s.io", "volumeattachments") => ("kube-controller-manager", "csi-attacher"),
        ("longhorn.io", _) => ("longhorn-manager", "longhorn-manager"),
        _ => ("kubectl-client-side-apply", "kubectl-client-side-apply"),
    }
}

/// Gives an object loaded without managedFields the entries its kind has on a real cluster:
/// its creator owns metadata and spec, the component that reports status owns status.
pub fn synthesize(def: &ResourceDef, obj: &mut Value) {
    if obj.pointer("/metadata/managedFields").is_some() {
        return;
    }
    let time = obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .unwrap_or("1970-01-01T00:00:00Z")
        .to_string();
    let (main, status) = usual_managers(def);
    let status_only = obj.get("status").cloned();
    let mut without_status = obj.clone();
    if let Some(o) = without_status.as_object_mut() {
        o.remove("status");
    }
    stamp(
        def,
        None,
        &mut without_status,
        &Writer::update(main, false),
        &time,
    );
    if let Some(mf) = without_status.pointer("/metadata/managedFields").cloned() {
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("managedFields".into(), mf);
        }
    }
    if status_only.is_some() {
        let mut before = obj.clone();
        if let Some(o) = before.as_object_mut() {
            o.remove("status");
        }
        let as_status = Writer {
            subresource: if def.status_subresource { "status" } else { "" },
            ..Writer::update(status, false)
        };
        stamp(def, Some(&before), obj, &as_status, &time);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{find, RESOURCES};

    fn def(group: &str, plural: &str) -> &'static ResourceDef {
        match find(group, "v1", plural).and_then(|i| RESOURCES.get(i)) {
            Some(d) => d,
            None => panic!("no {plural}"),
        }
    }

    fn managers(v: &Value) -> Vec<String> {
        v.pointer("/metadata/managedFields")
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .map(|e| {
                        format!(
                            "{}/{}",
                            e["manager"].as_str().unwrap_or(""),
                            e.get("subresource").and_then(Value::as_str).unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn manager_from_user_agent_or_field_manager() {
        assert_eq!(
            manager_of(None, "kubectl/v1.33.0 (linux/amd64) kubernetes/abc"),
            "kubectl"
        );
        assert_eq!(
            manager_of(Some("kubectl-edit"), "kubectl/v1.33.0"),
            "kubectl-edit"
        );
        assert_eq!(manager_of(None, ""), "");
    }

    #[test]
    fn an_update_takes_the_fields_it_changed_and_removed_fields_leave() {
        let vmis = def("kubevirt.io", "virtualmachineinstances");
        let mut v = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": "a", "labels": {"kubevirt.io/nodeName": "n1"},
                         "finalizers": ["f1", "f2"]},
            "spec": {"domain": {"devices": {"disks": [{"name": "d0", "disk": {"bus": "virtio"}}]}}},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
        synthesize(vmis, &mut v);
        assert_eq!(managers(&v), ["virt-controller/", "virt-handler/"]);
        let fv = &v["metadata"]["managedFields"][0]["fieldsV1"];
        assert!(
            fv["f:metadata"]["f:finalizers"].get("v:\"f1\"").is_some(),
            "{fv}"
        );
        assert!(
            fv["f:spec"]["f:domain"]["f:devices"]["f:disks"]
                .get("k:{\"name\":\"d0\"}")
                .is_some(),
            "{fv}"
        );

        // vmrecover removes one finalizer: it owns nothing new, f2 leaves virt-controller's set.
        let old = v.clone();
        v["metadata"]["finalizers"] = json!(["f1"]);
        stamp(
            vmis,
            Some(&old),
            &mut v,
            &Writer::update("vmrecover", false),
            "t1",
        );
        assert_eq!(managers(&v), ["virt-controller/", "virt-handler/"]);
        let fv = &v["metadata"]["managedFields"][0]["fieldsV1"];
        assert!(
            fv["f:metadata"]["f:finalizers"].get("v:\"f2\"").is_none(),
            "{fv}"
        );

        // A label change moves that field to its writer.
        let old = v.clone();
        v["metadata"]["labels"]["kubevirt.io/nodeName"] = json!("n2");
        stamp(
            vmis,
            Some(&old),
            &mut v,
            &Writer::update("kubectl-edit", false),
            "t2",
        );
        assert_eq!(
            managers(&v),
            ["virt-controller/", "virt-handler/", "kubectl-edit/"]
        );
        let mine = &v["metadata"]["managedFields"][2];
        assert_eq!(mine["time"], "t2");
        assert!(mine["fieldsV1"]["f:metadata"]["f:labels"]
            .get("f:kubevirt.io/nodeName")
            .is_some());
    }

    #[test]
    fn status_belongs_to_status_writes_where_there_is_a_subresource() {
        let pods = def("", "pods");
        let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        synthesize(pods, &mut p);
        assert_eq!(managers(&p), ["virt-controller/", "kubelet/status"]);
        let old = p.clone();
        p["status"]["phase"] = json!("Failed");
        stamp(
            pods,
            Some(&old),
            &mut p,
            &Writer::update("someone", false),
            "t",
        );
        assert_eq!(
            managers(&p),
            ["virt-controller/", "kubelet/status"],
            "a main-resource write owns no status"
        );
    }
}
