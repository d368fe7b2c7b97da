//! The storage VolumeAttachment list, shared by the re-check rounds of one run for at
//! most `max_age`. It is read only for a disk whose PV names another CSI driver than
//! Longhorn (or whose driver is unknown): a Longhorn disk's attachments are all tickets in
//! its Longhorn volumeattachment, read by name and fresh in every round (longhorn-manager
//! `csi/controller_server.go` `ControllerPublishVolume` writes the ticket before it attaches;
//! docs/safety.md rules 4 and 7). The list is ~4–6 MiB on a 5,000-VM site.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::ListParams;
use kube::{Api, Client};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::lists::{list, ReadFailed};

/// The last list and when it was read.
type Last = Option<(Instant, Arc<Vec<VolumeAttachment>>)>;

/// A VolumeAttachment list reused for at most `max_age`; concurrent rounds wait for one
/// list instead of each sending their own.
#[derive(Clone)]
pub struct VaCache {
    last: Arc<Mutex<Last>>,
    max_age: Duration,
}

impl VaCache {
    /// An empty cache whose lists are reused for at most `max_age`.
    pub fn new(max_age: Duration) -> Self {
        VaCache {
            last: Arc::new(Mutex::new(None)),
            max_age,
        }
    }

    /// The list, from the cache when it is at most `max_age` old, else read now.
    pub async fn list(&self, client: &Client) -> Result<Arc<Vec<VolumeAttachment>>, ReadFailed> {
        let mut last = self.last.lock().await;
        if let Some((at, vas)) = last.as_ref() {
            if at.elapsed() <= self.max_age {
                return Ok(vas.clone());
            }
        }
        let read_at = Instant::now();
        let vas = Arc::new(
            list(
                Api::<VolumeAttachment>::all(client.clone()),
                &ListParams::default(),
                "volumeattachments.storage.k8s.io",
            )
            .await?,
        );
        *last = Some((read_at, vas.clone()));
        Ok(vas)
    }
}

impl std::fmt::Debug for VaCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaCache")
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

/// Two handles are equal when they share one cache.
impl PartialEq for VaCache {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.last, &other.last)
    }
}

impl Eq for VaCache {}
