//! The calls applying a plan makes to the cluster, behind one narrow trait: free a launcher
//! pod, wait for the controllers, patch a VMI's or VM's finalizers, record an Event. The
//! apply steps (`apply.rs`) hold the rules (what to do on a conflict, a denial, a stop);
//! [`KubeApply`] talks to the API server, and unit tests script a fake.

use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::Client;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::finalizers::ObjectKind;
use super::model::Decision;
use crate::cluster::{classify_refusal, status_code, Refusal as Denial, RequestFailed};
use crate::cluster::{with_retries, with_retries_unless};
use crate::cluster::{EventRecorder, ObjectKey, Regarding};
use crate::cluster::{VirtualMachine, VirtualMachineInstance};

/// What applying a plan asks of the cluster.
pub trait ApplyCluster: Send + Sync {
    /// Force-deletes `pod` (grace 0, UID precondition); a pod already gone is done.
    fn free_pod<'a>(&'a self, pod: &'a ObjectKey) -> BoxFuture<'a, Result<(), PodNotDeleted>>;

    /// Waits up to `grace` for the controllers to remove `d`'s VMI, then, for what is left
    /// of it, to finish the VM.
    fn wait_for_controllers<'a>(
        &'a self,
        d: &'a Decision,
        grace: Duration,
    ) -> BoxFuture<'a, Waited>;

    /// One finalizer patch of `object` (a `kind`): tests its UID, `resource_version` and
    /// that its finalizers are exactly `expected`, then sets them to `keep`.
    fn patch_finalizers<'a>(&'a self, patch: FinalizerPatch<'a>) -> BoxFuture<'a, Patched>;

    /// Records one Event about `about`.
    fn event<'a>(&'a self, event: EventNote<'a>) -> BoxFuture<'a, Result<(), RequestFailed>>;
}

/// What the controllers did during the wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Waited {
    /// The VMI is gone.
    pub vmi_gone: bool,
    /// The VM needs nothing more (gone, or not deleting).
    pub finished: bool,
    /// The VM (the one planned) is gone.
    pub vm_gone: bool,
}

/// One finalizer patch.
#[derive(Debug, Clone, Copy)]
pub struct FinalizerPatch<'a> {
    /// VMI or VM.
    pub kind: ObjectKind,
    /// The object as planned (its UID is tested).
    pub object: &'a ObjectKey,
    /// The resourceVersion tested.
    pub resource_version: &'a str,
    /// The finalizer list tested.
    pub expected: &'a [String],
    /// The finalizers left after the patch.
    pub keep: &'a [String],
}

/// How a finalizer patch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Patched {
    /// The finalizers are now `keep`.
    Done,
    /// The finalizers are now `keep`, and the answer says the API server deleted the object
    /// with them ([`deleted_by_update`]).
    Deleted,
    /// The object is gone (404).
    Gone,
    /// It moved since it was read (409, or a failed `test`): re-read and re-decide.
    Moved,
    /// Refused for good this run (an admission policy, a webhook, validation), with the
    /// server's message and the next step (`cluster::denial`).
    Refused(String),
    /// Another error, in words.
    Failed(String),
}

/// One Event.
#[derive(Debug, Clone, Copy)]
pub struct EventNote<'a> {
    /// The object it is about.
    pub about: &'a Regarding,
    /// A Warning (a Harvester clean-up was skipped) rather than Normal.
    pub warning: bool,
    /// `ClearFinalizers` or `ForceDeleteLauncherPod`.
    pub action: &'a str,
    /// `Recovered` or `RecoveredSkippingCleanup`.
    pub reason: &'a str,
    /// What was done, for people.
    pub note: &'a str,
}

/// Why a leftover launcher pod was not deleted.
#[derive(Debug, thiserror::Error)]
pub enum PodNotDeleted {
    /// The UID precondition failed: another pod has the name now.
    #[error("pod {namespace}/{name} was replaced by a new pod of the same name: left alone")]
    Replaced {
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        name: String,
    },
    /// The API server refused or could not be reached.
    #[error(transparent)]
    Request(#[from] RequestFailed),
}

/// [`ApplyCluster`] against the API server.
pub struct KubeApply {
    /// The API client.
    pub client: Client,
    /// Records the VM's Event.
    pub events: EventRecorder,
    /// Server-side timeout of each watch request (the controller wait).
    pub watch_timeout_secs: u32,
}

impl ApplyCluster for KubeApply {
    fn free_pod<'a>(&'a self, pod: &'a ObjectKey) -> BoxFuture<'a, Result<(), PodNotDeleted>> {
        Box::pin(async move {
            let api = Api::<Pod>::namespaced(self.client.clone(), &pod.namespace);
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(pod.uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            let what = format!("pods/{} in {}", pod.name, pod.namespace);
            match with_retries(&format!("delete {what}"), || api.delete(&pod.name, &dp)).await {
                Ok(_) => Ok(()),
                Err(e) if status_code(&e) == Some(404) => Ok(()),
                Err(e) if status_code(&e) == Some(409) => Err(PodNotDeleted::Replaced {
                    namespace: pod.namespace.clone(),
                    name: pod.name.clone(),
                }),
                Err(e) => Err(RequestFailed::new("delete", what, e).into()),
            }
        })
    }

    fn wait_for_controllers<'a>(
        &'a self,
        d: &'a Decision,
        grace: Duration,
    ) -> BoxFuture<'a, Waited> {
        Box::pin(wait_for_controllers(self, d, grace))
    }

