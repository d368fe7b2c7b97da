//! The simulated controllers, one file each: the kubelet of every up node
//! ([`kubelet`]), the garbage collector ([`garbage_collector`]), KubeVirt's virt-controller
//! ([`virt_controller`]) and Longhorn's CSI attach path ([`longhorn_csi`]), among others. Each implements [`Controller`] and sees the cluster only through
//! [`Cluster`], which the store implements (both in [`crate::cluster`], below the store): the
//! store is made with [`ALL`] and its settle loop calls [`crate::cluster::reconcile`] for
//! every changed object and [`crate::cluster::owner_removed`] for every removed one until
//! nothing is left to react to. Controllers write through the same store semantics as clients (resourceVersion
//! bumps, watch events, request-log entries marked `internal` with the controller's name).
//!
//! What differs between releases comes from [`crate::profiles`] through
//! [`Cluster::settings`], never from version tests here. A new simulated controller (say
//! Harvester's VM controller) is a new file with a [`Controller`] added to [`ALL`]. A timed
//! one ([`node_down`]) has the same shape and also says how often it looks at the cluster
//! ([`Controller::every`]); [`spawn_timed`] runs its looks, and its writes go through
//! [`Cluster`] as well.

pub mod garbage_collector;
pub mod harvester_vm;
pub mod kubelet;
pub mod longhorn_csi;
pub mod node_down;
pub mod scheduler;
pub mod virt_controller;
pub mod virt_handler;

pub use crate::cluster::{Cluster, Controller, Controllers, Flow};

/// Every simulated controller, in the order they see an object (the garbage collector
/// first: it holds what carries its finalizers alone, [`Controller::holds_alone`]).
pub static ALL: &[&dyn Controller] = &[
    &garbage_collector::GarbageCollector,
    &kubelet::Kubelet,
    &virt_controller::VirtController,
    &harvester_vm::HarvesterVmController,
    &scheduler::Scheduler,
    &virt_handler::VirtHandler,
    &longhorn_csi::LonghornCsi,
    &node_down::NodeDown,
];

