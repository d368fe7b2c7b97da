//! API errors in words a person can act on: the verb, the object and the server's answer.

/// Describes a failed request: `verb` on `what` (e.g. `list virtualmachineinstances.kubevirt.io`).
pub fn describe(err: &kube::Error, verb: &str, what: &str) -> String {
    match err {
        kube::Error::Api(status) if status.code == 403 => forbidden(verb, what, &status.message),
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

/// The words for a 403: `verb` on `what` is not granted, and where to grant it.
pub fn forbidden(verb: &str, what: &str, message: &str) -> String {
    format!(
        "{verb} {what}: forbidden — the identity vmrecover runs as lacks `{verb}` on {what} \
         (grant it with deploy/rbac.yaml): {message}"
    )
}

/// A request the API server refused or that did not reach it: `verb` on `what`, shown in
/// [`describe`]'s words.
#[derive(Debug, thiserror::Error)]
#[error("{}", describe(.source, .verb, .what))]
pub struct RequestFailed {
    /// The verb (`create`, `update`, `patch`, `delete`).
    pub verb: &'static str,
    /// The object (`leases/vmrecover-n1`, `configmaps harvester-system/x`).
    pub what: String,
    /// The client's error.
    pub source: kube::Error,
}

impl RequestFailed {
    /// `verb` on `what` failed with `source`.
    pub fn new(verb: &'static str, what: impl Into<String>, source: kube::Error) -> Self {
        RequestFailed {
            verb,
            what: what.into(),
            source,
        }
    }

    /// The HTTP status, if the server answered.
    pub fn status_code(&self) -> Option<u16> {
        status_code(&self.source)
    }
}

/// The HTTP status of an API error, if the server answered.
pub fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}
