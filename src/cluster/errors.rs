//! API errors in words a person can act on: the verb, the object and the server's answer.

/// Describes a failed request: `verb` on `what` (e.g. `list virtualmachineinstances.kubevirt.io`).
pub fn describe(err: &kube::Error, verb: &str, what: &str) -> String {
    match err {
        kube::Error::Api(status) if status.code == 403 => format!(
            "{verb} {what}: forbidden — the identity vmrecover runs as lacks `{verb}` on {what} \
             (grant it with deploy/rbac.yaml): {}",
            status.message
        ),
        kube::Error::Api(status) if status.code == 404 => {
            format!("{verb} {what}: not found ({})", status.message)
        }
        kube::Error::Api(status) => format!(
            "{verb} {what}: the API server answered {} {}: {}",
            status.code, status.reason, status.message
        ),
        kube::Error::HyperError(e) => format!("{verb} {what}: the API server is unreachable ({e})"),
        kube::Error::Service(e) => {
            format!("{verb} {what}: the API server is unreachable or timed out ({e})")
        }
        other => format!("{verb} {what}: {other}"),
    }
}

/// The HTTP status of an API error, if the server answered.
pub fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}
