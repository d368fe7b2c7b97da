//! Secondary indexes for selected lists and watches: the keys of the objects carrying a
//! label value (for the label keys clients select nodes' objects by) or a field value (a
//! pod's `spec.nodeName`, any object's `metadata.name`), so that a list such as "the VMIs
//! labelled `kubevirt.io/nodeName=n`" or "the pods with `spec.nodeName=n`" reads the node's
//! objects, not every object of the resource.
//!
//! The index only narrows which objects are looked at: each candidate is still matched
//! against the whole selector, and candidates come in key order — (namespace, name), the
//! order of the store's own maps — so an indexed answer is the unindexed one, item for item,
//! `continue` token and `remainingItemCount` included. The real apiserver's watch cache
//! indexes pods by node the same way (k8s.io/kubernetes `pkg/registry/core/pod/strategy.go`
//! `NodeNameIndexFunc`, used by `pkg/registry/core/pod/storage/storage.go`'s `Indexers`;
//! read at commit 03e060242dcb9ab9191451bbe2bd16d1e5d43733): what clients see never
//! depends on it.

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

use crate::resources::{ResIdx, RESOURCES};
use crate::selectors::{field_value, selectable, FieldSelector, LabelSelector};
use crate::store_vocab::Key;

/// Label keys indexed on every resource: what vmrecover (`src/cluster/gather.rs`,
/// `agent/watch.rs`, `summary.rs`, `recovery/following.rs`), KubeVirt and Longhorn select
/// one node's, one VMI's or one volume's objects by.
const LABELS: &[&str] = &[
    "kubevirt.io/nodeName",
    "kubevirt.io",
    "kubevirt.io/created-by",
    "longhornvolume",
    "vmrecover.io/summary",
];

/// Fields indexed on the resources that can select on them.
const FIELDS: &[&str] = &["spec.nodeName", "metadata.name"];

/// What an index entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Term {
    /// A label key of [`LABELS`].
    Label(&'static str),
    /// A field of [`FIELDS`].
    Field(&'static str),
}

/// No object matches: what a look-up of a value nobody carries answers.
static NONE: BTreeSet<Key> = BTreeSet::new();

/// The label and field indexes of one store.
#[derive(Debug, Clone, Default)]
pub(super) struct SelectIndex {
    entries: HashMap<(ResIdx, Term, String), BTreeSet<Key>>,
}

/// The index terms an object of (storage) resource `res` is filed under.
fn terms(res: ResIdx, obj: &Value) -> Vec<(Term, String)> {
    let mut out = Vec::new();
    for k in LABELS {
        if let Some(v) = LabelSelector::label_value(obj, k) {
            out.push((Term::Label(k), v.to_string()));
        }
    }
    if let Some(def) = RESOURCES.get(res) {
        for f in FIELDS {
            if selectable(def, f) {
                out.push((Term::Field(f), field_value(def, f, obj)));
            }
        }
    }
    out
}

impl SelectIndex {
    /// Files a stored object.
    pub(super) fn add(&mut self, res: ResIdx, key: &Key, obj: &Value) {
        for (t, v) in terms(res, obj) {
            self.entries
                .entry((res, t, v))
                .or_default()
                .insert(key.clone());
        }
    }

    /// Takes a stored object out (given as it was filed).
    pub(super) fn remove(&mut self, res: ResIdx, key: &Key, obj: &Value) {
        for (t, v) in terms(res, obj) {
            let entry = (res, t, v);
            if let Some(set) = self.entries.get_mut(&entry) {
                set.remove(key);
                if set.is_empty() {
                    self.entries.remove(&entry);
                }
            }
        }
    }

    /// The keys of (storage) resource `res` that can match the selectors, in key order: the
    /// smallest entry a requirement pins (`key=value` on an indexed label, `field=value` on
    /// an indexed field); `None` when no requirement is indexed (scan everything).
    pub(super) fn candidates(
        &self,
        res: ResIdx,
        label: &LabelSelector,
        field: &FieldSelector,
    ) -> Option<&BTreeSet<Key>> {
        let def = RESOURCES.get(res)?;
        let labels = LABELS
            .iter()
            .filter_map(|k| label.exact(k).map(|v| (Term::Label(k), v)));
        let fields = FIELDS
            .iter()
            .filter(|f| selectable(def, f))
            .filter_map(|f| field.exact(f).map(|v| (Term::Field(f), v)));
        labels
            .chain(fields)
            .map(|(t, v)| self.entries.get(&(res, t, v.to_string())).unwrap_or(&NONE))
            .min_by_key(|s| s.len())
    }
}
