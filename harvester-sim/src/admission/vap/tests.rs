//! The dispatcher over hand-made policies: matching, params, failure policy, message choice
//! and the apiserver's error shape.

use serde_json::{json, Value};

use super::*;
use crate::resources::{find, RESOURCES};

struct Cluster {
    policies: Vec<Value>,
    bindings: Vec<Value>,
    params: Vec<Value>,
}

impl Lookup for Cluster {
    fn policies(&self) -> Vec<Value> {
        self.policies.clone()
    }
    fn bindings(&self) -> Vec<Value> {
        self.bindings.clone()
    }
    fn param(&self, _: &str, kind: &str, ns: &str, name: &str) -> Result<Option<Value>, String> {
        if kind != "ConfigMap" {
            return Err(format!(
                "failed to find resource referenced by paramKind: '{kind}'"
            ));
        }
        Ok(self
            .params
            .iter()
            .find(|p| name_of(p) == name && str_at(p, "/metadata/namespace") == ns)
            .cloned())
    }
    fn params_selected(
        &self,
        _: &str,
        kind: &str,
        ns: &str,
        selector: &Value,
    ) -> Result<Vec<Value>, String> {
        if kind != "ConfigMap" {
            return Err(format!(
                "failed to find resource referenced by paramKind: '{kind}'"
            ));
        }
        let mut out = Vec::new();
        for p in &self.params {
            if str_at(p, "/metadata/namespace") == ns
                && labels_match(selector, &p["metadata"]["labels"])?
            {
                out.push(p.clone());
            }
        }
        Ok(out)
    }
    fn namespaced(&self, _: &str, kind: &str) -> Option<bool> {
        (kind == "ConfigMap").then_some(true)
    }
    fn namespace(&self, name: &str) -> Option<Value> {
        Some(json!({"metadata": {"name": name, "labels": {"team": "a"}}}))
    }
}

