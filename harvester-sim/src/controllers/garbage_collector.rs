//! The garbage collector (k8s.io/kubernetes pkg/controller/garbagecollector, v1.33.0):
//! when an owner is gone its dependents are deleted in the background, or only lose the
//! reference when another owner is alive; a deleting owner with the `orphan` finalizer has its
//! dependents' references removed, one with `foregroundDeletion` has its dependents deleted
//! and keeps the finalizer until none is left.

use serde_json::Value;

use crate::cluster::{Cluster, Controller, Flow};
use crate::meta;
use crate::resources::ResIdx;
use crate::store_vocab::{DeleteOptions, Key};

/// Finalizers whose removal the garbage collector handles
/// (`metav1.FinalizerOrphanDependents`, `metav1.FinalizerDeleteDependents`).
pub const GC_FINALIZERS: [&str; 2] = ["orphan", "foregroundDeletion"];

/// Whether a finalizer is one the garbage collector owns.
pub fn is_gc_finalizer(f: &str) -> bool {
    GC_FINALIZERS.contains(&f)
}

/// The simulated garbage collector.
pub struct GarbageCollector;

const NAME: &str = "garbage-collector";

impl Controller for GarbageCollector {
    fn name(&self) -> &'static str {
        NAME
    }

    /// A deleting object with a GC finalizer is the garbage collector's alone until the
    /// finalizer goes.
    fn reconcile(&self, c: &mut dyn Cluster, res: ResIdx, _key: &Key, obj: &Value) -> Flow {
        if meta::is_deleting(obj) && meta::finalizers(obj).iter().any(|f| is_gc_finalizer(f)) {
            gc_finalizers(c, res, obj);
            return Flow::Stop;
        }
        Flow::Continue
    }

    fn holds_alone(&self, obj: &Value) -> bool {
        meta::is_deleting(obj) && meta::finalizers(obj).iter().any(|f| is_gc_finalizer(f))
    }

    /// Dependents with another live owner lose the reference, the others are deleted
    /// (background propagation, with a UID precondition).
    fn owner_removed(&self, c: &mut dyn Cluster, owner_uid: &str) {
        for (res, key) in c.dependents(owner_uid) {
            let Some(obj) = c.get(res, &key).cloned() else {
                continue;
            };
            let other_alive = meta::owner_uids(&obj)
                .iter()
                .any(|o| o != owner_uid && c.uid_exists(o));
            if other_alive {
                let mut new = obj.clone();
                drop_owner_ref(&mut new, owner_uid);
                c.update(NAME, res, new, false);
            } else if !meta::is_deleting(&obj) {
                let opts = DeleteOptions {
                    propagation_policy: Some("Background".into()),
                    precondition_uid: Some(meta::uid(&obj).to_string()),
                    ..DeleteOptions::default()
                };
                c.delete(NAME, res, &key, &opts);
            }
        }
    }
}

/// The `orphan` and `foregroundDeletion` finalizers of a deleting owner.
fn gc_finalizers(c: &mut dyn Cluster, res: ResIdx, obj: &Value) {
    let uid = meta::uid(obj).to_string();
    let deps = c.dependents(&uid);
    let mut fins = meta::finalizers(obj);
    if fins.iter().any(|f| f == "orphan") {
        for (dres, dkey) in &deps {
            if let Some(mut d) = c.get(*dres, dkey).cloned() {
                drop_owner_ref(&mut d, &uid);
                c.update(NAME, *dres, d, false);
            }
        }
        fins.retain(|f| f != "orphan");
    } else if fins.iter().any(|f| f == "foregroundDeletion") {
        for (dres, dkey) in &deps {
            let deleting = c.get(*dres, dkey).is_some_and(meta::is_deleting);
            if !deleting {
                c.delete(NAME, *dres, dkey, &DeleteOptions::default());
            }
        }
        if !c.dependents(&uid).is_empty() {
            return;
        }
        fins.retain(|f| f != "foregroundDeletion");
    }
    let key = (
        meta::namespace(obj).to_string(),
        meta::name(obj).to_string(),
    );
    let Some(mut cur) = c.get(res, &key).cloned() else {
        return;
    };
    meta::set_finalizers(&mut cur, &fins);
    c.update(NAME, res, cur, false);
}

