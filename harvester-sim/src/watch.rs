//! Watch streams: newline-delimited JSON events (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR)
//! with the apiserver's resourceVersion semantics, selector transitions and 410 Gone.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::Response;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use crate::errors::ApiError;
use crate::exchange::{Body, State, WatchParams};
use crate::resources::RESOURCES;
use crate::store::{EventType, StoreEvent};
use crate::table;

/// How often a watch that allows bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);

struct Filter {
    params: WatchParams,
    headers_sent: bool,
}

impl Filter {
    fn matches(&self, o: &Value) -> bool {
        let Some(def) = RESOURCES.get(self.params.res) else {
            return false;
        };
        if let Some(ns) = &self.params.ns {
            if crate::meta::namespace(o) != ns {
                return false;
            }
        }
        self.params.label.matches(o) && self.params.field.matches(def, o)
    }

    /// The event type a watcher with this filter sees, if any (objects moving in or out of the
    /// selection appear as ADDED or DELETED, like the apiserver's watch cache does it).
    fn translate(&self, ev: &StoreEvent) -> Option<(&'static str, Value)> {
        if ev.res != crate::convert::storage_of(self.params.res) {
            return None;
        }
        // Matched before any copy: most events of a busy resource concern other watchers.
        let object = crate::convert::view_cow(self.params.res, &ev.object);
        let now = self.matches(&object);
        let before = ev
            .old
            .as_ref()
            .is_some_and(|o| self.matches(&crate::convert::view_cow(self.params.res, o)));
        let ty = match ev.kind {
            EventType::Added => now.then_some("ADDED"),
            EventType::Deleted => before.then_some("DELETED"),
            EventType::Modified => match (before, now) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            },
        }?;
        Some((ty, object.into_owned()))
    }

    fn line(&mut self, ty: &str, obj: Value) -> Bytes {
        let obj = match (self.params.table, RESOURCES.get(self.params.res)) {
            (Some(include), Some(def)) if ty != "ERROR" && ty != "BOOKMARK" => {
                let rv = crate::meta::resource_version(&obj).to_string();
                let t = table::table(def, &[obj], &rv, None, include, !self.headers_sent);
                self.headers_sent = true;
                t
            }
            _ if self.params.metadata_only && ty != "ERROR" => crate::partial::object(&obj),
            _ => obj,
        };
        let mut s = serde_json::to_vec(&json!({"type": ty, "object": obj})).unwrap_or_default();
        s.push(b'\n');
        Bytes::from(s)
    }

    fn bookmark(&mut self, rv: u64, initial_end: bool) -> Bytes {
        let Some(def) = RESOURCES.get(self.params.res) else {
            return Bytes::new();
        };
        let mut md = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            md["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        self.line(
            "BOOKMARK",
            json!({"kind": def.kind, "apiVersion": def.api_version(), "metadata": md}),
        )
    }
}

/// Starts a watch response; the stream's byte count is written to request-log record `seq`.
pub(crate) fn start(state: Arc<State>, params: WatchParams, seq: u64) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(256);
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed();
    tokio::spawn(run(state, params, seq, tx));
    Response::builder()
        .status(200)
        .header("Content-Type", "application/json")
        .header("Transfer-Encoding", "chunked")
        .body(body)
        .unwrap_or_else(|_| Response::new(http_body_util::Full::new(Bytes::new()).boxed()))
}

async fn run(
    state: Arc<State>,
    params: WatchParams,
    seq: u64,
    tx: mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
) {
    let mut sent: u64 = 0;
    let mut f = Filter {
        params: params.clone(),
        headers_sent: false,
    };
    macro_rules! send {
        ($b:expr) => {{
            let b: Bytes = $b;
            sent += b.len() as u64;
            if tx.send(Ok(Frame::data(b))).await.is_err() {
                state.log.set_bytes_out(seq, sent);
                return;
            }
        }};
    }
    let start = state.store.watch_start(
        params.res,
        params.ns.as_deref(),
        (&params.label, &params.field),
        params.resource_version.as_deref(),
        params.send_initial_events,
    );
    let start = match start {
        Ok(s) => s,
        Err(e) => {
            let line = f.line("ERROR", e.to_status());
            send!(line);
            state.log.set_bytes_out(seq, sent);
            return;
        }
    };
    let mut last_rv = start.start_rv;
    for ev in &start.initial {
        if let Some((ty, obj)) = f.translate(ev) {
            let line = f.line(ty, obj);
            send!(line);
        }
    }
    if params.send_initial_events {
        let line = f.bookmark(start.start_rv, true);
        send!(line);
    }
    let mut rx = start.rx;
    let deadline = params
        .timeout_seconds
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let mut shutdown = state.shutdown.clone();
    let mut bookmark_tick = tokio::time::interval(BOOKMARK_EVERY);
    bookmark_tick.tick().await;
    loop {
        let timeout = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(ev) => {
                    if ev.rv <= last_rv && ev.rv <= start.start_rv {
                        continue;
                    }
                    last_rv = last_rv.max(ev.rv);
                    if let Some((ty, obj)) = f.translate(&ev) {
                        let line = f.line(ty, obj);
                        send!(line);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let e = ApiError::expired(format!("too old resource version: {last_rv}"));
                    let line = f.line("ERROR", e.to_status());
                    send!(line);
                    break;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = timeout => break,
            _ = bookmark_tick.tick(), if params.allow_bookmarks => {
                let line = f.bookmark(last_rv, false);
                send!(line);
            }
            _ = tx.closed() => break,
            _ = shutdown.changed() => break,
        }
    }
    state.log.set_bytes_out(seq, sent);
}
