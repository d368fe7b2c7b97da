//! The functions of Kubernetes' CEL environment, by the Kubernetes minor whose environment
//! first has them, with their result types: k8s.io/apiserver `pkg/cel/environment/base.go`
//! (v0.33.0 and earlier tags: the `IntroducedVersion` of each library) and cel-go
//! `ext/strings.go` (the strings library's versions: `format` and `strings.quote` from
//! version 1, `join` from 2). Kubernetes 1.0–1.28 environments load strings version 0,
//! 1.29 and later version 2; sets from 1.29; IP and CIDR from 1.30; the `format` library
//! (`format.named`, `validate`) and authorizer selectors from 1.31 (selectors behind a gate
//! on by default from 1.32, taken as 1.32 here); two-variable comprehensions from 1.32;
//! semver and image from 1.33.
//!
//! A name here is only checked to exist in the environment, with its result type; argument
//! types are checked only for the receivers named in [`receiver`] (a wrong overload
//! elsewhere is caught at evaluation, which fails closed).

use super::types::Ty;

/// What a function returns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ret {
    /// `bool`.
    Bool,
    /// `int`.
    Int,
    /// `uint`.
    Uint,
    /// `double`.
    Double,
    /// `string`.
    String,
    /// `bytes`.
    Bytes,
    /// `list(string)`.
    ListString,
    /// `google.protobuf.Duration`.
    Duration,
    /// `google.protobuf.Timestamp`.
    Timestamp,
    /// `type`.
    Type,
    /// anything (`dyn`).
    Dyn,
}

impl Ret {
    /// The type.
    pub fn ty(self) -> Ty {
        match self {
            Ret::Bool => Ty::Bool,
            Ret::Int => Ty::Int,
            Ret::Uint => Ty::Uint,
            Ret::Double => Ty::Double,
            Ret::String => Ty::String,
            Ret::Bytes => Ty::Bytes,
            Ret::ListString => Ty::list(Ty::String),
            Ret::Duration => Ty::Duration,
            Ret::Timestamp => Ty::Timestamp,
            Ret::Type => Ty::Type,
            Ret::Dyn => Ty::Dyn,
        }
    }
}

