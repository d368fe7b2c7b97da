//! Kubernetes-shaped `Status` errors, with the same messages the real apiserver uses.

use serde_json::{json, Value};

use crate::resources::ResourceDef;

/// An API error answered as a `kind: Status` body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `reason` (NotFound, AlreadyExists, Conflict, Invalid, ...).
    pub reason: &'static str,
    /// Human-readable message, printed by kubectl after `Error from server (Reason): `.
    pub message: String,
    /// `details` object (name, group, kind, causes), possibly empty.
    pub details: Value,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

fn details(res: &ResourceDef, name: &str) -> Value {
    json!({"name": name, "group": res.group, "kind": res.plural})
}

impl ApiError {
    /// The `Status` body for this error.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if !self.details.is_null() {
            s["details"] = self.details.clone();
        }
        s
    }

    /// A generic error with no details.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: Value::Null,
        }
    }

    /// 404 `virtualmachines.kubevirt.io "x" not found`.
    pub fn not_found(res: &ResourceDef, name: &str) -> Self {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("{} \"{}\" not found", res.qualified(), name),
            details: details(res, name),
        }
    }

    /// 404 for a namespace that does not exist (object creation in a missing namespace).
    pub fn namespace_not_found(ns: &str) -> Self {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("namespaces \"{ns}\" not found"),
            details: json!({"name": ns, "kind": "namespaces"}),
        }
    }

    /// 409 `... already exists`.
    pub fn already_exists(res: &ResourceDef, name: &str) -> Self {
        ApiError {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{} \"{}\" already exists", res.qualified(), name),
            details: details(res, name),
        }
    }

    /// 409 Conflict with the message the apiserver uses for optimistic-concurrency failures.
    pub fn conflict(res: &ResourceDef, name: &str, why: &str) -> Self {
        ApiError {
            code: 409,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on {} \"{}\": {}",
                res.qualified(),
                name,
                why
            ),
            details: details(res, name),
        }
    }

    /// 409 Conflict named by kind, as `BeforeDelete` builds it for a failed precondition
    /// (`NewConflict(GroupResource{Group: gvk.Group, Resource: gvk.Kind}, ...)`):
    /// `Operation cannot be fulfilled on Pod "x": ...`,
    /// `... on VirtualMachineInstance.kubevirt.io "x": ...`.
    pub fn conflict_on_kind(res: &ResourceDef, name: &str, why: &str) -> Self {
        let gr = if res.group.is_empty() {
            res.kind.to_string()
        } else {
            format!("{}.{}", res.kind, res.group)
        };
        ApiError {
            code: 409,
            reason: "Conflict",
            message: format!("Operation cannot be fulfilled on {gr} \"{name}\": {why}"),
            details: json!({"name": name, "group": res.group, "kind": res.kind}),
        }
    }

    /// 409 Conflict for a stale resourceVersion.
    pub fn stale(res: &ResourceDef, name: &str) -> Self {
        Self::conflict(
            res,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 Invalid with field causes: `Kind.group "name" is invalid: field: Type: detail`.
    pub fn invalid(
        res: &ResourceDef,
        name: &str,
        field: &str,
        cause_type: &str,
        detail: &str,
    ) -> Self {
        let gk = if res.group.is_empty() {
            res.kind.to_string()
        } else {
            format!("{}.{}", res.kind, res.group)
        };
        let reason_text = match cause_type {
            "FieldValueForbidden" => "Forbidden",
            "FieldValueRequired" => "Required value",
            _ => "Invalid value",
        };
        ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("{gk} \"{name}\" is invalid: {field}: {reason_text}: {detail}"),
            details: json!({
                "name": name,
                "group": res.group,
                "kind": res.kind,
                "causes": [{"reason": cause_type, "message": format!("{reason_text}: {detail}"), "field": field}],
            }),
        }
    }

    /// The generic 422 the apiserver answers when a JSON patch cannot be applied (failed `test`,
    /// missing path): client-go's `NewGenericServerResponse(422, ...)` with empty details.
    pub fn patch_not_applied() -> Self {
        ApiError {
            code: 422,
            reason: "Invalid",
            message: "the server rejected our request due to an error in our request".into(),
            details: json!({}),
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// 404 for an unknown path (`the server could not find the requested resource`).
    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 415 for an unsupported patch content type.
    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct:?})"),
        )
    }

    /// 410 Gone (`Expired`) for a watch from a compacted resourceVersion.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// An injected fault: a status with the reason and message client-go uses for that code.
    pub fn injected(code: u16, message: Option<&str>) -> Self {
        let (reason, default_msg) = match code {
            400 => ("BadRequest", "the server rejected our request for an unknown reason"),
            401 => ("Unauthorized", "Unauthorized"),
            403 => ("Forbidden", "forbidden: injected fault"),
            404 => ("NotFound", "the server could not find the requested resource"),
            409 => ("Conflict", "the server reported a conflict"),
            410 => ("Expired", "the resource has expired"),
            422 => ("Invalid", "the server rejected our request due to an error in our request"),
            429 => ("TooManyRequests", "the server has received too many requests and has asked us to try again later"),
            500 => ("InternalError", "an error on the server (\"injected fault\") has prevented the request from succeeding"),
            503 => ("ServiceUnavailable", "the server is currently unable to handle the request"),
            504 => ("Timeout", "the server was unable to return a response in the time allotted, but may still be processing the request"),
            _ => ("Unknown", "injected fault"),
        };
        Self::new(code, reason, message.unwrap_or(default_msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{find, RESOURCES};

    #[test]
    fn not_found_matches_kubectl_wording() {
        let Some(i) = find("kubevirt.io", "v1", "virtualmachines") else {
            panic!("vm resource missing")
        };
        let e = ApiError::not_found(&RESOURCES[i], "x");
        assert_eq!(e.message, "virtualmachines.kubevirt.io \"x\" not found");
        let s = e.to_status();
        assert_eq!(s["kind"], "Status");
        assert_eq!(s["details"]["group"], "kubevirt.io");
        assert_eq!(s["details"]["kind"], "virtualmachines");
        assert_eq!(s["code"], 404);
    }

    #[test]
    fn invalid_names_the_group_kind() {
        let Some(i) = find("kubevirt.io", "v1", "virtualmachineinstances") else {
            panic!("vmi resource missing")
        };
        let e = ApiError::invalid(
            &RESOURCES[i],
            "a",
            "metadata.finalizers",
            "FieldValueForbidden",
            "no",
        );
        assert_eq!(
            e.message,
            "VirtualMachineInstance.kubevirt.io \"a\" is invalid: metadata.finalizers: Forbidden: no"
        );
    }
}