/// `metadata.ownerReferences` without the one to `owner_uid`.
fn drop_owner_ref(obj: &mut Value, owner_uid: &str) {
    let m = crate::meta::meta_mut(obj);
    if let Some(refs) = m.get_mut("ownerReferences").and_then(Value::as_array_mut) {
        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid));
        if refs.is_empty() {
            m.remove("ownerReferences");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::controllers::fake::{key, Fake};
    use crate::resources::find;
    use crate::settings::Settings;

    fn pods() -> ResIdx {
        find("", "v1", "pods").unwrap_or(0)
    }

    fn obj(name: &str, uid: &str, owners: &[&str], fins: &[&str], deleting: bool) -> Value {
        let refs: Vec<Value> = owners
            .iter()
            .map(|u| json!({"apiVersion": "v1", "kind": "Pod", "name": "o", "uid": u}))
            .collect();
        let mut o = json!({"metadata": {"name": name, "namespace": "d", "uid": uid, "ownerReferences": refs, "finalizers": fins}});
        if deleting {
            o["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        }
        o
    }

    #[test]
    fn removed_owner_deletes_sole_dependents_and_unlinks_shared_ones() {
        let p = pods();
        let mut f = Fake::with(
            Settings::default(),
            &[
                (p, obj("sole", "s", &["gone"], &[], false)),
                (p, obj("shared", "h", &["gone", "alive"], &[], false)),
                (p, obj("alive", "alive", &[], &[], false)),
            ],
        );
        GarbageCollector.owner_removed(&mut f, "gone");
        assert!(f.obj(p, "d", "sole").is_none());
        let shared = f.obj(p, "d", "shared").cloned().unwrap_or_default();
        assert_eq!(meta::owner_uids(&shared), vec!["alive"]);
    }

    #[test]
    fn orphan_finalizer_unlinks_dependents_then_goes() {
        let p = pods();
        let owner = obj("owner", "o1", &[], &["orphan"], true);
        let mut f = Fake::with(
            Settings::default(),
            &[
                (p, owner.clone()),
                (p, obj("dep", "d1", &["o1"], &[], false)),
            ],
        );
        assert_eq!(
            GarbageCollector.reconcile(&mut f, p, &key(&owner), &owner),
            Flow::Stop
        );
        assert!(f.obj(p, "d", "owner").is_none(), "last finalizer gone");
        let dep = f.obj(p, "d", "dep").cloned().unwrap_or_default();
        assert!(meta::owner_uids(&dep).is_empty());
    }

    #[test]
    fn foreground_finalizer_waits_for_dependents() {
        let p = pods();
        let owner = obj("owner", "o1", &[], &["foregroundDeletion"], true);
        let dep = obj("dep", "d1", &["o1"], &["example.com/hold"], false);
        let mut f = Fake::with(Settings::default(), &[(p, owner.clone()), (p, dep)]);
        GarbageCollector.reconcile(&mut f, p, &key(&owner), &owner);
        let kept = f.obj(p, "d", "owner").cloned().unwrap_or_default();
        assert_eq!(meta::finalizers(&kept), vec!["foregroundDeletion"]);
        assert!(f.obj(p, "d", "dep").is_some_and(meta::is_deleting));
    }

    #[test]
    fn leaves_objects_without_gc_finalizers_to_others() {
        let p = pods();
        let o = obj("x", "x", &[], &["example.com/x"], true);
        let mut f = Fake::with(Settings::default(), &[(p, o.clone())]);
        assert_eq!(
            GarbageCollector.reconcile(&mut f, p, &key(&o), &o),
            Flow::Continue
        );
        assert!(f.actions.is_empty());
    }
}