/// (name, first Kubernetes minor whose environment has it, result).
const FUNCTIONS: &[(&str, u32, Ret)] = &[
    // CEL's standard library.
    ("size", 0, Ret::Int),
    ("int", 0, Ret::Int),
    ("uint", 0, Ret::Uint),
    ("double", 0, Ret::Double),
    ("string", 0, Ret::String),
    ("bytes", 0, Ret::Bytes),
    ("bool", 0, Ret::Bool),
    ("dyn", 0, Ret::Dyn),
    ("type", 0, Ret::Type),
    ("duration", 0, Ret::Duration),
    ("timestamp", 0, Ret::Timestamp),
    ("matches", 0, Ret::Bool),
    ("startsWith", 0, Ret::Bool),
    ("endsWith", 0, Ret::Bool),
    ("contains", 0, Ret::Bool),
    ("getFullYear", 0, Ret::Int),
    ("getMonth", 0, Ret::Int),
    ("getDayOfYear", 0, Ret::Int),
    ("getDayOfMonth", 0, Ret::Int),
    ("getDate", 0, Ret::Int),
    ("getDayOfWeek", 0, Ret::Int),
    ("getHours", 0, Ret::Int),
    ("getMinutes", 0, Ret::Int),
    ("getSeconds", 0, Ret::Int),
    ("getMilliseconds", 0, Ret::Int),
    // cel-go ext.Strings version 0.
    ("charAt", 0, Ret::String),
    ("indexOf", 0, Ret::Int),
    ("lastIndexOf", 0, Ret::Int),
    ("lowerAscii", 0, Ret::String),
    ("upperAscii", 0, Ret::String),
    ("replace", 0, Ret::String),
    ("split", 0, Ret::ListString),
    ("substring", 0, Ret::String),
    ("trim", 0, Ret::String),
    // ext.Strings versions 1 and 2 (Kubernetes 1.29's environment on).
    ("format", 29, Ret::String),
    ("strings.quote", 29, Ret::String),
    ("join", 29, Ret::String),
    // ext.Sets (1.29).
    ("sets.contains", 29, Ret::Bool),
    ("sets.equivalent", 29, Ret::Bool),
    ("sets.intersects", 29, Ret::Bool),
    // Kubernetes URLs, Regex, Lists (always).
    ("url", 0, Ret::Dyn),
    ("isURL", 0, Ret::Bool),
    ("getScheme", 0, Ret::String),
    ("getHost", 0, Ret::String),
    ("getHostname", 0, Ret::String),
    ("getPort", 0, Ret::String),
    ("getEscapedPath", 0, Ret::String),
    ("getQuery", 0, Ret::Dyn),
    ("find", 0, Ret::String),
    ("findAll", 0, Ret::ListString),
    ("isSorted", 0, Ret::Bool),
    ("sum", 0, Ret::Dyn),
    ("min", 0, Ret::Dyn),
    ("max", 0, Ret::Dyn),
    // Kubernetes Authz (1.27), on `authorizer` and what it returns.
    ("path", 27, Ret::Dyn),
    ("group", 27, Ret::Dyn),
    ("serviceAccount", 27, Ret::Dyn),
    ("resource", 27, Ret::Dyn),
    ("subresource", 27, Ret::Dyn),
    ("namespace", 27, Ret::Dyn),
    ("name", 27, Ret::Dyn),
    ("check", 27, Ret::Dyn),
    ("allowed", 27, Ret::Bool),
    ("reason", 27, Ret::String),
    ("errored", 27, Ret::Bool),
    ("error", 27, Ret::String),
    // Kubernetes Quantity and optional types (1.28).
    ("quantity", 28, Ret::Dyn),
    ("isQuantity", 28, Ret::Bool),
    ("sign", 28, Ret::Int),
    ("isGreaterThan", 28, Ret::Bool),
    ("isLessThan", 28, Ret::Bool),
    ("compareTo", 28, Ret::Int),
    ("add", 28, Ret::Dyn),
    ("sub", 28, Ret::Dyn),
    ("asInteger", 28, Ret::Int),
    ("asApproximateFloat", 28, Ret::Double),
    ("isInteger", 28, Ret::Bool),
    ("optional.of", 28, Ret::Dyn),
    ("optional.ofNonZeroValue", 28, Ret::Dyn),
    ("optional.none", 28, Ret::Dyn),
    ("hasValue", 28, Ret::Bool),
    ("value", 28, Ret::Dyn),
    ("orValue", 28, Ret::Dyn),
    ("or", 28, Ret::Dyn),
    // Kubernetes IP and CIDR (1.30).
    ("ip", 30, Ret::Dyn),
    ("isIP", 30, Ret::Bool),
    ("cidr", 30, Ret::Dyn),
    ("isCIDR", 30, Ret::Bool),
    ("family", 30, Ret::Int),
    ("isUnspecified", 30, Ret::Bool),
    ("isLoopback", 30, Ret::Bool),
    ("isLinkLocalMulticast", 30, Ret::Bool),
    ("isLinkLocalUnicast", 30, Ret::Bool),
    ("isGlobalUnicast", 30, Ret::Bool),
    ("ip.isCanonical", 30, Ret::Bool),
    ("containsIP", 30, Ret::Bool),
    ("containsCIDR", 30, Ret::Bool),
    ("masked", 30, Ret::Dyn),
    ("prefixLength", 30, Ret::Int),
    // Kubernetes Format (1.31).
    ("format.named", 31, Ret::Dyn),
    ("format.dns1123Label", 31, Ret::Dyn),
    ("format.dns1123Subdomain", 31, Ret::Dyn),
    ("format.dns1035Label", 31, Ret::Dyn),
    ("format.qualifiedName", 31, Ret::Dyn),
    ("format.labelValue", 31, Ret::Dyn),
    ("format.uri", 31, Ret::Dyn),
    ("format.uuid", 31, Ret::Dyn),
    ("format.byte", 31, Ret::Dyn),
    ("format.date", 31, Ret::Dyn),
    ("format.datetime", 31, Ret::Dyn),
    ("validate", 31, Ret::Dyn),
    // Authorizer selectors (1.31, gate on by default from 1.32).
    ("fieldSelector", 32, Ret::Dyn),
    ("labelSelector", 32, Ret::Dyn),
    // Two-variable comprehensions (1.32).
    ("transformList", 32, Ret::Dyn),
    ("transformMap", 32, Ret::Dyn),
    ("transformMapEntry", 32, Ret::Dyn),
    // Semver and image (1.33).
    ("semver", 33, Ret::Dyn),
    ("isSemver", 33, Ret::Bool),
    ("major", 33, Ret::Int),
    ("minor", 33, Ret::Int),
    ("patch", 33, Ret::Int),
    ("image", 33, Ret::Dyn),
    ("isImage", 33, Ret::Bool),
    ("containsDigest", 33, Ret::Bool),
    ("registry", 33, Ret::String),
    ("repository", 33, Ret::String),
    ("identifier", 33, Ret::String),
    ("tag", 33, Ret::String),
    ("digest", 33, Ret::String),
];

