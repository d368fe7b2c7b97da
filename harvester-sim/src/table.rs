//! Server-side printing (`meta.k8s.io/v1` `Table`), which kubectl asks for with
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`. Columns follow the real printers
//! (built-in kinds) and the CRDs' `additionalPrinterColumns` (KubeVirt, Longhorn).

use serde_json::{json, Value};

use crate::meta;
use crate::resources::ResourceDef;

/// How much of each object a row carries (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object.
    None,
    /// `PartialObjectMetadata` (the default).
    Metadata,
    /// The full object.
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query value.
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

type Getter = fn(&Value, i64) -> Value;

struct Col {
    name: &'static str,
    ty: &'static str,
    format: &'static str,
    priority: i64,
    get: Getter,
}

const fn col(name: &'static str, ty: &'static str, priority: i64, get: Getter) -> Col {
    Col {
        name,
        ty,
        format: "",
        priority,
        get,
    }
}

/// Kubernetes' `duration.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn age(o: &Value, now: i64) -> Value {
    match o
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(meta::parse_ts)
    {
        Some(t) => json!(human_duration(now - t)),
        None => json!("<unknown>"),
    }
}

fn s(o: &Value, ptr: &str) -> Value {
    match o.pointer(ptr) {
        Some(Value::String(s)) => json!(s),
        Some(Value::Null) | None => json!(""),
        Some(v) => json!(v.to_string()),
    }
}

fn or_none(v: Value) -> Value {
    if v.as_str().is_some_and(str::is_empty) {
        json!("<none>")
    } else {
        v
    }
}

fn condition(o: &Value, ty: &str) -> Value {
    o.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
        })
        .and_then(|c| c.get("status").cloned())
        .unwrap_or(json!(""))
}

fn access_modes(o: &Value, ptr: &str) -> Value {
    let modes: Vec<&str> = o
        .pointer(ptr)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|m| match m {
                    "ReadWriteOnce" => "RWO",
                    "ReadOnlyMany" => "ROX",
                    "ReadWriteMany" => "RWX",
                    "ReadWriteOncePod" => "RWOP",
                    other => other,
                })
                .collect()
        })
        .unwrap_or_default();
    json!(modes.join(","))
}

fn pod_ready(o: &Value, _: i64) -> Value {
    let total = o
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = o
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .map_or(0, |a| {
            a.iter()
                .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
                .count()
        });
    json!(format!("{ready}/{total}"))
}

fn pod_status(o: &Value, _: i64) -> Value {
    let mut reason = o
        .pointer("/status/reason")
        .and_then(Value::as_str)
        .or_else(|| o.pointer("/status/phase").and_then(Value::as_str))
        .unwrap_or("")
        .to_string();
    if let Some(cs) = o
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
    {
        for c in cs {
            if let Some(r) = c.pointer("/state/waiting/reason").and_then(Value::as_str) {
                reason = r.to_string();
            } else if let Some(r) = c
                .pointer("/state/terminated/reason")
                .and_then(Value::as_str)
            {
                reason = r.to_string();
            }
        }
    }
    if meta::is_deleting(o) {
        if o.pointer("/status/reason").and_then(Value::as_str) == Some("NodeLost") {
            reason = "Unknown".into();
        } else {
            reason = "Terminating".into();
        }
    }
    json!(reason)
}

fn pod_restarts(o: &Value, _: i64) -> Value {
    let n: i64 = o
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .map_or(0, |a| {
            a.iter()
                .filter_map(|c| c.get("restartCount").and_then(Value::as_i64))
                .sum()
        });
    json!(n)
}

fn node_status(o: &Value, _: i64) -> Value {
    let ready = condition(o, "Ready");
    let mut st = match ready.as_str() {
        Some("True") => "Ready".to_string(),
        Some("") | None => "Unknown".to_string(),
        _ => "NotReady".to_string(),
    };
    if o.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        st.push_str(",SchedulingDisabled");
    }
    json!(st)
}

fn node_roles(o: &Value, _: i64) -> Value {
    let roles: Vec<&str> = o
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|l| {
            l.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .collect()
        })
        .unwrap_or_default();
    if roles.is_empty() {
        json!("<none>")
    } else {
        json!(roles.join(","))
    }
}

fn pvc_status(o: &Value, _: i64) -> Value {
    if meta::is_deleting(o) {
        return json!("Terminating");
    }
    s(o, "/status/phase")
}

fn pv_claim(o: &Value, _: i64) -> Value {
    let ns = o
        .pointer("/spec/claimRef/namespace")
        .and_then(Value::as_str);
    let name = o.pointer("/spec/claimRef/name").and_then(Value::as_str);
    match (ns, name) {
        (Some(ns), Some(n)) => json!(format!("{ns}/{n}")),
        _ => json!(""),
    }
}

