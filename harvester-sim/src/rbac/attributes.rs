//! The authorizer's view of a request, parsed as the apiserver's `RequestInfoFactory` does:
//! verb (get/list/watch/create/update/patch/delete/deletecollection), API group, resource,
//! subresource, namespace and name — or a non-resource path.

/// What the authorizer decides on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attributes {
    /// Whether the path is an API resource path (`/api/v1/...`, `/apis/G/V/...`).
    pub resource_request: bool,
    /// The kube verb (`get`, `list`, `watch`, `create`, ...) or, for non-resource paths, the
    /// lower-case HTTP method.
    pub verb: String,
    /// The URL path.
    pub path: String,
    /// API group ("" for core).
    pub api_group: String,
    /// Resource (plural).
    pub resource: String,
    /// Subresource (`status`), or empty.
    pub subresource: String,
    /// Namespace, or empty for cluster scope.
    pub namespace: String,
    /// Object name, or empty (a list or watch restricted by `fieldSelector=metadata.name=X`
    /// carries X, as in the real request info).
    pub name: String,
}

/// Subresources of a namespace that are not resources in their own right.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

impl Attributes {
    /// Parses a request: method, URL path and decoded query parameters.
    pub fn from_request(method: &str, path: &str, query: &[(String, String)]) -> Self {
        let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let non_resource = || Attributes {
            resource_request: false,
            verb: method.to_ascii_lowercase(),
            path: path.to_string(),
            ..Attributes::default()
        };
        let trimmed = path.trim_matches('/');
        let segs: Vec<&str> = trimmed.split('/').collect();
        let (group, mut parts): (&str, Vec<&str>) = match segs.as_slice() {
            ["api", _v, rest @ ..] if !rest.is_empty() => ("", rest.to_vec()),
            ["apis", g, _v, rest @ ..] if !rest.is_empty() => (*g, rest.to_vec()),
            _ => return non_resource(),
        };
        let mut verb = match method {
            "POST" => "create",
            "GET" | "HEAD" => "get",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "",
        }
        .to_string();
        // The deprecated `/watch/` path prefix.
        if parts.first() == Some(&"watch") {
            parts.remove(0);
            verb = "watch".into();
        }
        let mut a = Attributes {
            resource_request: true,
            path: path.to_string(),
            api_group: group.to_string(),
            ..Attributes::default()
        };
        if parts.first() == Some(&"namespaces") {
            if let Some(ns) = parts.get(1) {
                a.namespace = ns.to_string();
                if parts.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&parts[2]) {
                    parts.drain(..2);
                }
            }
        }
        a.resource = parts.first().map(|s| s.to_string()).unwrap_or_default();
        a.name = parts.get(1).map(|s| s.to_string()).unwrap_or_default();
        a.subresource = parts.get(2).map(|s| s.to_string()).unwrap_or_default();
        if a.name.is_empty() && verb == "get" {
            verb = if matches!(q("watch"), Some("true") | Some("1")) {
                "watch".into()
            } else {
                "list".into()
            };
        }
        if a.name.is_empty() && verb == "delete" {
            verb = "deletecollection".into();
        }
        if a.name.is_empty() && (verb == "list" || verb == "watch") {
            if let Some(name) = q("fieldSelector").and_then(exact_name) {
                a.name = name;
            }
        }
        a.verb = verb;
        a
    }

    /// `resource` or `resource/subresource`, as RBAC rules name it.
    pub fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// The name a field selector pins exactly (`metadata.name=x` or `metadata.name==x`, possibly
/// among other terms).
fn exact_name(selector: &str) -> Option<String> {
    selector.split(',').find_map(|term| {
        let (k, v) = term
            .split_once("==")
            .or_else(|| term.split_once('='))
            .filter(|(k, _)| !k.ends_with('!'))?;
        (k.trim() == "metadata.name" && !v.trim().is_empty()).then(|| v.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn resource_requests() {
        let a = Attributes::from_request(
            "GET",
            "/apis/kubevirt.io/v1/namespaces/d/virtualmachineinstances",
            &q(&[("watch", "true"), ("fieldSelector", "metadata.name=vm-1")]),
        );
        assert_eq!(
            (a.verb.as_str(), a.api_group.as_str(), a.resource.as_str()),
            ("watch", "kubevirt.io", "virtualmachineinstances")
        );
        assert_eq!((a.namespace.as_str(), a.name.as_str()), ("d", "vm-1"));

        let a = Attributes::from_request("GET", "/api/v1/pods", &q(&[]));
        assert_eq!((a.verb.as_str(), a.namespace.as_str()), ("list", ""));

        let a = Attributes::from_request("PATCH", "/api/v1/namespaces/d/pods/p/status", &q(&[]));
        assert_eq!(a.combined_resource(), "pods/status");
        assert_eq!(a.verb, "patch");

        let a = Attributes::from_request("GET", "/api/v1/namespaces/d", &q(&[]));
        assert_eq!(
            (a.resource.as_str(), a.name.as_str(), a.namespace.as_str()),
            ("namespaces", "d", "d")
        );

        let a = Attributes::from_request("DELETE", "/api/v1/namespaces/d/pods", &q(&[]));
        assert_eq!(a.verb, "deletecollection");

        let a = Attributes::from_request("POST", "/api/v1/namespaces/d/pods", &q(&[]));
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("create", ""));
    }

    #[test]
    fn non_resource_requests() {
        for p in [
            "/version",
            "/api",
            "/apis",
            "/apis/kubevirt.io",
            "/openapi/v2",
            "/api/v1",
        ] {
            let a = Attributes::from_request("GET", p, &[]);
            assert!(!a.resource_request, "{p}");
            assert_eq!(a.verb, "get");
        }
    }
}
