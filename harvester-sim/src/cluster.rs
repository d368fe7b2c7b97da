//! What a simulated controller is ([`Controller`]) and what it sees of the cluster
//! ([`Cluster`], which the store implements), with the loops that hand one object to every
//! controller in order. The store calls these with the controllers it was made with, so it
//! never names the controllers themselves.
//!
//! One shape for both kinds of controller: an event-driven one reacts to each changed object
//! ([`Controller::reconcile`], [`Controller::owner_removed`]); a timed one (Harvester's
//! node-down controller) also says how often it looks at the whole cluster
//! ([`Controller::every`]) and what it writes after a look ([`Controller::look`]).

use std::time::Duration;

use serde_json::Value;

use crate::resources::ResIdx;
use crate::settings::Settings;
use crate::store_vocab::{DeleteOptions, Key};

/// What a controller can see and do. The store implements it; the controllers' unit tests
/// use a small in-memory one.
pub trait Cluster {
    /// The simulator's settings (down nodes, switches, the release profile).
    fn settings(&self) -> &Settings;
    /// One object.
    fn get(&self, res: ResIdx, key: &Key) -> Option<&Value>;
    /// The objects whose `ownerReferences` name this uid.
    fn dependents(&self, owner_uid: &str) -> Vec<(ResIdx, Key)>;
    /// Every object of a resource in a namespace.
    fn list(&self, res: ResIdx, namespace: &str) -> Vec<&Value>;
    /// Every object of a resource, in every namespace.
    fn list_all(&self, res: ResIdx) -> Vec<Value>;
    /// Whether an object with this uid exists.
    fn uid_exists(&self, uid: &str) -> bool;
    /// Deletes an object with the apiserver's delete semantics, as `actor`.
    fn delete(&mut self, actor: &str, res: ResIdx, key: &Key, opts: &DeleteOptions);
    /// Creates an object, as `actor`.
    fn create(&mut self, actor: &str, res: ResIdx, obj: Value);
    /// Replaces an object (its status only when `status`), as `actor`.
    fn update(&mut self, actor: &str, res: ResIdx, obj: Value, status: bool);
    /// Removes a deleting object for good (the kubelet's final confirmation), as `actor`.
    fn remove(&mut self, actor: &str, res: ResIdx, key: &Key);
    /// Asks for an object to be reconciled again (a controller watching another kind).
    fn requeue(&mut self, res: ResIdx, key: &Key);
}

/// Whether the controllers after this one still see the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Let the next controller look at it too.
    Continue,
    /// This controller owns the object's current state; the others wait for its next change.
    Stop,
}

/// One simulated controller.
pub trait Controller: Sync {
    /// The name its writes are logged under (`kubelet`, `garbage-collector`, `virt-controller`).
    fn name(&self) -> &'static str;
    /// Reacts to the current state of one object.
    fn reconcile(&self, c: &mut dyn Cluster, res: ResIdx, key: &Key, obj: &Value) -> Flow;
    /// Reacts to an object (with this uid) having been removed.
    fn owner_removed(&self, _c: &mut dyn Cluster, _uid: &str) {}
    /// Whether this controller alone handles the object now, so that the controllers after
    /// it wait for its next change (the garbage collector, while a GC finalizer is on it).
    fn holds_alone(&self, _obj: &Value) -> bool {
        false
    }
    /// How often a timed controller looks at the whole cluster (`None`, the default: it only
    /// reacts to changes).
    fn every(&self, _settings: &Settings) -> Option<Duration> {
        None
    }
    /// One look of a timed controller at `now` (seconds since the epoch): it reads through
    /// `c` and returns the writes it decided on, which run afterwards as one asynchronous
    /// write (the cluster may have moved in between: a write on a stale object then fails
    /// like a conflicting request, as a real controller's read from its cache can).
    fn look(&self, _c: &dyn Cluster, _now: i64) -> Option<Writes> {
        None
    }
}

/// The writes a timed controller decided on at one look.
pub type Writes = Box<dyn FnOnce(&mut dyn Cluster) + Send>;

/// The controllers the store hands changes to, in the order they see an object (the
/// simulator's are [`crate::controllers::ALL`]; the store is given them when it is made).
pub type Controllers = &'static [&'static dyn Controller];

/// The name the simulated virt-controller (and the virt-handler, which writes as KubeVirt
/// too) writes under: the store records those writes as KubeVirt's ServiceAccount.
pub const KUBEVIRT_ACTOR: &str = "virt-controller";

/// Lets every controller of `controllers` react to the current state of one object (if it still exists).
pub fn reconcile(controllers: Controllers, c: &mut dyn Cluster, res: ResIdx, key: &Key) {
    let Some(obj) = c.get(res, key).cloned() else {
        return;
    };
    for ctl in controllers {
        if ctl.reconcile(c, res, key, &obj) == Flow::Stop {
            return;
        }
    }
}

/// Lets every controller of `controllers` react to the removal of the object with this uid.
pub fn owner_removed(controllers: Controllers, c: &mut dyn Cluster, uid: &str) {
    for ctl in controllers {
        ctl.owner_removed(c, uid);
    }
}
