//! What passes between the HTTP server and its handlers: the parsed request, the shared
//! state, the reply, and a watch's parameters (`server.rs` serves, `api.rs`, `simapi.rs`
//! and `watch.rs` answer).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use serde_json::Value;
use tokio::sync::watch as tokio_watch;

use crate::errors::ApiError;
use crate::faults::Faults;
use crate::requestlog::RequestLog;
use crate::resources::ResIdx;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::Store;
use crate::table::IncludeObject;

/// Response body type.
pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// Everything a request handler needs.
pub(crate) struct State {
    pub store: Arc<Store>,
    pub log: Arc<RequestLog>,
    pub faults: Arc<Faults>,
    pub addr: SocketAddr,
    pub shutdown: tokio_watch::Receiver<bool>,
    /// Whether requests are authenticated and authorized (RBAC manifests were given).
    pub rbac: bool,
    /// Tokens issued through TokenRequest.
    pub tokens: Arc<crate::tokens::Tokens>,
    /// HTTPS (`None`: plain HTTP).
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// A parsed request.
pub(crate) struct Req {
    pub method: String,
    pub path: String,
    pub raw_query: String,
    pub query: Vec<(String, String)>,
    pub content_type: String,
    pub accept: String,
    pub authorization: String,
    /// `Impersonate-User` and the `Impersonate-Group` values (kubectl `--as`, `--as-group`).
    pub impersonate: Option<(String, Vec<String>)>,
    /// Who sent it (set once authenticated; the admin until then).
    pub who: crate::rbac::Identity,
    pub body: Bytes,
}

impl Req {
    /// A query parameter.
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean query parameter (`true`/`1`).
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true") | Some("1"))
    }
}

/// What a handler answers.
pub(crate) enum Reply {
    /// A JSON body.
    Json(u16, Value),
    /// Plain text.
    Text(u16, String),
    /// Raw bytes with a content type.
    Bytes(u16, &'static str, Vec<u8>),
    /// A watch stream, started once the request is logged.
    Watch(WatchParams),
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Self {
        Reply::Json(e.code, e.to_status())
    }
}

/// Parameters of a watch request.
#[derive(Debug, Clone)]
pub(crate) struct WatchParams {
    pub res: ResIdx,
    pub ns: Option<String>,
    pub label: LabelSelector,
    pub field: FieldSelector,
    pub resource_version: Option<String>,
    pub timeout_seconds: Option<u64>,
    pub allow_bookmarks: bool,
    pub send_initial_events: bool,
    pub table: Option<IncludeObject>,
    /// `as=PartialObjectMetadata`: each event's object is its metadata only (`crate::partial`).
    pub metadata_only: bool,
}
