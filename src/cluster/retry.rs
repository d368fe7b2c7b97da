//! Bounded retries for requests that are safe to repeat: reads, JSON patches that test
//! the object's uid/resourceVersion/finalizers, deletes with a uid precondition, Lease
//! updates with a resourceVersion. kube's client does not retry by itself; an API server
//! that answers 429 (with Retry-After), 500, 502, 503 or 504, or a connection that drops
//! or times out, gets a few more tries with backoff before the step counts as failed.

use std::future::Future;
use std::time::Duration;

/// Tries per request, the first included.
pub const ATTEMPTS: u32 = 4;

/// The first backoff; it doubles on each further retry.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// The longest wait honoured from a server's `retryAfterSeconds`.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Whether `err` is worth another try: the server was overloaded or failed, or the
/// connection failed or timed out (the request may or may not have been applied: the
/// repeated request's preconditions decide).
pub fn retryable(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(s) => matches!(s.code, 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// How long to wait before retry number `retry` (0-based) after `err`.
pub fn backoff(err: &kube::Error, retry: u32) -> Duration {
    let server = match err {
        kube::Error::Api(s) => s
            .details
            .as_ref()
            .map(|d| Duration::from_secs(u64::from(d.retry_after_seconds)))
            .filter(|d| !d.is_zero()),
        _ => None,
    };
    server
        .map(|d| d.min(MAX_RETRY_AFTER))
        .unwrap_or_else(|| FIRST_BACKOFF.saturating_mul(2u32.saturating_pow(retry.min(8))))
}

/// Runs `request` until it succeeds, fails with an error that is not [`retryable`], or
/// [`ATTEMPTS`] tries are used up; returns the last result.
pub async fn with_retries<T, F, Fut>(what: &str, request: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    with_retries_unless(what, |_| false, request).await
}

/// [`with_retries`], except that an error `is_final` says is returned at once even when it
/// is [`retryable`] (a webhook that cannot be called after a power cut stays down for
/// minutes; a denial will deny again).
pub async fn with_retries_unless<T, F, Fut>(
    what: &str,
    is_final: impl Fn(&kube::Error) -> bool,
    mut request: F,
) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut retry = 0;
    loop {
        match request().await {
            Err(e) if retryable(&e) && !is_final(&e) && retry + 1 < ATTEMPTS => {
                let wait = backoff(&e, retry);
                tracing::info!(
                    "{what}: {e}; retrying in {}",
                    humantime::format_duration(wait)
                );
                tokio::time::sleep(wait).await;
                retry += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::response::StatusDetails;
    use kube::core::Status;

    fn api(code: u16, retry_after: Option<u32>) -> kube::Error {
        let mut s = Status::failure("x", "y");
        s.code = code;
        if let Some(r) = retry_after {
            let mut details: StatusDetails =
                serde_json::from_value(serde_json::json!({})).expect("empty details");
            details.retry_after_seconds = r;
            s.details = Some(details);
        }
        kube::Error::Api(Box::new(s))
    }

    #[test]
    fn which_errors_are_retried_and_how_long_it_waits() {
        for code in [429, 500, 502, 503, 504] {
            assert!(retryable(&api(code, None)), "{code}");
        }
        for code in [400, 403, 404, 409, 410, 422] {
            assert!(!retryable(&api(code, None)), "{code}");
        }
        assert_eq!(backoff(&api(503, None), 0), FIRST_BACKOFF);
        assert_eq!(backoff(&api(503, None), 2), FIRST_BACKOFF * 4);
        assert_eq!(backoff(&api(429, Some(2)), 0), Duration::from_secs(2));
        assert_eq!(backoff(&api(429, Some(3600)), 0), MAX_RETRY_AFTER);
        assert!(backoff(&api(500, None), u32::MAX) <= Duration::from_secs(64));
    }

    #[tokio::test]
    async fn retries_a_bounded_number_of_times() {
        let mut calls = 0;
        let r: Result<(), _> = with_retries("get x", || {
            calls += 1;
            async { Err(api(503, None)) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, ATTEMPTS);
        let mut calls = 0;
        let r = with_retries("get x", || {
            calls += 1;
            let n = calls;
            async move {
                if n < 2 {
                    Err(api(429, Some(1)))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.ok(), Some(2));
        let mut calls = 0;
        let r: Result<(), _> = with_retries("patch x", || {
            calls += 1;
            async { Err(api(409, None)) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1, "a conflict is decided by a re-read, not a retry");
    }
}
