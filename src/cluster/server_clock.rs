//! The API server's clock, as its responses' `Date` header tells it (issue 23: one clock per
//! judgement). Every judgement that compares with a time the API server wrote
//! (`deletionTimestamp`, a condition's `lastTransitionTime`) uses the server's "now", never
//! this node's wall clock: the latest `Date` seen plus the monotonic time since it came.
//! `Date` has whole seconds and is truncated, so this "now" lags the server by under a
//! second plus the response's flight time: a judgement of "long enough ago" errs on the
//! late side.

use std::sync::Mutex;
use std::time::Instant;

/// The latest `Date` seen and when (monotonic).
static LATEST: Mutex<Option<(jiff::Timestamp, Instant)>> = Mutex::new(None);

/// Records a response's `Date` header (RFC 9110 IMF-fixdate, e.g. `Sun, 06 Dec 2026
/// 08:52:06 GMT`); anything unparsable is ignored.
pub fn observe(headers: &http::HeaderMap) {
    let Some(date) = headers
        .get(http::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date)
    else {
        return;
    };
    let mut latest = LATEST.lock().unwrap_or_else(|e| e.into_inner());
    *latest = Some((date, Instant::now()));
}

/// The API server's "now": the latest `Date` plus the monotonic time since; `None` before
/// any response carried one.
pub fn server_now() -> Option<jiff::Timestamp> {
    let latest = *LATEST.lock().unwrap_or_else(|e| e.into_inner());
    let (date, at) = latest?;
    let since = jiff::SignedDuration::try_from(at.elapsed()).ok()?;
    date.checked_add(since).ok()
}

fn parse_http_date(text: &str) -> Option<jiff::Timestamp> {
    jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(text)
        .ok()
}

/// A `tower` layer function for the client: records the `Date` of every response.
pub fn observe_response<B>(resp: http::Response<B>) -> http::Response<B> {
    observe(resp.headers());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_parse_and_the_server_clock_runs_on_from_the_latest() {
        assert_eq!(
            parse_http_date("Sun, 06 Dec 2026 08:52:06 GMT").map(|t| t.as_second()),
            Some(1_796_547_126)
        );
        assert_eq!(parse_http_date("yesterday"), None);
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::DATE,
            "Thu, 01 Jan 1970 00:16:40 GMT".parse().unwrap(),
        );
        observe(&h);
        let now = server_now().expect("observed");
        assert!(now.as_second() >= 1000 && now.as_second() < 1060, "{now}");
    }
}
