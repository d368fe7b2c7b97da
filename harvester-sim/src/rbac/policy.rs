//! The RBAC authorizer over the Role/ClusterRole/RoleBinding/ClusterRoleBinding objects in
//! the store, with the real matching rules (`rbac/v1` `RuleAllows`, `appliesTo`): `*`
//! wildcards for groups, resources, verbs and non-resource URLs, `*/subresource`, combined
//! `resource/subresource` names, `resourceNames`, ServiceAccount subjects defaulting to the
//! binding's namespace, RoleBindings granting a ClusterRole's rules in their namespace only.
//! ClusterRole `aggregationRule` is not evaluated (the simulator serves no aggregated roles).

use serde_json::Value;

use super::attributes::Attributes;
use crate::identity::Identity;
use crate::resources::find;
use crate::store::Store;

/// Non-resource paths every authenticated user may read: the real default ClusterRoles
/// `system:discovery`, `system:basic-user` and `system:public-info-viewer`.
const DISCOVERY_URLS: [&str; 10] = [
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/healthz",
    "/livez",
    "/readyz",
    "/openapi",
    "/openapi/*",
    "/version",
];

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// The resource rules of the bootstrap ClusterRole `system:basic-user`, bound to
/// `system:authenticated`: every user may ask who it is and what it may do (k8s.io/kubernetes
/// `plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go`, v1.33.0).
fn basic_user_rules() -> [Value; 2] {
    [
        serde_json::json!({"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
            "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]}),
        serde_json::json!({"verbs": ["create"], "apiGroups": ["authentication.k8s.io"],
            "resources": ["selfsubjectreviews"]}),
    ]
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

fn url_matches(rule_urls: &[String], path: &str) -> bool {
    rule_urls.iter().any(|u| {
        u == "*"
            || u == path
            || u.strip_suffix('*')
                .is_some_and(|prefix| path.starts_with(prefix))
    })
}

fn resource_matches(rule_resources: &[String], combined: &str, subresource: &str) -> bool {
    rule_resources.iter().any(|r| {
        r == "*"
            || r == combined
            || (!subresource.is_empty() && r.strip_prefix("*/") == Some(subresource))
    })
}

/// Whether one `PolicyRule` (as JSON) allows the request.
pub fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    if !has(&strings(rule, "verbs"), &a.verb) {
        return false;
    }
    if !a.resource_request {
        return url_matches(&strings(rule, "nonResourceURLs"), &a.path);
    }
    let names = strings(rule, "resourceNames");
    has(&strings(rule, "apiGroups"), &a.api_group)
        && resource_matches(
            &strings(rule, "resources"),
            &a.combined_resource(),
            &a.subresource,
        )
        && (names.is_empty() || names.iter().any(|n| n == &a.name))
}

/// Whether a binding's subject list names the identity (`binding_ns` is "" for a ClusterRoleBinding).
fn applies_to(binding: &Value, who: &Identity, binding_ns: &str) -> bool {
    let Some(subjects) = binding.get("subjects").and_then(Value::as_array) else {
        return false;
    };
    subjects.iter().any(|s| {
        let kind = s.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = s.get("name").and_then(Value::as_str).unwrap_or("");
        match kind {
            "User" => who.user == name,
            "Group" => who.groups.iter().any(|g| g == name),
            "ServiceAccount" => {
                let ns = s
                    .get("namespace")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .unwrap_or(binding_ns);
                !ns.is_empty() && who.user == format!("system:serviceaccount:{ns}:{name}")
            }
            _ => false,
        }
    })
}

/// The rules of the role a binding refers to (empty when the role does not exist).
fn role_rules(store: &Store, binding: &Value, binding_ns: &str) -> Vec<Value> {
    let kind = binding.pointer("/roleRef/kind").and_then(Value::as_str);
    let name = binding
        .pointer("/roleRef/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let (plural, ns) = match kind {
        Some("ClusterRole") => ("clusterroles", ""),
        Some("Role") if !binding_ns.is_empty() => ("roles", binding_ns),
        _ => return Vec::new(),
    };
    find(RBAC_GROUP, "v1", plural)
        .and_then(|res| store.get(res, ns, name).ok())
        .and_then(|role| role.get("rules").and_then(Value::as_array).cloned())
        .unwrap_or_default()
}

/// Decides a request as the real RBAC authorizer (plus the default discovery roles) would.
pub fn authorize(store: &Store, who: &Identity, a: &Attributes) -> bool {
    if who.is_superuser() {
        return true;
    }
    if !a.resource_request
        && a.verb == "get"
        && url_matches(&DISCOVERY_URLS.map(String::from), &a.path)
    {
        return true;
    }
    if basic_user_rules().iter().any(|r| rule_allows(r, a)) {
        return true;
    }
    let allowed_by = |rules: Vec<Value>| rules.iter().any(|r| rule_allows(r, a));
    if let Some(crbs) = find(RBAC_GROUP, "v1", "clusterrolebindings") {
        for b in store.all(crbs) {
            if applies_to(&b, who, "") && allowed_by(role_rules(store, &b, "")) {
                return true;
            }
        }
    }
    if a.namespace.is_empty() {
        return false;
    }
    if let Some(rbs) = find(RBAC_GROUP, "v1", "rolebindings") {
        for b in store.all(rbs) {
            let ns = crate::meta::namespace(&b);
            if ns == a.namespace && applies_to(&b, who, ns) && allowed_by(role_rules(store, &b, ns))
            {
                return true;
            }
        }
    }
    false
}

/// The rules that apply to `who` in namespace `ns`, as a SelfSubjectRulesReview lists them
/// (`RulesFor` of the RBAC authorizer): (resourceRules, nonResourceRules).
pub fn rules_for(store: &Store, who: &Identity, ns: &str) -> (Vec<Value>, Vec<Value>) {
    let mut rules: Vec<Value> = if who.is_superuser() {
        vec![
            serde_json::json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
            serde_json::json!({"verbs": ["*"], "nonResourceURLs": ["*"]}),
        ]
    } else {
        basic_user_rules().to_vec()
    };
    rules.push(serde_json::json!({"verbs": ["get"], "nonResourceURLs": DISCOVERY_URLS}));
    if let Some(crbs) = find(RBAC_GROUP, "v1", "clusterrolebindings") {
        for b in store.all(crbs) {
            if applies_to(&b, who, "") {
                rules.extend(role_rules(store, &b, ""));
            }
        }
    }
    if let Some(rbs) = find(RBAC_GROUP, "v1", "rolebindings") {
        for b in store.all(rbs) {
            let bns = crate::meta::namespace(&b);
            if bns == ns && applies_to(&b, who, bns) {
                rules.extend(role_rules(store, &b, bns));
            }
        }
    }
    rules
        .into_iter()
        .partition(|r| r.get("nonResourceURLs").is_none())
}

/// The real "forbidden" message (`responsewriters.forbiddenMessage` inside `NewForbidden`).
pub fn forbidden_message(who: &Identity, a: &Attributes) -> String {
    let user = &who.user;
    if !a.resource_request {
        return format!(
            "forbidden: User \"{user}\" cannot {} path \"{}\"",
            a.verb, a.path
        );
    }
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", a.namespace)
    };
    let why = format!(
        "User \"{user}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
        a.verb,
        a.combined_resource(),
        a.api_group
    );
    let qualified = if a.api_group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.api_group)
    };
    if a.name.is_empty() {
        format!("{qualified} is forbidden: {why}")
    } else {
        format!("{qualified} \"{}\" is forbidden: {why}", a.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(verb: &str, group: &str, res: &str, sub: &str, ns: &str, name: &str) -> Attributes {
        Attributes {
            resource_request: true,
            verb: verb.into(),
            path: String::new(),
            api_group: group.into(),
            resource: res.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn rules_match_like_the_real_authorizer() {
        let r = json!({"apiGroups": ["kubevirt.io"], "resources": ["virtualmachineinstances"], "verbs": ["patch"]});
        assert!(rule_allows(
            &r,
            &attrs(
                "patch",
                "kubevirt.io",
                "virtualmachineinstances",
                "",
                "d",
                "x"
            )
        ));
        assert!(!rule_allows(
            &r,
            &attrs(
                "update",
                "kubevirt.io",
                "virtualmachineinstances",
                "",
                "d",
                "x"
            )
        ));
        assert!(!rule_allows(
            &r,
            &attrs(
                "patch",
                "kubevirt.io",
                "virtualmachineinstances",
                "status",
                "d",
                "x"
            )
        ));
        assert!(!rule_allows(
            &r,
            &attrs("patch", "", "virtualmachineinstances", "", "d", "x")
        ));
        let sub = json!({"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["*"]});
        assert!(rule_allows(
            &sub,
            &attrs("patch", "", "pods", "status", "d", "x")
        ));
        assert!(!rule_allows(
            &sub,
            &attrs("patch", "", "pods", "", "d", "x")
        ));
        let named = json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "resourceNames": ["a"]});
        assert!(rule_allows(&named, &attrs("get", "", "pods", "", "d", "a")));
        assert!(!rule_allows(
            &named,
            &attrs("get", "", "pods", "", "d", "b")
        ));
        assert!(!rule_allows(
            &named,
            &attrs("list", "", "pods", "", "d", "")
        ));
        let url = json!({"nonResourceURLs": ["/metrics*"], "verbs": ["get"]});
        let mut a = attrs("get", "", "", "", "", "");
        a.resource_request = false;
        a.path = "/metrics/x".into();
        assert!(rule_allows(&url, &a));
    }

    #[test]
    fn forbidden_wording() {
        let who = Identity::service_account("harvester-system", "vmrecover");
        assert_eq!(
            forbidden_message(&who, &attrs("patch", "kubevirt.io", "virtualmachineinstances", "", "default", "vm-1")),
            "virtualmachineinstances.kubevirt.io \"vm-1\" is forbidden: User \"system:serviceaccount:harvester-system:vmrecover\" cannot patch resource \"virtualmachineinstances\" in API group \"kubevirt.io\" in the namespace \"default\""
        );
        assert_eq!(
            forbidden_message(&who, &attrs("list", "", "pods", "", "", "")),
            "pods is forbidden: User \"system:serviceaccount:harvester-system:vmrecover\" cannot list resource \"pods\" in API group \"\" at the cluster scope"
        );
    }
}