/// Starts one task per timed controller of [`ALL`] (one whose [`Controller::every`] says how
/// often): a look every period ([`Controller::look`] reads the store, then its writes run
/// as an asynchronous controller's and the others react), until shutdown. `looks` counts the
/// looks taken, so a test can wait for a look to have seen a change instead of sleeping.
pub fn spawn_timed(
    store: std::sync::Arc<crate::store::Store>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    looks: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    for &ctl in ALL {
        if ctl.every(&store.settings()).is_none() {
            continue;
        }
        let store = store.clone();
        let mut shutdown = shutdown.clone();
        let looks = looks.clone();
        tokio::spawn(async move {
            loop {
                let Some(wait) = ctl.every(&store.settings()) else {
                    return;
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return,
                }
                if *shutdown.borrow() {
                    return;
                }
                let now = jiff::Timestamp::now().as_second();
                if let Some(writes) = store.read_cluster(|c| ctl.look(c, now)) {
                    store.with_cluster(writes);
                }
                looks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
    }
}

/// Starts one task per controller that, while `controllerDelayMs` is set, sleeps that long
/// and makes a pass over the cluster ([`crate::Store::controller_pass`]); the tasks end with
/// the simulator.
pub fn spawn_tasks(
    store: std::sync::Arc<crate::store::Store>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    for index in 0..ALL.len() {
        let store = store.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let delay = store.settings().controller_delay_ms;
                // Synchronous mode: look again later whether that changed.
                let wait = std::time::Duration::from_millis(if delay == 0 { 50 } else { delay });
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return,
                }
                if *shutdown.borrow() {
                    return;
                }
                if delay > 0 {
                    store.controller_pass(index);
                }
            }
        });
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! An in-memory [`Cluster`] for the controllers' unit tests: objects by (resource, key),
    //! and a log of what each controller did. Deletes follow the simplest rule (finalizers or a
    //! pod grace period keep the object with a deletionTimestamp, otherwise it goes).

    use std::collections::BTreeMap;

    use serde_json::{json, Value};

    use super::Cluster;
    use crate::meta;
    use crate::resources::ResIdx;
    use crate::settings::Settings;
    use crate::store_vocab::{DeleteOptions, Key};

    /// A fake cluster.
    #[derive(Default)]
    pub struct Fake {
        pub settings: Settings,
        pub objects: BTreeMap<(ResIdx, Key), Value>,
        /// `(actor, verb, name)` of every write.
        pub actions: Vec<(String, String, String)>,
        pub requeued: Vec<(ResIdx, Key)>,
    }

    impl Fake {
        pub fn with(settings: Settings, objs: &[(ResIdx, Value)]) -> Fake {
            let mut f = Fake {
                settings,
                ..Fake::default()
            };
            for (res, o) in objs {
                f.objects.insert((*res, key(o)), o.clone());
            }
            f
        }

        pub fn obj(&self, res: ResIdx, ns: &str, name: &str) -> Option<&Value> {
            self.objects.get(&(res, (ns.to_string(), name.to_string())))
        }
    }

    pub fn key(o: &Value) -> Key {
        (meta::namespace(o).to_string(), meta::name(o).to_string())
    }

    impl Cluster for Fake {
        fn settings(&self) -> &Settings {
            &self.settings
        }
        fn get(&self, res: ResIdx, key: &Key) -> Option<&Value> {
            self.objects.get(&(res, key.clone()))
        }
        fn list(&self, res: ResIdx, namespace: &str) -> Vec<&Value> {
            self.objects
                .iter()
                .filter(|((r, k), _)| *r == res && k.0 == namespace)
                .map(|(_, o)| o)
                .collect()
        }
        fn list_all(&self, res: ResIdx) -> Vec<Value> {
            self.objects
                .iter()
                .filter(|((r, _), _)| *r == res)
                .map(|(_, o)| o.clone())
                .collect()
        }
        fn dependents(&self, owner_uid: &str) -> Vec<(ResIdx, Key)> {
            self.objects
                .iter()
                .filter(|(_, o)| meta::owner_uids(o).iter().any(|u| u == owner_uid))
                .map(|(k, _)| k.clone())
                .collect()
        }
        fn uid_exists(&self, uid: &str) -> bool {
            self.objects.values().any(|o| meta::uid(o) == uid)
        }
        fn delete(&mut self, actor: &str, res: ResIdx, key: &Key, _opts: &DeleteOptions) {
            self.actions
                .push((actor.into(), "delete".into(), key.1.clone()));
            let Some(o) = self.objects.get_mut(&(res, key.clone())) else {
                return;
            };
            let graceful = o.pointer("/spec/nodeName").is_some();
            if meta::finalizers(o).is_empty() && !graceful {
                self.objects.remove(&(res, key.clone()));
            } else {
                meta::meta_mut(o).insert("deletionTimestamp".into(), json!("2025-01-01T00:00:00Z"));
            }
        }
        fn create(&mut self, actor: &str, res: ResIdx, obj: Value) {
            let k = key(&obj);
            self.actions
                .push((actor.into(), "create".into(), k.1.clone()));
            self.objects.insert((res, k), obj);
        }
        fn update(&mut self, actor: &str, res: ResIdx, obj: Value, _status: bool) {
            let k = key(&obj);
            self.actions
                .push((actor.into(), "update".into(), k.1.clone()));
            if meta::is_deleting(&obj) && meta::finalizers(&obj).is_empty() {
                self.objects.remove(&(res, k));
            } else {
                self.objects.insert((res, k), obj);
            }
        }
        fn remove(&mut self, actor: &str, res: ResIdx, key: &Key) {
            self.actions
                .push((actor.into(), "remove".into(), key.1.clone()));
            self.objects.remove(&(res, key.clone()));
        }
        fn requeue(&mut self, res: ResIdx, key: &Key) {
            self.requeued.push((res, key.clone()));
        }
    }
}
