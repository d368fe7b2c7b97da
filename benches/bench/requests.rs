//! Classifies the simulator's request log: what each client request was (list, watch,
//! get, write), over which scope, with which selector, and whether a cluster-wide or
//! namespace-wide list read more than a selector could have narrowed.

use std::collections::BTreeMap;

use harvester_sim::RequestRecord;

/// Resources whose lists can be narrowed to one node in the real API, and how.
const NARROWABLE: &[(&str, &str)] = &[
    ("pods", "field selector spec.nodeName"),
    (
        "virtualmachineinstances",
        "label selector kubevirt.io/nodeName",
    ),
];

/// Why a list of these resources cannot be narrowed to one node.
const NOT_NARROWABLE: &[(&str, &str)] = &[
    (
        "volumeattachments.storage.k8s.io",
        "VolumeAttachment supports no spec.nodeName field selector and carries no node label",
    ),
    (
        "volumes.longhorn.io",
        "Longhorn volumes carry no node label; status.currentNodeID is not a selectable field",
    ),
    (
        "volumeattachments.longhorn.io",
        "Longhorn VolumeAttachments carry no node label; the node is inside spec.attachmentTickets",
    ),
    (
        "virtualmachines.kubevirt.io",
        "a VM carries no node label or field (its node is its VMI's)",
    ),
    (
        "persistentvolumeclaims",
        "a PVC carries no node label or field",
    ),
];

/// One classified client request.
#[derive(Debug, Clone)]
pub struct Classified {
    /// list, watch, get, create, update, patch, delete, discovery.
    pub verb: String,
    /// `resource.group` (core resources without a group).
    pub resource: String,
    /// `cluster` or `ns/<namespace>` (lists and watches).
    pub scope: String,
    /// The decoded selectors, if any.
    pub selector: String,
    /// Bytes in plus out.
    pub bytes: u64,
}

/// Decodes `%XX` and `+` in a query value.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b.get(i) {
            Some(b'%') => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            Some(b'+') => {
                out.push(b' ');
                i += 1;
            }
            Some(c) => {
                out.push(*c);
                i += 1;
            }
            None => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| decode(v))
        .filter(|v| !v.is_empty())
}

/// Classifies one request.
pub fn classify(r: &RequestRecord) -> Classified {
    let segs: Vec<&str> = r.path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest): (&str, &[&str]) = match segs.as_slice() {
        ["api", _v, rest @ ..] => ("", rest),
        ["apis", g, _v, rest @ ..] => (g, rest),
        _ => ("", &[]),
    };
    let (scope, resource, name) = match rest {
        ["namespaces", ns, res, tail @ ..] => (format!("ns/{ns}"), *res, tail.first().copied()),
        ["namespaces"] => ("cluster".to_string(), "namespaces", None),
        ["namespaces", ns] => ("cluster".to_string(), "namespaces", Some(*ns)),
        [res, tail @ ..] => ("cluster".to_string(), *res, tail.first().copied()),
        [] => (String::new(), "", None),
    };
    let resource = if group.is_empty() || resource.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    };
    let selector = [("labelSelector", "label"), ("fieldSelector", "field")]
        .iter()
        .filter_map(|(k, what)| query_param(&r.query, k).map(|v| format!("{what} {v}")))
        .collect::<Vec<_>>()
        .join(", ");
    let watch = matches!(
        query_param(&r.query, "watch").as_deref(),
        Some("true") | Some("1")
    );
    let verb = match (r.method.as_str(), name, resource.is_empty()) {
        (_, _, true) => "discovery",
        ("GET", None, _) if watch => "watch",
        ("GET", None, _) => "list",
        ("GET", Some(_), _) => "get",
        ("POST", _, _) => "create",
        ("PUT", _, _) => "update",
        ("PATCH", _, _) => "patch",
        ("DELETE", _, _) => "delete",
        _ => "other",
    };
    Classified {
        verb: verb.to_string(),
        resource,
        scope: if matches!(verb, "list" | "watch") {
            scope
        } else {
            String::new()
        },
        selector,
        bytes: r.bytes_in + r.bytes_out,
    }
}

/// The client requests of a log (no simulator control calls, no simulated controllers).
pub fn client_requests(log: &[RequestRecord]) -> Vec<&RequestRecord> {
    log.iter()
        .filter(|r| !r.internal && !r.path.starts_with("/_sim"))
        .collect()
}

/// Totals over a set of client requests.
#[derive(Debug, Default, Clone)]
pub struct Totals {
    /// Requests.
    pub requests: usize,
    /// Bytes received by the server.
    pub bytes_in: u64,
    /// Bytes sent by the server.
    pub bytes_out: u64,
    /// Reads before the first mutating request (the initial gather, discovery included).
    pub initial_reads: usize,
    /// Mutating requests.
    pub writes: usize,
}

