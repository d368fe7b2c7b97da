//! The CEL types the creation-time check of a policy knows: CEL's own, and the typed
//! variables the apiserver declares for admission expressions.
//!
//! `request` is typed as k8s.io/apiserver `pkg/admission/plugin/cel/compile.go`
//! (`buildRequestType`, v0.33.0) declares it; `object`, `oldObject` and `params` are `dyn` at
//! creation (the schema-aware check of `policy/validating/typechecking.go` runs later and only
//! writes warnings into the policy's status). `namespaceObject` is typed with its three
//! top-level parts, each `dyn` here (a simplification: the apiserver types their fields too).

use std::sync::Arc;

/// A CEL type, as far as the check follows it.
#[derive(Debug, Clone, PartialEq)]
pub enum Ty {
    /// `dyn`: anything, decided at evaluation.
    Dyn,
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
    /// `null_type`.
    Null,
    /// `google.protobuf.Timestamp`.
    Timestamp,
    /// `google.protobuf.Duration`.
    Duration,
    /// `type`.
    Type,
    /// `list(T)`.
    List(Box<Ty>),
    /// `map(K, V)`.
    Map(Box<Ty>, Box<Ty>),
    /// A declared object type with named fields (`request`, `variables`, ...).
    Object(Arc<ObjectType>),
}

/// A declared object type: its name (for messages) and its fields.
#[derive(Debug, PartialEq)]
pub struct ObjectType {
    /// The type's name, as cel-go prints it.
    pub name: String,
    /// Its fields and their types.
    pub fields: Vec<(String, Ty)>,
}

impl Ty {
    /// A list of `t`.
    pub fn list(t: Ty) -> Ty {
        Ty::List(Box::new(t))
    }

    /// A map from `k` to `v`.
    pub fn map(k: Ty, v: Ty) -> Ty {
        Ty::Map(Box::new(k), Box::new(v))
    }

    /// An object type with `fields`.
    pub fn object(name: &str, fields: Vec<(&str, Ty)>) -> Ty {
        Ty::Object(Arc::new(ObjectType {
            name: name.to_string(),
            fields: fields
                .into_iter()
                .map(|(n, t)| (n.to_string(), t))
                .collect(),
        }))
    }

    /// The type as cel-go names it in its messages.
    pub fn name(&self) -> String {
        match self {
            Ty::Dyn => "dyn".into(),
            Ty::Bool => "bool".into(),
            Ty::Int => "int".into(),
            Ty::Uint => "uint".into(),
            Ty::Double => "double".into(),
            Ty::String => "string".into(),
            Ty::Bytes => "bytes".into(),
            Ty::Null => "null_type".into(),
            Ty::Timestamp => "google.protobuf.Timestamp".into(),
            Ty::Duration => "google.protobuf.Duration".into(),
            Ty::Type => "type".into(),
            Ty::List(t) => format!("list({})", t.name()),
            Ty::Map(k, v) => format!("map({}, {})", k.name(), v.name()),
            Ty::Object(o) => o.name.clone(),
        }
    }

    /// Whether the type is `dyn`.
    pub fn is_dyn(&self) -> bool {
        matches!(self, Ty::Dyn)
    }

    /// Whether a value of type `other` may stand where `self` is expected (dyn on either
    /// side, equal types, lists and maps element-wise).
    pub fn accepts(&self, other: &Ty) -> bool {
        match (self, other) {
            (Ty::Dyn, _) | (_, Ty::Dyn) => true,
            (Ty::List(a), Ty::List(b)) => a.accepts(b),
            (Ty::Map(ak, av), Ty::Map(bk, bv)) => ak.accepts(bk) && av.accepts(bv),
            (a, b) => a == b,
        }
    }

    /// The common type of two branches (`dyn` when they differ only through `dyn`, `None`
    /// when they cannot be the same).
    pub fn join(&self, other: &Ty) -> Option<Ty> {
        match (self, other) {
            (a, b) if a == b => Some(a.clone()),
            (Ty::Null, t) | (t, Ty::Null) if !matches!(t, Ty::Bool | Ty::Int | Ty::Double) => {
                Some(t.clone())
            }
            (Ty::List(a), Ty::List(b)) => a.join(b).map(Ty::list),
            (Ty::Map(ak, av), Ty::Map(bk, bv)) => Some(Ty::map(ak.join(bk)?, av.join(bv)?)),
            (Ty::Dyn, _) | (_, Ty::Dyn) => Some(Ty::Dyn),
            _ => None,
        }
    }

    /// Whether the type is one of CEL's numbers.
    pub fn is_number(&self) -> bool {
        matches!(self, Ty::Int | Ty::Uint | Ty::Double)
    }
}

fn gvk(name: &str, last: &str) -> Ty {
    Ty::object(
        name,
        vec![
            ("group", Ty::String),
            ("version", Ty::String),
            (last, Ty::String),
        ],
    )
}

/// `request`: the AdmissionRequest (compile.go `buildRequestType`).
pub fn request() -> Ty {
    let kind = gvk("kubernetes.GroupVersionKind", "kind");
    let resource = gvk("kubernetes.GroupVersionResource", "resource");
    let user = Ty::object(
        "kubernetes.UserInfo",
        vec![
            ("username", Ty::String),
            ("uid", Ty::String),
            ("groups", Ty::list(Ty::String)),
            ("extra", Ty::map(Ty::String, Ty::list(Ty::String))),
        ],
    );
    Ty::object(
        "kubernetes.AdmissionRequest",
        vec![
            ("kind", kind.clone()),
            ("resource", resource.clone()),
            ("subResource", Ty::String),
            ("requestKind", kind),
            ("requestResource", resource),
            ("requestSubResource", Ty::String),
            ("name", Ty::String),
            ("namespace", Ty::String),
            ("operation", Ty::String),
            ("userInfo", user),
            ("dryRun", Ty::Bool),
            ("options", Ty::Dyn),
        ],
    )
}

/// `namespaceObject` (compile.go `buildNamespaceType`; its parts are `dyn` here).
pub fn namespace_object() -> Ty {
    Ty::object(
        "kubernetes.Namespace",
        vec![
            ("metadata", Ty::Dyn),
            ("spec", Ty::Dyn),
            ("status", Ty::Dyn),
        ],
    )
}

/// `authorizer` (k8s.io/apiserver `pkg/cel/library/authz.go`): its calls are `dyn` here.
pub fn authorizer() -> Ty {
    Ty::object("kubernetes.authorization.Authorizer", Vec::new())
}
