//! The requests the node Lease makes, behind one narrow trait: read, create and replace one
//! Lease, each answered with a typed outcome. The Lease's rules (`lease.rs`: when to take
//! it, what a 409 means, when it is lost) stay apart from the API server: [`KubeLeases`]
//! talks to it, and unit tests (`lease_tests.rs`) script a fake.
//!
//! A release clears the holder rather than deleting the Lease (client-go's
//! `leaderelection.go` `release()` does the same: the Lease and its transitions stay), so
//! no delete is needed.

use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use kube::Client;

use super::errors::forbidden;
use super::retry::with_retries;

/// One Lease's requests.
pub trait LeaseApi: Send + Sync {
    /// Reads the Lease; `Ok(None)` when there is none.
    fn get(&self) -> BoxFuture<'_, Result<Option<Lease>, LeaseCallError>>;

    /// Creates it; [`LeaseCallError::Conflict`] when another writer created it first.
    fn create<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Lease, LeaseCallError>>;

    /// Replaces it with `lease`, whose resourceVersion is tested by the API server:
    /// [`LeaseCallError::Conflict`] when it changed since it was read.
    fn replace<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Lease, LeaseCallError>>;
}

/// How one Lease request failed (after the retries a blip gets, `cluster::retry`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseCallError {
    /// 404: there is no such Lease (any more).
    NotFound {
        /// The server's message.
        message: String,
    },
    /// 409: another writer created or changed it since it was read.
    Conflict {
        /// The server's reason (`Conflict`, `AlreadyExists`).
        reason: String,
        /// The server's message.
        message: String,
    },
    /// 403: the identity vmrecover runs as may not do this.
    Forbidden {
        /// The server's message.
        message: String,
    },
    /// Another answer from the API server.
    Answered {
        /// The HTTP status.
        code: u16,
        /// The server's reason.
        reason: String,
        /// The server's message.
        message: String,
    },
    /// No answer: the API server could not be reached, or did not answer in time.
    Unreachable(String),
}

impl LeaseCallError {
    /// The typed outcome of a client error.
    pub fn from_kube(err: &kube::Error) -> Self {
        match err {
            kube::Error::Api(s) => {
                let message = s.message.clone();
                match s.code {
                    403 => LeaseCallError::Forbidden { message },
                    404 => LeaseCallError::NotFound { message },
                    409 => LeaseCallError::Conflict {
                        reason: s.reason.clone(),
                        message,
                    },
                    code => LeaseCallError::Answered {
                        code,
                        reason: s.reason.clone(),
                        message,
                    },
                }
            }
            kube::Error::HyperError(e) => {
                LeaseCallError::Unreachable(format!("the API server is unreachable ({e})"))
            }
            kube::Error::Service(e) => LeaseCallError::Unreachable(format!(
                "the API server is unreachable or timed out ({e})"
            )),
            other => LeaseCallError::Unreachable(other.to_string()),
        }
    }

    /// `verb` on `what` failed, in `cluster::describe`'s words (a 403 names the verb to
    /// grant).
    pub fn describe(&self, verb: &str, what: &str) -> String {
        match self {
            LeaseCallError::Forbidden { message } => forbidden(verb, what, message),
            LeaseCallError::NotFound { message } => format!("{verb} {what}: not found ({message})"),
            LeaseCallError::Conflict { reason, message } => {
                format!("{verb} {what}: the API server answered 409 {reason}: {message}")
            }
            LeaseCallError::Answered {
                code,
                reason,
                message,
            } => format!("{verb} {what}: the API server answered {code} {reason}: {message}"),
            LeaseCallError::Unreachable(words) => format!("{verb} {what}: {words}"),
        }
    }
}

/// [`LeaseApi`] against the API server; each request gets the bounded retries of a
/// request that is safe to repeat (a replace carries the resourceVersion it read).
pub struct KubeLeases {
    api: Api<Lease>,
    name: String,
    what: String,
}

impl KubeLeases {
    /// The Lease `name` in `namespace`.
    pub fn new(client: &Client, namespace: &str, name: &str) -> Self {
        KubeLeases {
            api: Api::namespaced(client.clone(), namespace),
            name: name.to_string(),
            what: format!("leases/{name} in {namespace}"),
        }
    }
}

impl LeaseApi for KubeLeases {
    fn get(&self) -> BoxFuture<'_, Result<Option<Lease>, LeaseCallError>> {
        Box::pin(async move {
            with_retries(&format!("get {}", self.what), || {
                self.api.get_opt(&self.name)
            })
            .await
            .map_err(|e| LeaseCallError::from_kube(&e))
        })
    }

    fn create<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Lease, LeaseCallError>> {
        Box::pin(async move {
            let pp = PostParams::default();
            with_retries(&format!("create {}", self.what), || {
                self.api.create(&pp, lease)
            })
            .await
            .map_err(|e| LeaseCallError::from_kube(&e))
        })
    }

    fn replace<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<Lease, LeaseCallError>> {
        Box::pin(async move {
            let pp = PostParams::default();
            with_retries(&format!("update {}", self.what), || {
                self.api.replace(&self.name, &pp, lease)
            })
            .await
            .map_err(|e| LeaseCallError::from_kube(&e))
        })
    }
}
