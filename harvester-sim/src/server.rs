//! The HTTP server: accepts connections on loopback, applies fault rules, dispatches to the
//! Kubernetes API (`api.rs`), the watch streams (`watch.rs`) and the control API (`simapi.rs`),
//! and logs every request.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch as tokio_watch;

use crate::errors::ApiError;
use crate::exchange::{Body, Reply, Req, State};
use crate::faults::FaultAction;
use crate::requestlog::{body_value, RequestRecord};

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024 * 1024;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

fn json_response(status: u16, v: &Value, extra: &[(&str, String)]) -> (Response<Body>, u64) {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    let n = bytes.len() as u64;
    let mut b = Response::builder()
        .status(status)
        .header("Content-Type", "application/json")
        .header("Cache-Control", "no-cache, private");
    for (k, v) in extra {
        b = b.header(*k, v.as_str());
    }
    let resp = b
        .body(full(bytes))
        .unwrap_or_else(|_| Response::new(full(Bytes::new())));
    (resp, n)
}

/// Marker error that makes hyper close the connection without answering.
#[derive(Debug)]
pub(crate) struct DroppedByFault;

impl std::fmt::Display for DroppedByFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for DroppedByFault {}

/// The `as=` of an `Accept` header's first media range ("" when none): the response form the
/// request log records.
fn accept_view(accept: &str) -> String {
    accept
        .split(',')
        .next()
        .unwrap_or_default()
        .split(';')
        .filter_map(|p| p.trim().strip_prefix("as="))
        .next()
        .unwrap_or_default()
        .to_string()
}