fn policy(spec: Value) -> Value {
    let mut spec = spec;
    if spec.get("matchConstraints").is_none() {
        spec["matchConstraints"] = json!({"resourceRules": [{"apiGroups": [""],
            "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["pods"]}]});
    }
    json!({"metadata": {"name": "p"}, "spec": spec})
}

fn binding(extra: Value) -> Value {
    let mut spec = json!({"policyName": "p", "validationActions": ["Deny"]});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    json!({"metadata": {"name": "b"}, "spec": spec})
}

fn pods() -> &'static ResourceDef {
    let Some(i) = find("", "v1", "pods") else {
        panic!("pods served")
    };
    &RESOURCES[i]
}

fn check(c: &Cluster, object: &Value, user: &Identity) -> Result<(), ApiError> {
    admit(
        c,
        &Request {
            operation: Operation::Create,
            resource: pods(),
            subresource: "",
            namespace: "default",
            name: "web",
            object: Some(object),
            old_object: None,
            user,
            dry_run: false,
        },
    )
}

fn denial(r: Result<(), ApiError>) -> ApiError {
    match r {
        Err(e) => e,
        Ok(()) => panic!("allowed"),
    }
}

#[test]
fn a_denial_is_the_apiservers_422_with_the_policy_and_binding() {
    let c = Cluster {
        policies: vec![policy(json!({"validations": [
            {"expression": "object.metadata.name == 'db'", "message": "only db"}]}))],
        bindings: vec![binding(json!({}))],
        params: vec![],
    };
    let e = denial(check(
        &c,
        &json!({"metadata": {"name": "web"}}),
        &Identity::admin(),
    ));
    assert_eq!((e.code, e.reason), (422, "Invalid"));
    assert_eq!(
        e.message,
        "pods \"web\" is forbidden: ValidatingAdmissionPolicy 'p' with binding 'b' denied request: only db"
    );
    assert_eq!(
        e.details["causes"][0]["message"],
        "ValidatingAdmissionPolicy 'p' with binding 'b' denied request: only db"
    );
    assert!(check(&c, &json!({"metadata": {"name": "db"}}), &Identity::admin()).is_ok());
}

#[test]
fn messages_match_conditions_and_failure_policy() {
    let sa = Identity::service_account("ns", "agent");
    let mut c = Cluster {
        policies: vec![policy(json!({
        "matchConditions": [{"name": "sa", "expression": "request.userInfo.username.startsWith('system:serviceaccount:')"}],
        "validations": [
            {"expression": "object.spec.x == 1", "messageExpression": "'x is ' + string(object.spec.x)", "reason": "Forbidden"},
            {"expression": "false"},
        ]}))],
        bindings: vec![binding(json!({}))],
        params: vec![],
    };
    // Not the ServiceAccount: the policy does not apply.
    assert!(check(&c, &json!({"spec": {"x": 2}}), &Identity::admin()).is_ok());
    let e = denial(check(&c, &json!({"spec": {"x": 2}}), &sa));
    assert_eq!((e.code, e.reason), (403, "Forbidden"));
    assert!(
        e.message.ends_with("denied request: x is 2"),
        "{}",
        e.message
    );
    // The first validation holds: the second one's message is its expression.
    let e = denial(check(&c, &json!({"spec": {"x": 1}}), &sa));
    assert!(
        e.message
            .ends_with("denied request: failed expression: false"),
        "{}",
        e.message
    );
    // An evaluation error denies under Fail ...
    let e = denial(check(&c, &json!({}), &sa));
    assert!(
        e.message
            .contains("denied request: expression 'object.spec.x == 1' resulted in error: "),
        "{}",
        e.message
    );
    // ... and is skipped under Ignore (the second validation still denies).
    c.policies[0]["spec"]["failurePolicy"] = json!("Ignore");
    let e = denial(check(&c, &json!({}), &sa));
    assert!(
        e.message.ends_with("failed expression: false"),
        "{}",
        e.message
    );
    // Warn and Audit only: nothing is refused.
    c.bindings[0]["spec"]["validationActions"] = json!(["Warn", "Audit"]);
    assert!(check(&c, &json!({}), &sa).is_ok());
}

#[test]
fn params_variables_and_resource_rules() {
    let mut c = Cluster {
        policies: vec![policy(json!({
            "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
            "variables": [{"name": "allowed", "expression": "params.data.names.split(',')"}],
            "validations": [{"expression": "object.metadata.name in variables.allowed"}]}))],
        bindings: vec![binding(
            json!({"paramRef": {"name": "cfg", "namespace": "sys",
            "parameterNotFoundAction": "Deny"}}),
        )],
        params: vec![json!({"metadata": {"name": "cfg", "namespace": "sys"},
            "data": {"names": "web,db"}})],
    };
    let who = Identity::admin();
    assert!(check(&c, &json!({"metadata": {"name": "web"}}), &who).is_ok());
    assert!(check(&c, &json!({"metadata": {"name": "api"}}), &who).is_err());
    // No params: the binding denies (Deny) or is skipped (Allow).
    c.params.clear();
    let e = denial(check(&c, &json!({"metadata": {"name": "web"}}), &who));
    assert!(e.message.ends_with(
        "denied request: failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction"
    ), "{}", e.message);
    c.bindings[0]["spec"]["paramRef"]["parameterNotFoundAction"] = json!("Allow");
    assert!(check(&c, &json!({"metadata": {"name": "api"}}), &who).is_ok());
    // A request the rules do not match is not evaluated: `pods/status`, DELETE.
    c.params
        .push(json!({"metadata": {"name": "cfg", "namespace": "sys"}, "data": {"names": ""}}));
    c.bindings[0]["spec"]["paramRef"]["parameterNotFoundAction"] = json!("Deny");
    let obj = json!({"metadata": {"name": "api"}});
    let mut req = Request {
        operation: Operation::Create,
        resource: pods(),
        subresource: "status",
        namespace: "default",
        name: "api",
        object: Some(&obj),
        old_object: None,
        user: &who,
        dry_run: false,
    };
    assert!(admit(&c, &req).is_ok());
    req.subresource = "";
    assert!(admit(&c, &req).is_err());
    req.operation = Operation::Delete;
    assert!(admit(&c, &req).is_ok());
}

#[test]
fn wildcard_rules_and_request_fields() {
    let c = Cluster {
        policies: vec![policy(json!({
        "matchConstraints": {"resourceRules": [{"apiGroups": ["*"], "apiVersions": ["*"],
            "operations": ["*"], "resources": ["*/*"]}],
            "namespaceSelector": {"matchLabels": {"team": "a"}}},
        "validations": [
            {"expression": "!has(request.subResource) || request.subResource != 'eviction'", "message": "no evictions"},
            {"expression": "has(request.userInfo.extra) && request.userInfo.extra['authentication.kubernetes.io/node-name'][0] == 'n1'", "message": "no node"},
        ]}))],
        bindings: vec![binding(json!({}))],
        params: vec![],
    };
    let who = Identity::service_account("ns", "agent");
    let obj = json!({});
    let mut req = Request {
        operation: Operation::Create,
        resource: pods(),
        subresource: "eviction",
        namespace: "default",
        name: "web",
        object: Some(&obj),
        old_object: None,
        user: &who,
        dry_run: false,
    };
    assert!(denial(admit(&c, &req)).message.ends_with("no evictions"));
    req.subresource = "";
    // No extra at all: `request.userInfo.extra` is absent, has() guards it.
    assert!(denial(admit(&c, &req)).message.ends_with("no node"));
    let mut bound = who.clone();
    bound.extra.insert(
        "authentication.kubernetes.io/node-name".into(),
        vec!["n1".into()],
    );
    req.user = &bound;
    assert!(admit(&c, &req).is_ok());
}

/// rules.go `Matcher.resource`: `*/*` and `pods/*` match a main resource as well as its
/// subresources; `*` and `pods` match the main resource only; `*/status` only that
/// subresource.
#[test]
fn resource_patterns_match_as_the_apiserver_does() {
    let who = Identity::service_account("ns", "agent");
    let obj = json!({});
    let matches = |pattern: &str, sub: &'static str| {
        let c = Cluster {
            policies: vec![policy(json!({
                "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                    "operations": ["*"], "resources": [pattern]}]},
                "validations": [{"expression": "false", "message": "matched"}]}))],
            bindings: vec![binding(json!({}))],
            params: vec![],
        };
        let req = Request {
            operation: Operation::Create,
            resource: pods(),
            subresource: sub,
            namespace: "default",
            name: "web",
            object: Some(&obj),
            old_object: None,
            user: &who,
            dry_run: false,
        };
        admit(&c, &req).is_err()
    };
    let table = [
        ("*/*", "", true),
        ("*/*", "eviction", true),
        ("pods/*", "", true),
        ("*", "", true),
        ("*", "eviction", false),
        ("pods", "eviction", false),
        ("*/eviction", "eviction", true),
        ("*/eviction", "", false),
        ("pods/status", "eviction", false),
    ];
    for (pattern, sub, want) in table {
        assert_eq!(
            matches(pattern, sub),
            want,
            "{pattern} against subresource {sub:?}"
        );
    }
}

/// The param cases of `CollectParams` (policy_dispatcher.go, v1.30.0 and v1.33.0): a selector
/// evaluates every matching object (any denial denies), nothing matching follows
/// `parameterNotFoundAction`, a namespaced kind without `paramRef.namespace` is read in the
/// request's namespace, no `paramRef` leaves `params` null, and the misconfigurations deny.
#[test]
fn param_ref_selector_namespace_and_not_found() {
    let who = Identity::admin();
    let cm = |ns: &str, name: &str, node: &str, fence: bool| {
        let labels = if fence {
            json!({"fence": "yes"})
        } else {
            json!({})
        };
        json!({"metadata": {"name": name, "namespace": ns, "labels": labels},
            "data": {"node": node}})
    };
    let mut c = Cluster {
        policies: vec![policy(json!({
            "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
            "validations": [{"expression": "object.spec.nodeName == params.data.node",
                "messageExpression": "'only on ' + params.data.node"}]}))],
        bindings: vec![binding(json!({"paramRef": {
            "selector": {"matchLabels": {"fence": "yes"}}, "namespace": "sys",
            "parameterNotFoundAction": "Deny"}}))],
        params: vec![cm("sys", "a", "n1", true), cm("sys", "b", "n2", false)],
    };
    let on = |n: &str| json!({"metadata": {"name": "web"}, "spec": {"nodeName": n}});
    // One object selected (b has no label): n1 only.
    assert!(check(&c, &on("n1"), &who).is_ok());
    assert!(denial(check(&c, &on("n2"), &who))
        .message
        .ends_with("denied request: only on n1"));
    // Two selected: each is evaluated, and either one's denial denies.
    c.params.push(cm("sys", "c", "n2", true));
    assert!(check(&c, &on("n1"), &who).is_err());
    assert!(check(&c, &on("n2"), &who).is_err());
    // Another namespace's objects are not selected; none left: Deny denies, Allow skips.
    c.params = vec![cm("other", "a", "n1", true)];
    let e = denial(check(&c, &on("n1"), &who));
    assert!(
        e.message
            .ends_with("failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction"),
        "{}",
        e.message
    );
    c.bindings[0]["spec"]["paramRef"]["parameterNotFoundAction"] = json!("Allow");
    assert!(check(&c, &on("n9"), &who).is_ok());
    // By name without a namespace: the request's namespace ("default").
    c.bindings[0]["spec"]["paramRef"] = json!({"name": "a", "parameterNotFoundAction": "Deny"});
    assert!(check(&c, &on("n1"), &who).is_err(), "no default/a: denied");
    c.params.push(cm("default", "a", "n1", false));
    assert!(check(&c, &on("n1"), &who).is_ok());
    assert!(check(&c, &on("n2"), &who).is_err());
    // Both name and selector, or neither: a configuration error, which denies under Fail.
    c.bindings[0]["spec"]["paramRef"]["selector"] = json!({});
    assert!(denial(check(&c, &on("n1"), &who))
        .message
        .ends_with("paramRef.name and paramRef.selector are mutually exclusive"));
    c.bindings[0]["spec"]["paramRef"] = json!({"parameterNotFoundAction": "Deny"});
    assert!(denial(check(&c, &on("n1"), &who))
        .message
        .ends_with("one of name or selector must be provided"));
    // No paramRef at all: `params` is null, and an expression reading it fails (Fail: denied).
    c.bindings[0]["spec"]
        .as_object_mut()
        .map(|b| b.remove("paramRef"));
    let e = denial(check(&c, &on("n1"), &who));
    assert!(e.message.contains("resulted in error"), "{}", e.message);
    // A namespaced param kind for a cluster-scoped request needs paramRef.namespace.
    c.bindings[0]["spec"]["paramRef"] = json!({"name": "a", "parameterNotFoundAction": "Deny"});
    let nodes = &RESOURCES[find("", "v1", "nodes").expect("nodes served")];
    c.policies[0]["spec"]["matchConstraints"]["resourceRules"][0]["resources"] = json!(["nodes"]);
    let obj = on("n1");
    let req = Request {
        operation: Operation::Create,
        resource: nodes,
        subresource: "",
        namespace: "",
        name: "n1",
        object: Some(&obj),
        old_object: None,
        user: &who,
        dry_run: false,
    };
    let e = denial(admit(&c, &req));
    assert!(
        e.message.ends_with(
            "cannot use namespaced paramRef in policy binding that matches cluster-scoped resources"
        ),
        "{}",
        e.message
    );
}

/// A binding whose params are missing refuses every write it matches, anyone's — except the
/// writes of policies and bindings themselves, which no policy sees (so it can be removed).
#[test]
fn missing_params_refuse_all_but_the_policy_objects() {
    let c = Cluster {
        policies: vec![policy(json!({
            "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
            "matchConstraints": {"resourceRules": [{"apiGroups": ["*"], "apiVersions": ["*"],
                "operations": ["*"], "resources": ["*/*"]}]},
            "matchConditions": [{"name": "nobody", "expression": "false"}],
            "validations": [{"expression": "true"}]}))],
        bindings: vec![binding(
            json!({"paramRef": {"name": "gone", "namespace": "sys",
            "parameterNotFoundAction": "Deny"}}),
        )],
        params: vec![],
    };
    let who = Identity::admin();
    // Params are collected before matchConditions: even a policy for nobody refuses.
    assert!(
        denial(check(&c, &json!({"metadata": {"name": "web"}}), &who))
            .message
            .ends_with("no params found for policy binding with `Deny` parameterNotFoundAction")
    );
    let binding = json!({"metadata": {"name": "b"}});
    let res = &RESOURCES[find(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicybindings",
    )
    .expect("bindings served")];
    let req = Request {
        operation: Operation::Delete,
        resource: res,
        subresource: "",
        namespace: "",
        name: "b",
        object: None,
        old_object: Some(&binding),
        user: &who,
        dry_run: false,
    };
    assert!(admit(&c, &req).is_ok());
}