/// The result of `name` in the environment of Kubernetes minor `env_minor`; `None` when that
/// environment does not declare it.
pub fn lookup(name: &str, env_minor: u32) -> Option<Ret> {
    FUNCTIONS
        .iter()
        .find(|(n, since, _)| *n == name && env_minor >= *since)
        .map(|(_, _, r)| *r)
}

/// The namespaces of namespaced functions (`strings.quote`, `sets.contains`, ...).
pub fn is_namespace(name: &str) -> bool {
    matches!(name, "strings" | "sets" | "optional" | "format" | "ip")
}

/// Receiver types checked for a member call: the string functions on a string, `join` on a
/// list of strings. `None`: not checked.
pub fn receiver(name: &str) -> Option<fn(&Ty) -> bool> {
    fn string(t: &Ty) -> bool {
        matches!(t, Ty::String | Ty::Dyn)
    }
    fn string_list(t: &Ty) -> bool {
        matches!(t, Ty::Dyn) || matches!(t, Ty::List(e) if matches!(**e, Ty::String | Ty::Dyn))
    }
    match name {
        "charAt" | "lowerAscii" | "upperAscii" | "replace" | "split" | "substring" | "trim"
        | "format" | "matches" | "startsWith" | "endsWith" => Some(string),
        "join" => Some(string_list),
        _ => None,
    }
}

/// Argument types checked for the standard functions whose overloads take one kind of
/// argument (cel-go `common/stdlib` declarations, v0.17 … v0.23): `size` of a string, bytes,
/// list or map; `startsWith`, `endsWith`, `contains` and `matches` with a string. `true` for
/// every other call (not checked).
pub fn arguments_accepted(name: &str, target: Option<&Ty>, args: &[Ty]) -> bool {
    fn sized(t: &Ty) -> bool {
        matches!(
            t,
            Ty::String | Ty::Bytes | Ty::List(_) | Ty::Map(..) | Ty::Dyn
        )
    }
    fn string(t: &Ty) -> bool {
        matches!(t, Ty::String | Ty::Dyn)
    }
    match (name, target, args) {
        ("size", None, [a]) | ("size", Some(a), []) => sized(a),
        ("startsWith" | "endsWith" | "contains" | "matches", Some(_), [a]) => string(a),
        ("matches", None, [a, b]) => string(a) && string(b),
        _ => true,
    }
}