fn columns(r: &ResourceDef) -> Vec<Col> {
    let name = Col {
        format: "name",
        ..col("Name", "string", 0, |o, _| json!(meta::name(o)))
    };
    let age_c = || col("Age", "date", 0, age);
    let mut cols = vec![name];
    match (r.group, r.plural) {
        ("kubevirt.io", "virtualmachines") => cols.extend([
            age_c(),
            col("Status", "string", 0, |o, _| {
                s(o, "/status/printableStatus")
            }),
            col("Ready", "string", 0, |o, _| condition(o, "Ready")),
        ]),
        ("kubevirt.io", "virtualmachineinstances") => cols.extend([
            age_c(),
            col("Phase", "string", 0, |o, _| s(o, "/status/phase")),
            col("IP", "string", 0, |o, _| {
                s(o, "/status/interfaces/0/ipAddress")
            }),
            col("NodeName", "string", 0, |o, _| s(o, "/status/nodeName")),
            col("Ready", "string", 0, |o, _| condition(o, "Ready")),
            col("Live-Migratable", "string", 1, |o, _| {
                condition(o, "LiveMigratable")
            }),
            col("Paused", "string", 1, |o, _| condition(o, "Paused")),
        ]),
        ("longhorn.io", "volumes") => cols.extend([
            col("Data Engine", "string", 0, |o, _| s(o, "/spec/dataEngine")),
            col("State", "string", 0, |o, _| s(o, "/status/state")),
            col("Robustness", "string", 0, |o, _| s(o, "/status/robustness")),
            col("Scheduled", "string", 0, |o, _| condition(o, "Scheduled")),
            col("Size", "string", 0, |o, _| s(o, "/spec/size")),
            col("Node", "string", 0, |o, _| s(o, "/status/currentNodeID")),
            age_c(),
        ]),
        // replica.go's printcolumns: State, Node, Disk, InstanceManager, Image, Age.
        ("longhorn.io", "replicas") => cols.extend([
            col("State", "string", 0, |o, _| s(o, "/status/currentState")),
            col("Node", "string", 0, |o, _| s(o, "/spec/nodeID")),
            col("Disk", "string", 0, |o, _| s(o, "/spec/diskID")),
            col("InstanceManager", "string", 0, |o, _| {
                s(o, "/status/instanceManagerName")
            }),
            col("Image", "string", 0, |o, _| s(o, "/status/currentImage")),
            age_c(),
        ]),
        ("", "pods") => cols.extend([
            col("Ready", "string", 0, pod_ready),
            col("Status", "string", 0, pod_status),
            col("Restarts", "string", 0, pod_restarts),
            age_c(),
            col("IP", "string", 1, |o, _| or_none(s(o, "/status/podIP"))),
            col("Node", "string", 1, |o, _| or_none(s(o, "/spec/nodeName"))),
            col("Nominated Node", "string", 1, |o, _| {
                or_none(s(o, "/status/nominatedNodeName"))
            }),
            col("Readiness Gates", "string", 1, |_, _| json!("<none>")),
        ]),
        ("", "nodes") => cols.extend([
            col("Status", "string", 0, node_status),
            col("Roles", "string", 0, node_roles),
            age_c(),
            col("Version", "string", 0, |o, _| {
                s(o, "/status/nodeInfo/kubeletVersion")
            }),
            col("Internal-IP", "string", 1, |o, _| {
                let ip = o
                    .pointer("/status/addresses")
                    .and_then(Value::as_array)
                    .and_then(|a| {
                        a.iter()
                            .find(|x| x.get("type").and_then(Value::as_str) == Some("InternalIP"))
                    })
                    .and_then(|x| x.get("address").cloned())
                    .unwrap_or(json!(""));
                or_none(ip)
            }),
            col("OS-Image", "string", 1, |o, _| {
                s(o, "/status/nodeInfo/osImage")
            }),
            col("Kernel-Version", "string", 1, |o, _| {
                s(o, "/status/nodeInfo/kernelVersion")
            }),
        ]),
        ("", "namespaces") => cols.extend([
            col("Status", "string", 0, |o, _| s(o, "/status/phase")),
            age_c(),
        ]),
        ("", "persistentvolumeclaims") => cols.extend([
            col("Status", "string", 0, pvc_status),
            col("Volume", "string", 0, |o, _| s(o, "/spec/volumeName")),
            col("Capacity", "string", 0, |o, _| {
                s(o, "/status/capacity/storage")
            }),
            col("Access Modes", "string", 0, |o, _| {
                access_modes(o, "/status/accessModes")
            }),
            col("StorageClass", "string", 0, |o, _| {
                s(o, "/spec/storageClassName")
            }),
            col("VolumeAttributesClass", "string", 0, |o, _| {
                or_none(s(o, "/spec/volumeAttributesClassName"))
            }),
            age_c(),
            col("VolumeMode", "string", 1, |o, _| s(o, "/spec/volumeMode")),
        ]),
        ("", "persistentvolumes") => cols.extend([
            col("Capacity", "string", 0, |o, _| {
                s(o, "/spec/capacity/storage")
            }),
            col("Access Modes", "string", 0, |o, _| {
                access_modes(o, "/spec/accessModes")
            }),
            col("Reclaim Policy", "string", 0, |o, _| {
                s(o, "/spec/persistentVolumeReclaimPolicy")
            }),
            col("Status", "string", 0, pvc_status),
            col("Claim", "string", 0, pv_claim),
            col("StorageClass", "string", 0, |o, _| {
                s(o, "/spec/storageClassName")
            }),
            col("VolumeAttributesClass", "string", 0, |o, _| {
                or_none(s(o, "/spec/volumeAttributesClassName"))
            }),
            col("Reason", "string", 0, |o, _| s(o, "/status/reason")),
            age_c(),
            col("VolumeMode", "string", 1, |o, _| s(o, "/spec/volumeMode")),
        ]),
        ("storage.k8s.io", "volumeattachments") => cols.extend([
            col("Attacher", "string", 0, |o, _| s(o, "/spec/attacher")),
            col("PV", "string", 0, |o, _| {
                s(o, "/spec/source/persistentVolumeName")
            }),
            col("Node", "string", 0, |o, _| s(o, "/spec/nodeName")),
            col("Attached", "boolean", 0, |o, _| {
                json!(o
                    .pointer("/status/attached")
                    .and_then(Value::as_bool)
                    .unwrap_or(false))
            }),
            age_c(),
        ]),
        ("coordination.k8s.io", "leases") => cols.extend([
            col("Holder", "string", 0, |o, _| s(o, "/spec/holderIdentity")),
            age_c(),
        ]),
        _ => cols.push(age_c()),
    }
    cols
}

