//! Lists that decode object by object, and reads by name: one malformed object is named,
//! never a bare decoding error about a whole list.

use k8s_openapi::NamespaceResourceScope;
use kube::api::{ListParams, ObjectList};
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::Value;

use super::errors::{status_code, RequestFailed};
use super::retry::with_retries;

/// Why a read could not be used: the request failed, or the server answered with objects
/// vmrecover cannot read (each named).
#[derive(Debug, thiserror::Error)]
pub enum ReadFailed {
    /// The request failed.
    #[error(transparent)]
    Request(#[from] RequestFailed),
    /// The answer holds malformed objects: which, and what to do.
    #[error("{0}")]
    Malformed(String),
}

/// How many reads by name one gather has in flight at once. kube speaks HTTP/1.1, so each
/// read in flight is a connection of its own (a TLS handshake, then kept in the client's
/// pool for 90 s): 300 stuck VMs read all at once were 300 connections, the agent's idle
/// memory for a minute and a half after, and a burst no API server needs.
const READS_IN_FLIGHT: usize = 16;

/// Runs `reads` with at most [`READS_IN_FLIGHT`] at once; the results in their order.
/// (A `Vec`, not an iterator: a mapping closure in the future's type defeats the `Send`
/// proof of the boxed re-check future.)
pub(crate) async fn read_all<F: std::future::Future>(reads: Vec<F>) -> Vec<F::Output> {
    use futures::StreamExt;
    futures::stream::iter(reads)
        .buffered(READS_IN_FLIGHT)
        .collect()
        .await
}

/// A list's objects and the resourceVersion it was read at (where a watch of the same
/// objects starts without listing them again).
pub(crate) struct Listed<K> {
    /// The objects.
    pub items: Vec<K>,
    /// The list's `metadata.resourceVersion`, when the server gave one.
    pub version: Option<String>,
}

/// Why a list could not be used.
enum ListError {
    /// The request failed.
    Api(kube::Error),
    /// The server answered, but objects in it are not what vmrecover can read.
    Malformed(String),
}

/// Lists `api` and decodes each object on its own: one malformed object (a wrong type in
/// a field vmrecover reads) makes the list unreadable with a message naming that object,
/// never a bare decoding error about the whole list.
async fn list_lenient<K>(api: &Api<K>, lp: &ListParams, what: &str) -> Result<Listed<K>, ListError>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let client = api.clone().into_client();
    let url = api.resource_url().to_string();
    // Each object is kept as its JSON text until decoded into `K`: a list parsed into a
    // `Value` tree first costs several times its size in memory at once.
    let raw: ObjectList<Box<RawValue>> = with_retries(&format!("list {what}"), || {
        let client = client.clone();
        let req = kube::core::Request::new(url.clone()).list(lp);
        async move {
            match req {
                Ok(req) => client.request::<ObjectList<Box<RawValue>>>(req).await,
                Err(e) => Err(kube::Error::BuildRequest(e)),
            }
        }
    })
    .await
    .map_err(ListError::Api)?;
    let version = raw.metadata.resource_version.filter(|v| !v.is_empty());
    let mut items = Vec::with_capacity(raw.items.len());
    let mut bad = Vec::new();
    for item in raw.items {
        match serde_json::from_str::<K>(item.get()) {
            Ok(k) => items.push(k),
            Err(e) => bad.push(format!("{} ({e})", raw_object_name(&item))),
        }
    }
    if bad.is_empty() {
        Ok(Listed { items, version })
    } else {
        Err(ListError::Malformed(format!(
            "list {what}: malformed object {}: fix or remove it; nothing that depends on this \
             list is touched until then",
            bad.join("; ")
        )))
    }
}

/// `namespace/name` of an object's JSON text, as far as it can be read.
fn raw_object_name(item: &RawValue) -> String {
    match serde_json::from_str::<Value>(item.get()) {
        Ok(v) => object_name(&v),
        Err(_) => "?".to_string(),
    }
}

/// `namespace/name` of a raw object, as far as it can be read.
fn object_name(item: &Value) -> String {
    let meta = item.get("metadata");
    let field = |k: &str| {
        meta.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .unwrap_or("?")
            .chars()
            .take(253)
            .collect::<String>()
    };
    match meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
    {
        Some(_) => format!("{}/{}", field("namespace"), field("name")),
        None => field("name"),
    }
}

pub(crate) async fn list<K>(api: Api<K>, lp: &ListParams, what: &str) -> Result<Vec<K>, ReadFailed>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    list_versioned(api, lp, what).await.map(|l| l.items)
}

/// Like [`list`], with the list's resourceVersion.
pub(crate) async fn list_versioned<K>(
    api: Api<K>,
    lp: &ListParams,
    what: &str,
) -> Result<Listed<K>, ReadFailed>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match list_lenient(&api, lp, what).await {
        Ok(listed) => Ok(listed),
        Err(ListError::Api(e)) => Err(RequestFailed::new("list", what, e).into()),
        Err(ListError::Malformed(m)) => Err(ReadFailed::Malformed(m)),
    }
}

/// Lists a resource that may not exist in the cluster (Longhorn CRDs): 404 is "none".
pub(crate) async fn list_optional<K>(api: Api<K>, what: &str) -> Result<Vec<K>, ReadFailed>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match list_lenient(&api, &ListParams::default(), what).await {
        Ok(listed) => Ok(listed.items),
        Err(ListError::Api(e)) if status_code(&e) == Some(404) => Ok(Vec::new()),
        Err(ListError::Api(e)) => Err(RequestFailed::new("list", what, e).into()),
        Err(ListError::Malformed(m)) => Err(ReadFailed::Malformed(m)),
    }
}

/// Reads the namespaced object `name` in `ns` (`None` when it does not exist), with the
/// bounded retries of requests safe to repeat; errors name the object.
pub(crate) async fn get_named<K>(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
) -> Result<Option<K>, ReadFailed>
where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    get(client, ns, name, what, false).await
}

/// Like [`get_named`] for a resource that may not exist in the cluster (Longhorn CRDs):
/// a 404 for the resource itself is "none".
pub(crate) async fn get_optional<K>(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
) -> Result<Option<K>, ReadFailed>
where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    get(client, ns, name, what, true).await
}

async fn get<K>(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    optional: bool,
) -> Result<Option<K>, ReadFailed>
where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(client.clone(), ns);
    match with_retries(&format!("get {what} {ns}/{name}"), || api.get_opt(name)).await {
        Ok(v) => Ok(v),
        Err(e) if optional && status_code(&e) == Some(404) => Ok(None),
        Err(e) => Err(RequestFailed::new("get", format!("{what} {ns}/{name}"), e).into()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Reads by name are bounded (one HTTP/1.1 connection each) and keep their order.
    #[tokio::test(start_paused = true)]
    async fn reads_by_name_are_bounded_and_keep_their_order() {
        let (now, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let reads: Vec<_> = (0..100u64)
            .map(|i| {
                let (now, most) = (&now, &most);
                async move {
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(100 - i)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    i
                }
            })
            .collect();
        let out = read_all(reads).await;
        assert_eq!(out, (0..100).collect::<Vec<_>>());
        assert_eq!(most.load(Ordering::SeqCst), READS_IN_FLIGHT);
    }
}
