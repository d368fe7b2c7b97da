//! The store's side of the simulated controllers: [`Cluster`] over the store's internals
//! (writes go through the verbs and are logged as `internal`), and the settle loop that hands
//! every changed or removed object to the store's controllers until nothing is left to react to.

use serde_json::{json, Value};

use super::{object_path, Inner};
use crate::cluster::{self, Cluster, KUBEVIRT_ACTOR};
use crate::resources::ResIdx;
use crate::settings::Settings;
use crate::store_vocab::{DeleteOptions, Key};

/// Upper bound of reconcile steps in one settle, against controller ping-pong.
const SETTLE_BUDGET: usize = 1_000_000;

impl Inner {
    /// Runs the controllers until nothing is left to react to (synchronous mode only: with
    /// `controllerDelayMs` set, the controllers' own tasks do it, see [`Inner::controller_pass`]).
    pub(super) fn settle(&mut self) {
        if self.settings.controller_delay_ms > 0 {
            return;
        }
        let mut budget = SETTLE_BUDGET;
        while budget > 0 {
            budget -= 1;
            if let Some(uid) = self.removed_uids.pop_front() {
                cluster::owner_removed(self.controllers, self, &uid);
                continue;
            }
            let Some((res, key)) = self.dirty.pop_front() else {
                break;
            };
            cluster::reconcile(self.controllers, self, res, &key);
        }
        // The controllers' writes are recorded as theirs; nothing after them is.
        self.writer = None;
    }
}

impl Inner {
    /// One pass of one controller over every object, as its informer's resync would: the
    /// asynchronous mode. The garbage collector also handles the owners removed since its
    /// last pass. A pass that changes nothing marks the controller quiet at this
    /// resourceVersion.
    pub(super) fn controller_pass(&mut self, index: usize) {
        let Some(ctl) = self.controllers.get(index).copied() else {
            return;
        };
        let before = self.rv;
        if index == 0 {
            while let Some(uid) = self.removed_uids.pop_front() {
                ctl.owner_removed(self, &uid);
            }
        }
        let keys: Vec<(ResIdx, Key)> = self
            .objects
            .iter()
            .enumerate()
            .flat_map(|(i, m)| m.keys().map(move |k| (i, k.clone())))
            .collect();
        for (res, key) in keys {
            let Some(obj) = self.get_obj(res, &key).cloned() else {
                continue;
            };
            // The garbage collector alone looks at what carries its finalizers.
            if index != 0
                && self
                    .controllers
                    .first()
                    .is_some_and(|c| c.holds_alone(&obj))
            {
                continue;
            }
            ctl.reconcile(self, res, &key, &obj);
        }
        // What the sync path would requeue is looked at in the next pass anyway.
        self.dirty.clear();
        if self.rv == before {
            if let Some(q) = self.quiet_rv.get_mut(index) {
                *q = self.rv;
            }
        }
    }
}

impl Cluster for Inner {
    fn settings(&self) -> &Settings {
        &self.settings
    }

    fn get(&self, res: ResIdx, key: &Key) -> Option<&Value> {
        self.get_obj(res, key)
    }

    fn dependents(&self, owner_uid: &str) -> Vec<(ResIdx, Key)> {
        self.owner_index
            .get(owner_uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn list(&self, res: ResIdx, namespace: &str) -> Vec<&Value> {
        self.objects
            .get(res)
            .map(|m| {
                m.range((namespace.to_string(), String::new())..)
                    .take_while(|(k, _)| k.0 == namespace)
                    .map(|(_, o)| o)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn list_all(&self, res: ResIdx) -> Vec<Value> {
        self.objects
            .get(crate::convert::storage_of(res))
            .map(|m| {
                m.values()
                    .map(|o| crate::convert::to_view(res, o))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn uid_exists(&self, uid: &str) -> bool {
        self.uid_index.contains_key(uid)
    }

    fn delete(&mut self, actor: &str, res: ResIdx, key: &Key, opts: &DeleteOptions) {
        // Errors (a precondition that moved, an object gone) end the controller's attempt,
        // as a failed request would.
        let _ = Inner::delete(self, res, &key.0, &key.1, opts, Some(actor));
    }

    fn create(&mut self, actor: &str, res: ResIdx, obj: Value) {
        let ns = crate::meta::namespace(&obj).to_string();
        let _ = Inner::create(self, res, &ns, obj, Some(actor));
    }

    fn update(&mut self, actor: &str, res: ResIdx, obj: Value, status: bool) {
        let ns = crate::meta::namespace(&obj).to_string();
        let name = crate::meta::name(&obj).to_string();
        // The simulated virt-controller writes as KubeVirt's ServiceAccount.
        let kubevirt = actor == KUBEVIRT_ACTOR;
        let _ = Inner::update(self, res, &ns, &name, obj, status, Some(actor), kubevirt);
    }

    fn remove(&mut self, actor: &str, res: ResIdx, key: &Key) {
        self.log_internal(
            actor,
            "DELETE",
            object_path(res, &key.0, &key.1),
            final_delete_body(),
            200,
        );
        self.store_remove(res, key);
    }

    fn requeue(&mut self, res: ResIdx, key: &Key) {
        self.dirty.push_back((res, key.clone()));
    }
}

/// The DeleteOptions body the kubelet's final delete is logged with.
fn final_delete_body() -> Value {
    json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})
}
