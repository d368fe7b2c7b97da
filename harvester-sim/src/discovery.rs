//! Discovery: the API groups and resource lists the simulated apiserver serves at its
//! Kubernetes minor (`/api`, `/apis`, `/apis/GROUP[/VERSION]`), from the resource table
//! ([`crate::resources::RESOURCES`]), the version gates ([`crate::kube_version`]) and the
//! review kinds ([`crate::reviews::REVIEWS`]).

use serde_json::{json, Value};

use crate::kube_version;
use crate::resources::{ResourceDef, RESOURCES};
use crate::reviews;

/// The API groups (other than core) with their versions, in serving order, at Kubernetes
/// minor `minor` ([`crate::kube_version::served`]).
pub fn groups(minor: u32) -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    let served = served_resources(minor).map(|r| (r.group, r.version));
    let reviews = reviews::REVIEWS.iter().map(|(g, v, ..)| (*g, *v));
    for gv in served.chain(reviews) {
        if !gv.0.is_empty() && !out.contains(&gv) {
            out.push(gv);
        }
    }
    out
}

/// The resources served at Kubernetes minor `minor`.
pub fn served_resources(minor: u32) -> impl Iterator<Item = &'static ResourceDef> {
    RESOURCES
        .iter()
        .filter(move |r| kube_version::served(r, minor))
}

/// The `APIResourceList` for one group/version, or `None` when it is not served.
pub fn resource_list(group: &str, version: &str, minor: u32) -> Option<Value> {
    if reviews::is_review_group(group) {
        return reviews::resource_list(group, version);
    }
    let entries: Vec<Value> = served_resources(minor)
        .filter(|r| r.group == group && r.version == version)
        .flat_map(|r| r.discovery_entries())
        .collect();
    if entries.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": entries,
    }))
}

/// The legacy `APIGroupList` served at `/apis`.
pub fn group_list(minor: u32) -> Value {
    let groups: Vec<Value> = groups(minor)
        .into_iter()
        .map(|(g, v)| {
            let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// The `APIGroup` served at `/apis/GROUP`, or `None` when the group is not served.
pub fn group(group: &str, minor: u32) -> Option<Value> {
    let (g, v) = groups(minor).into_iter().find(|(g, _)| *g == group)?;
    let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
    Some(json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": g,
        "versions": [gv.clone()],
        "preferredVersion": gv,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_lists_status_subresources_and_short_names() {
        let list = resource_list("kubevirt.io", "v1", 33).unwrap_or_default();
        let names: Vec<&str> = list["resources"]
            .as_array()
            .map(|a| a.iter().filter_map(|r| r["name"].as_str()).collect())
            .unwrap_or_default();
        assert!(names.contains(&"virtualmachines/status"));
        assert!(!names.contains(&"virtualmachineinstances/status"));
        assert!(names.contains(&"virtualmachines"));
        assert_eq!(list["resources"][0]["shortNames"][0], "vm");
        let apis = group_list(33);
        assert!(apis["groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g["name"] == "longhorn.io")));
    }
}