async fn handle(
    state: Arc<State>,
    client_cert: Option<crate::rbac::Identity>,
    req: Request<Incoming>,
) -> Result<Response<Body>, DroppedByFault> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let content_type = header("content-type");
    let accept = header("accept");
    let authorization = header("authorization");
    let user_agent = header("user-agent");
    let impersonate = req
        .headers()
        .get("impersonate-user")
        .and_then(|v| v.to_str().ok())
        .map(|u| {
            let groups = req
                .headers()
                .get_all("impersonate-group")
                .iter()
                .filter_map(|g| g.to_str().ok())
                .map(str::to_string)
                .collect();
            (u.to_string(), groups)
        });
    let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let started = std::time::Instant::now();
    let query: Vec<(String, String)> = form_urlencoded::parse(raw_query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut r = Req {
        method,
        path,
        raw_query,
        query,
        content_type,
        accept,
        authorization,
        impersonate,
        who: crate::rbac::Identity::admin(),
        body,
    };
    let mut record = RequestRecord {
        user: None,
        seq: 0,
        time: jiff::Timestamp::now().to_string(),
        method: r.method.clone(),
        path: r.path.clone(),
        query: r.raw_query.clone(),
        content_type: r.content_type.clone(),
        view: accept_view(&r.accept),
        body: body_value(&r.body),
        status: 0,
        bytes_in: r.body.len() as u64,
        bytes_out: 0,
        micros: 0,
        internal: false,
        actor: None,
    };

    if !r.path.starts_with("/_sim") {
        let d = state.faults.check(&r.method, &r.path);
        if !d.delay.is_zero() {
            tokio::time::sleep(d.delay).await;
        }
        match d.action {
            Some(FaultAction::Drop) => {
                record.actor = Some("fault:drop".into());
                state.log.push(record);
                return Err(DroppedByFault);
            }
            Some(FaultAction::Status {
                code,
                message,
                retry_after,
            }) => {
                let e = ApiError::injected(code, message.as_deref());
                let mut extra = Vec::new();
                if code == 429 || retry_after.is_some() {
                    extra.push(("Retry-After", retry_after.unwrap_or(1).to_string()));
                }
                let (resp, n) = json_response(code, &e.to_status(), &extra);
                record.status = code;
                record.bytes_out = n;
                record.actor = Some(format!("fault:status {code}"));
                state.log.push(record);
                return Ok(resp);
            }
            _ => {}
        }
    }

    if !r.path.starts_with("/_sim") {
        let creds = crate::rbac::Credentials {
            authorization: &r.authorization,
            client_cert: client_cert.as_ref(),
            impersonate: r.impersonate.as_ref(),
        };
        let strict = state.tls.is_some();
        match crate::rbac::check(
            &state.store,
            &state.tokens,
            &creds,
            strict,
            state.rbac,
            &r.method,
            &r.path,
            &r.query,
        ) {
            Ok(who) => {
                record.user = Some(who.user.clone());
                if state.rbac {
                    if let Some(a) = crate::api::apply_create_attributes(&state, &r) {
                        if !crate::rbac::authorize(&state.store, &who, &a) {
                            let e = crate::rbac::forbidden(&who, &a);
                            let (resp, n) = json_response(e.code, &e.to_status(), &[]);
                            record.status = e.code;
                            record.bytes_out = n;
                            record.actor = Some(format!("rbac: {} (as create)", e.reason));
                            state.log.push(record);
                            return Ok(resp);
                        }
                    }
                }
                r.who = who;
            }
            Err(e) => {
                let (resp, n) = json_response(e.code, &e.to_status(), &[]);
                record.status = e.code;
                record.bytes_out = n;
                record.actor = Some(format!("rbac: {}", e.reason));
                state.log.push(record);
                return Ok(resp);
            }
        }
    }

    r.who.manager = crate::managed_fields::manager_of(r.q("fieldManager"), &user_agent);
    let reply = if r.path.starts_with("/_sim") {
        crate::simapi::route(&state, &r)
    } else {
        crate::api::route(&state, &r)
    };
    record.micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let (resp, status, n) = match reply {
        Reply::Json(s, v) => {
            let (resp, n) = json_response(s, &v, &[]);
            (resp, s, n)
        }
        Reply::Text(s, t) => {
            let n = t.len() as u64;
            let resp = Response::builder()
                .status(s)
                .header("Content-Type", "text/plain; charset=utf-8")
                .body(full(t))
                .unwrap_or_else(|_| Response::new(full(Bytes::new())));
            (resp, s, n)
        }
        Reply::Bytes(s, ct, b) => {
            let n = b.len() as u64;
            let resp = Response::builder()
                .status(s)
                .header("Content-Type", ct)
                .body(full(b))
                .unwrap_or_else(|_| Response::new(full(Bytes::new())));
            (resp, s, n)
        }
        Reply::Watch(params) => {
            record.status = 200;
            let seq = state.log.push(record);
            return Ok(crate::watch::start(state.clone(), params, seq));
        }
    };
    record.status = status;
    record.bytes_out = n;
    record.micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    state.log.push(record);
    Ok(resp)
}

/// Serves connections until `shutdown` turns true.
pub(crate) async fn serve(listener: TcpListener, state: Arc<State>) {
    let mut shutdown = state.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, _peer)) = accepted else {
            continue;
        };
        let st = state.clone();
        let mut conn_shutdown = state.shutdown.clone();
        tokio::spawn(async move {
            let Some(tls) = st.tls.clone() else {
                serve_connection(st, None, stream, &mut conn_shutdown).await;
                return;
            };
            let tls = tokio::select! {
                t = tokio_rustls::TlsAcceptor::from(tls).accept(stream) => t,
                _ = conn_shutdown.changed() => return,
            };
            // A failed handshake (a client that does not trust the CA) ends the connection.
            let Ok(tls) = tls else {
                return;
            };
            let cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| crate::tls::identity_of(c.as_ref()));
            serve_connection(st, cert, tls, &mut conn_shutdown).await;
        });
    }
}

/// Serves HTTP/1.1 on one (plain or TLS) connection until it closes or the simulator stops.
async fn serve_connection<S>(
    state: Arc<State>,
    client_cert: Option<crate::rbac::Identity>,
    stream: S,
    shutdown: &mut tokio_watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc =
        hyper::service::service_fn(move |req| handle(state.clone(), client_cert.clone(), req));
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        // Errors here are client disconnects or injected drops: nothing to report.
        _ = conn => {}
        _ = shutdown.changed() => {}
    }
}
