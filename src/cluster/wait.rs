//! Waiting for an object to go away with a watch, not a sleep loop. The server closes
//! each watch before the client's read timeout would cut it, and kube's watcher resumes
//! from the last resourceVersion.

use std::fmt::Debug;

use futures::StreamExt;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

use std::time::Duration;

/// The server-side timeout of a watch: safely below the client's read timeout
/// (`request_timeout`), so an idle watch ends cleanly instead of failing as a timed-out
/// read.
pub fn watch_timeout_secs(request_timeout: Duration) -> u32 {
    let t = request_timeout.as_secs();
    let secs = if t > 10 { t - 5 } else { (t / 2).max(1) };
    u32::try_from(secs).unwrap_or(u32::MAX)
}

/// Resolves once the object `name` with `uid` no longer exists (deleted, or replaced by
/// a new object of the same name). Watch errors are logged and retried with backoff;
/// bound it with a timeout. `watch_timeout_secs` is the server-side timeout of each
/// watch request (see [`watch_timeout_secs`]).
pub async fn until_gone<K>(api: Api<K>, name: &str, uid: &str, watch_timeout_secs: u32)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let config = watcher::Config::default()
        .fields(&format!("metadata.name={name}"))
        .timeout(watch_timeout_secs);
    let mut events = watcher(api, config).default_backoff().boxed();
    let ours = |o: &K| o.meta().uid.as_deref() == Some(uid);
    let mut seen = false;
    let mut warned = false;
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => seen = false,
            Ok(Event::InitApply(o)) => seen |= ours(&o),
            Ok(Event::InitDone) if !seen => return,
            Ok(Event::InitDone) => {}
            Ok(Event::Apply(o)) if !ours(&o) => return,
            Ok(Event::Delete(o)) if ours(&o) => return,
            Ok(_) => {}
            Err(e) => {
                // Once loudly (a refused watch would otherwise look like a slow
                // controller), then quietly while the watcher backs off and retries.
                if !warned {
                    tracing::warn!("cannot watch {name} while waiting for the controllers: {e}");
                    warned = true;
                } else {
                    tracing::debug!("watching {name}: {e}");
                }
            }
        }
    }
}