    fn patch_finalizers<'a>(&'a self, patch: FinalizerPatch<'a>) -> BoxFuture<'a, Patched> {
        Box::pin(async move {
            match patch.kind {
                ObjectKind::Vmi => patch_on::<VirtualMachineInstance>(&self.client, patch).await,
                ObjectKind::Vm => patch_on::<VirtualMachine>(&self.client, patch).await,
            }
        })
    }

    fn event<'a>(&'a self, e: EventNote<'a>) -> BoxFuture<'a, Result<(), RequestFailed>> {
        Box::pin(
            self.events
                .record(e.about, e.warning, e.action, e.reason, e.note),
        )
    }
}

/// Waits up to `grace` (with a watch) for the controllers to remove the VMI, then, for what
/// is left of the grace, for them to finish the VM too: virt-controller's VM controller drops
/// `virtualMachineControllerFinalize` only after it saw the VMI go, so the VM lags behind.
async fn wait_for_controllers(k: &KubeApply, d: &Decision, grace: Duration) -> Waited {
    let Some(vmi) = &d.vmi else {
        return Waited::default();
    };
    let deadline = tokio::time::Instant::now() + grace;
    let api = Api::<VirtualMachineInstance>::namespaced(k.client.clone(), &vmi.namespace);
    let vmi_gone = tokio::time::timeout(
        grace,
        crate::cluster::until_gone(api, &vmi.name, &vmi.uid, k.watch_timeout_secs),
    )
    .await
    .is_ok();
    if !vmi_gone {
        return Waited::default();
    }
    let Some(vm) = &d.vm else {
        return Waited {
            vmi_gone,
            finished: true,
            vm_gone: false,
        };
    };
    let vms = Api::<VirtualMachine>::namespaced(k.client.clone(), &vm.namespace);
    let (finished, vm_gone) =
        match with_retries("get the VM after the wait", || vms.get_opt(&vm.name)).await {
            Ok(None) => (true, true),
            Ok(Some(cur)) if cur.metadata.uid.as_deref() != Some(vm.uid.as_str()) => (true, true),
            Ok(Some(cur)) => (cur.metadata.deletion_timestamp.is_none(), false),
            Err(_) => (false, false),
        };
    if finished {
        return Waited {
            vmi_gone,
            finished,
            vm_gone,
        };
    }
    // Still deleting: its controllers may be a moment behind the VMI's.
    let vm_gone = tokio::time::timeout_at(
        deadline,
        crate::cluster::until_gone(vms, &vm.name, &vm.uid, k.watch_timeout_secs),
    )
    .await
    .is_ok();
    Waited {
        vmi_gone,
        finished: vm_gone,
        vm_gone,
    }
}

/// The JSON Patch that tests UID, resourceVersion and the exact list, then replaces it.
async fn patch_on<K>(client: &Client, p: FinalizerPatch<'_>) -> Patched
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api = Api::<K>::namespaced(client.clone(), &p.object.namespace);
    let what = format!(
        "{} {}/{}",
        K::plural(&()),
        p.object.namespace,
        p.object.name
    );
    let patch: json_patch::Patch = match serde_json::from_value(json!([
        { "op": "test", "path": "/metadata/uid", "value": p.object.uid },
        { "op": "test", "path": "/metadata/resourceVersion", "value": p.resource_version },
        { "op": "test", "path": "/metadata/finalizers", "value": p.expected },
        { "op": "replace", "path": "/metadata/finalizers", "value": p.keep },
    ])) {
        Ok(p) => p,
        Err(e) => return Patched::Failed(format!("cannot build the patch: {e}")),
    };
    let pp = PatchParams::default();
    let patch = Patch::Json::<()>(patch);
    match retried_unless_webhook(&format!("patch {what}"), || {
        api.patch(&p.object.name, &pp, &patch)
    })
    .await
    {
        Ok(answer) if deleted_by_update(answer.meta()) => Patched::Deleted,
        Ok(_) => Patched::Done,
        Err(e) if status_code(&e) == Some(404) => Patched::Gone,
        // A denial (policy, webhook, validation) is final, reported once with the server's
        // message; only a conflict or a failed `test` re-reads (cluster::denial).
        Err(e) => match classify_refusal(&e) {
            Some(r) if r.is_final() => Patched::Refused(r.reason(&what)),
            Some(Denial::Moved) => Patched::Moved,
            _ => Patched::Failed(RequestFailed::new("patch", what, e).to_string()),
        },
    }
}

/// [`with_retries`] for the finalizer patch, except that a refusal is final for this run
/// ([`Denial::is_final`]): a webhook that cannot be called after a power cut stays down for
/// minutes (a later pass retries), and a policy or webhook that denied will deny again.
async fn retried_unless_webhook<T, F, Fut>(what: &str, request: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    with_retries_unless(
        what,
        |e| classify_refusal(e).is_some_and(|r| r.is_final()),
        request,
    )
    .await
}

/// Whether an update's answer says the API server deleted the object: it answers the
/// update that removes the last finalizer of an object being deleted with the updated
/// object itself — `deletionTimestamp` set, no finalizers — after removing it from storage
/// (k8s.io/apiserver `pkg/registry/generic/registry/store.go`: `Update` →
/// `ShouldDeleteDuringUpdate` → `deleteWithoutFinalizers`, "clients are expecting an updated
/// object if a PUT succeeded … return the object in the request instead", the same in
/// v1.29.0 through v1.33.0). Such an object cannot be stored (the update path deletes it), so
/// the answer is proof it is gone; VMs and VMIs have no graceful deletion to wait for.
fn deleted_by_update(meta: &kube::api::ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some() && meta.finalizers.as_ref().is_none_or(Vec::is_empty)
}
