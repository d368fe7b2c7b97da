//! Conversion between the served form of a resource and the form it is stored in. Only
//! Events need it: `events.k8s.io/v1` Events are the core `v1` Events seen through other field
//! names, one storage for both APIs as on a real cluster (an Event created through one API
//! is listed, watched and field-selected through the other).
//!
//! The mapping is k8s.io/kubernetes `pkg/apis/events/v1/conversion.go` (v1.33.0):
//! `regarding` ↔ `involvedObject`, `note` ↔ `message`, `reportingController` ↔
//! `reportingComponent`, `deprecatedSource` ↔ `source`, `deprecatedFirstTimestamp` ↔
//! `firstTimestamp`, `deprecatedLastTimestamp` ↔ `lastTimestamp`, `deprecatedCount` ↔
//! `count`; every other field keeps its name.

use std::borrow::Cow;

use serde_json::{json, Map, Value};

use crate::resources::{find, ResIdx, RESOURCES};

/// (events.k8s.io/v1 name, core/v1 name).
const EVENT_FIELDS: [(&str, &str); 7] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// The resource whose storage a served resource uses (itself for all but
/// `events.k8s.io/v1` Events, which are stored as core Events).
pub fn storage_of(res: ResIdx) -> ResIdx {
    match RESOURCES.get(res) {
        Some(r) if r.group == "events.k8s.io" && r.plural == "events" => {
            find("", "v1", "events").unwrap_or(res)
        }
        _ => res,
    }
}

/// Whether a served resource is a view of another one's storage.
pub fn is_view(res: ResIdx) -> bool {
    storage_of(res) != res
}

fn rename(obj: &Value, pairs: &[(&str, &str)], api_version: &str) -> Value {
    let Some(m) = obj.as_object() else {
        return obj.clone();
    };
    let mut out = Map::new();
    for (k, v) in m {
        let key = pairs
            .iter()
            .find(|(from, _)| from == k)
            .map_or(k.as_str(), |(_, to)| *to);
        out.insert(key.to_string(), v.clone());
    }
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!("Event"));
    Value::Object(out)
}

/// The stored object as the served resource `res` shows it.
pub fn to_view(res: ResIdx, stored: &Value) -> Value {
    if !is_view(res) {
        return stored.clone();
    }
    let back: Vec<(&str, &str)> = EVENT_FIELDS.iter().map(|(v, c)| (*c, *v)).collect();
    rename(stored, &back, "events.k8s.io/v1")
}

/// [`to_view`] without a copy when the served form is the stored one (what a filter reads).
pub fn view_cow(res: ResIdx, stored: &Value) -> Cow<'_, Value> {
    if is_view(res) {
        Cow::Owned(to_view(res, stored))
    } else {
        Cow::Borrowed(stored)
    }
}

/// An object of the served resource `res` in its stored form.
pub fn from_view(res: ResIdx, served: &Value) -> Value {
    if !is_view(res) {
        return served.clone();
    }
    rename(served, &EVENT_FIELDS, "v1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_between_the_apis() {
        let (Some(core), Some(ev)) = (
            find("", "v1", "events"),
            find("events.k8s.io", "v1", "events"),
        ) else {
            panic!("events not served")
        };
        assert_eq!(storage_of(ev), core);
        assert!(!is_view(core));
        let served = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "a"}, "regarding": {"name": "vm"}, "note": "n",
            "reportingController": "vmrecover", "action": "A", "deprecatedCount": 2});
        let stored = from_view(ev, &served);
        assert_eq!(stored["apiVersion"], "v1");
        assert_eq!(stored["involvedObject"]["name"], "vm");
        assert_eq!(stored["message"], "n");
        assert_eq!(stored["reportingComponent"], "vmrecover");
        assert_eq!(stored["count"], 2);
        assert_eq!(stored["action"], "A");
        assert_eq!(to_view(ev, &stored), served);
    }
}
