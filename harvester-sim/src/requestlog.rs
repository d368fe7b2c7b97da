//! The request log: every HTTP request the simulator answered, plus the writes its simulated
//! controllers made (marked `internal`).

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Bodies longer than this are truncated in the log.
pub const MAX_LOGGED_BODY: usize = 64 * 1024;

/// One logged request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RequestRecord {
    /// Sequence number, from 1.
    pub seq: u64,
    /// RFC 3339 timestamp with sub-second precision.
    pub time: String,
    /// HTTP method.
    pub method: String,
    /// URL path.
    pub path: String,
    /// Raw query string ("" when absent).
    pub query: String,
    /// Request `Content-Type` ("" when absent).
    pub content_type: String,
    /// The response form a read asked for by its `Accept` header's `as=` (`Table`,
    /// `PartialObjectMetadata`, `PartialObjectMetadataList`); "" for the objects themselves.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub view: String,
    /// Request body: parsed JSON when it is JSON, else text (truncated), else null.
    pub body: Value,
    /// Response status code (0 when the connection was dropped by a fault).
    pub status: u16,
    /// Request body size in bytes.
    pub bytes_in: u64,
    /// Response body size in bytes (for watches: the bytes sent until the watch ended).
    pub bytes_out: u64,
    /// Microseconds the simulator took to answer, from the request read to the response
    /// built (waiting for the store's lock included; for a watch, until its stream starts);
    /// 0 for internal writes.
    #[serde(default)]
    pub micros: u64,
    /// True for writes made by the simulated controllers (virt-controller, kubelet, garbage collector).
    #[serde(default)]
    pub internal: bool,
    /// Who made an internal write (`virt-controller`, `kubelet`, `garbage-collector`), or the fault applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The authenticated user of a client request (after impersonation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl RequestRecord {
    /// Whether the response was metadata only (`PartialObjectMetadata[List]`).
    pub fn is_metadata_only(&self) -> bool {
        self.view.starts_with("PartialObjectMetadata")
    }

    /// Whether this is a client's mutating request: POST/PUT/PATCH/DELETE outside `/_sim`, not internal.
    pub fn is_mutating(&self) -> bool {
        !self.internal
            && !self.path.starts_with("/_sim")
            && matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
    }
}

/// Turns a request body into a loggable value.
pub fn body_value(body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        if body.len() <= MAX_LOGGED_BODY {
            return v;
        }
    }
    let text = String::from_utf8_lossy(body);
    if text.len() > MAX_LOGGED_BODY {
        let mut end = MAX_LOGGED_BODY;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Value::String(format!(
            "{}…[truncated {} bytes]",
            &text[..end],
            text.len() - end
        ))
    } else {
        Value::String(text.into_owned())
    }
}

/// The shared, append-only request log (optionally mirrored to a JSON-lines file).
#[derive(Debug, Default)]
pub struct RequestLog {
    inner: Mutex<LogInner>,
}

#[derive(Debug, Default)]
struct LogInner {
    seq: u64,
    records: Vec<RequestRecord>,
    file: Option<std::fs::File>,
}

impl RequestLog {
    /// A log that also appends JSON lines to `path`.
    pub fn with_file(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| anyhow::anyhow!("cannot open request log {}: {e}", path.display()))?;
        Ok(RequestLog {
            inner: Mutex::new(LogInner {
                file: Some(file),
                ..LogInner::default()
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a record (its `seq` and `time` are assigned here); returns the seq.
    pub fn push(&self, mut r: RequestRecord) -> u64 {
        let mut g = self.lock();
        g.seq += 1;
        r.seq = g.seq;
        if r.time.is_empty() {
            r.time = jiff::Timestamp::now().to_string();
        }
        if let Some(f) = g.file.as_mut() {
            if let Ok(line) = serde_json::to_string(&r) {
                // The file mirror is best-effort: a full disk must not fail the request.
                let _ = writeln!(f, "{line}");
            }
        }
        g.records.push(r);
        g.seq
    }

    /// Updates the bytes-out count of a record (used when a watch stream ends).
    pub fn set_bytes_out(&self, seq: u64, bytes: u64) {
        let mut g = self.lock();
        if let Some(r) = g.records.iter_mut().rev().find(|r| r.seq == seq) {
            r.bytes_out = bytes;
        }
    }

    /// A copy of every record.
    pub fn all(&self) -> Vec<RequestRecord> {
        self.lock().records.clone()
    }

    /// Records with seq greater than `since`.
    pub fn since(&self, since: u64) -> Vec<RequestRecord> {
        self.lock()
            .records
            .iter()
            .filter(|r| r.seq > since)
            .cloned()
            .collect()
    }

    /// Forgets every record (sequence numbers keep counting).
    pub fn clear(&self) {
        self.lock().records.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(method: &str, path: &str, internal: bool) -> RequestRecord {
        RequestRecord {
            user: None,
            seq: 0,
            time: String::new(),
            method: method.into(),
            path: path.into(),
            query: String::new(),
            content_type: String::new(),
            view: String::new(),
            body: Value::Null,
            status: 200,
            bytes_in: 0,
            bytes_out: 0,
            micros: 0,
            internal,
            actor: None,
        }
    }

    #[test]
    fn mutating_excludes_reads_sim_api_and_internal() {
        assert!(rec("PATCH", "/api/v1/pods/x", false).is_mutating());
        assert!(!rec("GET", "/api/v1/pods", false).is_mutating());
        assert!(!rec("POST", "/_sim/faults", false).is_mutating());
        assert!(!rec("DELETE", "/api/v1/pods/x", true).is_mutating());
    }

    #[test]
    fn log_assigns_sequence_and_truncates() {
        let log = RequestLog::default();
        assert_eq!(log.push(rec("GET", "/a", false)), 1);
        assert_eq!(log.push(rec("GET", "/b", false)), 2);
        assert_eq!(log.since(1).len(), 1);
        let big = vec![b'x'; MAX_LOGGED_BODY + 10];
        let v = body_value(&big);
        assert!(v.as_str().is_some_and(|s| s.contains("truncated 10 bytes")));
        assert_eq!(body_value(br#"{"a":1}"#)["a"], 1);
    }
}