fn column_definitions(cols: &[Col]) -> Value {
    json!(cols
        .iter()
        .map(|c| json!({
            "name": c.name,
            "type": c.ty,
            "format": c.format,
            "description": "",
            "priority": c.priority,
        }))
        .collect::<Vec<_>>())
}

fn row(cols: &[Col], o: &Value, now: i64, include: IncludeObject) -> Value {
    let cells: Vec<Value> = cols.iter().map(|c| (c.get)(o, now)).collect();
    let mut r = json!({"cells": cells});
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            r["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
            })
        }
        IncludeObject::Object => r["object"] = o.clone(),
    }
    r
}

/// A Table for a list of objects.
pub fn table(
    r: &ResourceDef,
    items: &[Value],
    resource_version: &str,
    cont: Option<&str>,
    include: IncludeObject,
    with_headers: bool,
) -> Value {
    let now = jiff::Timestamp::now().as_second();
    let cols = columns(r);
    let mut md = json!({"resourceVersion": resource_version});
    if let Some(c) = cont {
        md["continue"] = json!(c);
    }
    let mut t = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": md,
        "rows": items.iter().map(|o| row(&cols, o, now, include)).collect::<Vec<_>>(),
    });
    if with_headers {
        t["columnDefinitions"] = column_definitions(&cols);
    }
    t
}

/// Whether an `Accept` header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{find, RESOURCES};

    #[test]
    fn human_durations_like_kubernetes() {
        let cases = [
            (5, "5s"),
            (119, "119s"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600 + 60, "3h1m"),
            (10 * 3600, "10h"),
            (3 * 86400 + 3600, "3d1h"),
            (30 * 86400, "30d"),
            (3 * 365 * 86400, "3y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn vmi_and_pod_rows() {
        let Some(vmis) = find("kubevirt.io", "v1", "virtualmachineinstances") else {
            panic!("no vmis")
        };
        let vmi = json!({"metadata": {"name": "a", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "status": {"phase": "Running", "nodeName": "n1", "conditions": [{"type": "Ready", "status": "False"}]}});
        let t = table(
            &RESOURCES[vmis],
            &[vmi],
            "5",
            None,
            IncludeObject::Metadata,
            true,
        );
        assert_eq!(t["rows"][0]["cells"][2], "Running");
        assert_eq!(t["rows"][0]["cells"][4], "n1");
        assert_eq!(t["rows"][0]["cells"][5], "False");
        assert_eq!(t["columnDefinitions"][0]["format"], "name");
        let Some(pods) = find("", "v1", "pods") else {
            panic!("no pods")
        };
        let pod = json!({"metadata": {"name": "p", "deletionTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Running"}});
        let t = table(
            &RESOURCES[pods],
            &[pod],
            "5",
            None,
            IncludeObject::None,
            false,
        );
        assert_eq!(t["rows"][0]["cells"][2], "Terminating");
        assert_eq!(t["rows"][0]["cells"][1], "0/1");
        assert!(t.get("columnDefinitions").is_none());
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }
}