/// Sums a log.
pub fn totals(log: &[&RequestRecord]) -> Totals {
    let first_write = log
        .iter()
        .position(|r| r.is_mutating())
        .unwrap_or(log.len());
    Totals {
        requests: log.len(),
        bytes_in: log.iter().map(|r| r.bytes_in).sum(),
        bytes_out: log.iter().map(|r| r.bytes_out).sum(),
        initial_reads: first_write,
        writes: log.iter().filter(|r| r.is_mutating()).count(),
    }
}

/// One row of the per-kind breakdown.
#[derive(Debug, Default, Clone)]
pub struct Row {
    /// Requests of this kind.
    pub count: usize,
    /// Their bytes.
    pub bytes: u64,
    /// The simulator's time answering them, in microseconds (`RequestRecord::micros`).
    pub micros: u64,
}

/// Requests grouped by verb, resource, scope and selector.
pub fn breakdown(log: &[&RequestRecord]) -> BTreeMap<(String, String, String, String), Row> {
    let mut rows: BTreeMap<_, Row> = BTreeMap::new();
    for r in log {
        let c = classify(r);
        let scope = if c.scope.starts_with("ns/") && c.verb == "list" {
            // Group per-namespace lists into one row.
            "per namespace".to_string()
        } else {
            c.scope.clone()
        };
        let row = rows
            .entry((c.verb, c.resource, scope, c.selector))
            .or_default();
        row.count += 1;
        row.bytes += c.bytes;
        row.micros += r.micros;
    }
    rows
}

/// A verdict on one list or watch kind without a node selector.
pub struct ListVerdict {
    /// `verb resource scope`.
    pub what: String,
    /// How many such requests.
    pub count: usize,
    /// `None` when nothing could narrow it (with the reason in `note`); `Some(how)` when a
    /// selector could have.
    pub could_narrow: Option<String>,
    /// Why it cannot be narrowed.
    pub note: String,
}

/// Every list or watch without a selector, and whether one could have narrowed it.
pub fn unnarrowed_lists(log: &[&RequestRecord]) -> Vec<ListVerdict> {
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in log {
        let c = classify(r);
        if matches!(c.verb.as_str(), "list" | "watch") && c.selector.is_empty() {
            let scope = if c.scope.starts_with("ns/") {
                "per namespace".to_string()
            } else {
                c.scope.clone()
            };
            *seen
                .entry((format!("{} {}", c.verb, c.resource), scope))
                .or_default() += 1;
        }
    }
    seen.into_iter()
        .map(|((what, scope), count)| {
            let resource = what.split(' ').nth(1).unwrap_or_default();
            let narrow = NARROWABLE
                .iter()
                .find(|(r, _)| *r == resource)
                .map(|(_, how)| how.to_string());
            let note = NOT_NARROWABLE
                .iter()
                .find(|(r, _)| *r == resource)
                .map(|(_, why)| why.to_string())
                .unwrap_or_else(|| "not a per-node resource".to_string());
            ListVerdict {
                what: format!("{what} ({scope})"),
                count,
                could_narrow: narrow,
                note,
            }
        })
        .collect()
}

/// Resources a node agent can read by name once it knows the name (from a VMI, a PVC or a PV),
/// and the one case where it cannot.
const PER_NAME: &[(&str, &str)] = &[
    (
        "virtualmachines.kubevirt.io",
        "a VM has its VMI's name; unknown only for a VM whose VMI is gone",
    ),
    (
        "persistentvolumeclaims",
        "the VMI's volumes name its PVCs",
    ),
    (
        "persistentvolumes",
        "a PVC names its PV; unknown only when the PVC is gone (found by claimRef)",
    ),
    (
        "volumes.longhorn.io",
        "a PV's CSI handle names its Longhorn volume; unknown only when PVC and PV are gone (found by kubernetesStatus.pvcName)",
    ),
    (
        "volumeattachments.longhorn.io",
        "named after its Longhorn volume",
    ),
];

/// Every list (not watch) without a selector of a resource whose objects could have been read
/// by name, with how often it happened and when a list is still needed.
pub fn replaceable_lists(log: &[&RequestRecord]) -> Vec<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in log {
        let c = classify(r);
        if c.verb == "list"
            && c.selector.is_empty()
            && PER_NAME.iter().any(|(p, _)| *p == c.resource)
        {
            *seen.entry(c.resource).or_default() += 1;
        }
    }
    seen.into_iter()
        .map(|(resource, count)| {
            let why = PER_NAME
                .iter()
                .find(|(p, _)| *p == resource)
                .map_or("", |(_, w)| *w);
            format!("list {resource} x{count} could be per-name reads ({why})")
        })
        .collect()
}
