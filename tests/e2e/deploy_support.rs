//! Shared by the deploy tests: the RBAC policy of `deploy/` as JSON objects, the individual
//! grants it makes, and the same policy without one grant.

use std::path::Path;

use serde_json::{json, Value};

/// The ClusterRoles, Roles, bindings and ServiceAccounts of `<repo>/deploy/`.
pub fn deploy_policy(repo: &Path) -> Vec<Value> {
    let dir = repo.join("deploy");
    harvester_sim::rbac::load(&dir)
        .unwrap_or_else(|e| panic!("cannot read the RBAC of {}: {e:#}", dir.display()))
}

/// Multi-document YAML (JSON documents, which YAML reads) for `SimConfig::rbac_text`.
pub fn policy_yaml(docs: &[Value]) -> String {
    docs.iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// One verb on one resource granted by one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// `ClusterRole` or `Role`.
    pub kind: String,
    /// The Role's namespace ("" for a ClusterRole).
    pub namespace: String,
    /// The role's name.
    pub name: String,
    /// API group.
    pub group: String,
    /// Resource (possibly `resource/subresource`).
    pub resource: String,
    /// Verb.
    pub verb: String,
}

impl Grant {
    /// `Kind namespace/name group/resource verb`.
    pub fn key(&self) -> String {
        format!(
            "{} {}/{} {}/{} {}",
            self.kind, self.namespace, self.name, self.group, self.resource, self.verb
        )
    }

    fn is_role(&self, doc: &Value) -> bool {
        doc["kind"] == self.kind.as_str()
            && doc["metadata"]["name"] == self.name.as_str()
            && doc["metadata"]["namespace"].as_str().unwrap_or("") == self.namespace
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Every (role, group, resource, verb) the policy grants, in manifest order.
pub fn grants(policy: &[Value]) -> Vec<Grant> {
    let mut out = Vec::new();
    for doc in policy {
        let kind = doc["kind"].as_str().unwrap_or("");
        if kind != "ClusterRole" && kind != "Role" {
            continue;
        }
        for rule in doc["rules"].as_array().into_iter().flatten() {
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        out.push(Grant {
                            kind: kind.to_string(),
                            namespace: doc["metadata"]["namespace"]
                                .as_str()
                                .unwrap_or("")
                                .to_string(),
                            name: doc["metadata"]["name"].as_str().unwrap_or("").to_string(),
                            group: group.clone(),
                            resource: resource.clone(),
                            verb,
                        });
                    }
                }
            }
        }
    }
    out
}

/// The policy with exactly `g` taken away: its rule is split so every other group, resource
/// and verb of it stays granted.
pub fn without(policy: &[Value], g: &Grant) -> Vec<Value> {
    policy
        .iter()
        .map(|doc| {
            if !g.is_role(doc) {
                return doc.clone();
            }
            let mut rules = Vec::new();
            for rule in doc["rules"].as_array().into_iter().flatten() {
                let groups = strings(&rule["apiGroups"]);
                let resources = strings(&rule["resources"]);
                let verbs = strings(&rule["verbs"]);
                if !(groups.contains(&g.group)
                    && resources.contains(&g.resource)
                    && verbs.contains(&g.verb))
                {
                    rules.push(rule.clone());
                    continue;
                }
                let mut part = |groups: Vec<String>, resources: Vec<String>, verbs: Vec<String>| {
                    if !groups.is_empty() && !resources.is_empty() && !verbs.is_empty() {
                        let mut r = rule.clone();
                        r["apiGroups"] = json!(groups);
                        r["resources"] = json!(resources);
                        r["verbs"] = json!(verbs);
                        rules.push(r);
                    }
                };
                let others = |all: &[String], one: &str| -> Vec<String> {
                    all.iter().filter(|x| *x != one).cloned().collect()
                };
                part(others(&groups, &g.group), resources.clone(), verbs.clone());
                part(
                    vec![g.group.clone()],
                    others(&resources, &g.resource),
                    verbs.clone(),
                );
                part(
                    vec![g.group.clone()],
                    vec![g.resource.clone()],
                    others(&verbs, &g.verb),
                );
            }
            let mut d = doc.clone();
            d["rules"] = json!(rules);
            d
        })
        .collect()
}
