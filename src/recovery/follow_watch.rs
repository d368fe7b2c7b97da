//! The agent's looks at the VMs it follows: one watch of the cluster's VMs and one of its
//! VMIs (kube's watcher: a list, then a watch re-opened when the server ends it), open only
//! while some outcome is unknown. However many VMs are followed, that is two lists and two
//! watch requests per `timeout_secs`, where polling costs two GETs per VM per look. A new
//! VMI may start on any node, so the agent's own watch (VMIs labelled for this node) does
//! not see it. Only the followed VMs' objects are kept; every change to one of them is a look.

use std::collections::HashMap;
use std::time::Instant;

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;

use super::follow::{FollowOutcome, FollowedVm, FollowedVmi, Observation};
use super::follow_state::{kubevirt, vm_view, vmi_view, Following, Target};

/// What one watch knows of the followed VMs' objects, keyed by target index.
#[derive(Default)]
struct Seen<T> {
    now: HashMap<usize, T>,
    /// Filled during a (re)list; replaces `now` when it is complete.
    listing: Option<HashMap<usize, T>>,
    /// Whether a complete list was seen (before it, absence means nothing).
    listed: bool,
}

impl<T> Seen<T> {
    /// Applies one watch event about `obj`; `key` finds its target, `view` keeps what counts.
    fn apply(
        &mut self,
        event: Event<DynamicObject>,
        key: impl Fn(&DynamicObject) -> Option<usize>,
        view: impl Fn(&DynamicObject) -> T,
    ) {
        match event {
            Event::Init => self.listing = Some(HashMap::new()),
            Event::InitApply(o) => {
                if let (Some(i), Some(l)) = (key(&o), self.listing.as_mut()) {
                    l.insert(i, view(&o));
                }
            }
            Event::InitDone => {
                if let Some(l) = self.listing.take() {
                    self.now = l;
                    self.listed = true;
                }
            }
            Event::Apply(o) => {
                if let Some(i) = key(&o) {
                    self.now.insert(i, view(&o));
                }
            }
            Event::Delete(o) => {
                if let Some(i) = key(&o) {
                    self.now.remove(&i);
                }
            }
        }
    }
}

/// The index of the target `o` is (namespace and name; for a VM also its UID: a VM made
/// again under the same name is not the one recovered).
fn target_of(targets: &[Target], o: &DynamicObject, vm: bool) -> Option<usize> {
    let ns = o.metadata.namespace.as_deref()?;
    let name = o.metadata.name.as_deref()?;
    targets.iter().position(|t| {
        t.namespace == ns
            && t.name == name
            && (!vm || t.vm_uid.is_none() || t.vm_uid == o.metadata.uid)
    })
}

/// Watches until every outcome is known, `deadline` passes or a stop is asked.
pub(super) async fn watch<P: FnMut(&str, &FollowOutcome)>(
    client: &Client,
    timeout_secs: u32,
    f: &mut Following<P>,
    deadline: Instant,
    mut cancel: tokio::sync::watch::Receiver<bool>,
) {
    let config = watcher::Config::default().timeout(timeout_secs);
    let vms = Api::<DynamicObject>::all_with(
        client.clone(),
        &kubevirt("VirtualMachine", "virtualmachines"),
    );
    let vmis = Api::<DynamicObject>::all_with(
        client.clone(),
        &kubevirt("VirtualMachineInstance", "virtualmachineinstances"),
    );
    let vm_events = watcher(vms, config.clone())
        .default_backoff()
        .map(|e| (true, e));
    let vmi_events = watcher(vmis, config).default_backoff().map(|e| (false, e));
    let mut events = futures::stream::select(vm_events.boxed(), vmi_events.boxed());
    let mut vm_seen: Seen<FollowedVm> = Seen::default();
    let mut vmi_seen: Seen<FollowedVmi> = Seen::default();
    let deadline = tokio::time::Instant::from_std(deadline);
    while !f.all_done() && !*cancel.borrow() {
        let (is_vm, event) = tokio::select! {
            e = events.next() => match e {
                Some(e) => e,
                None => return,
            },
            _ = tokio::time::sleep_until(deadline) => return,
            changed = cancel.changed() => match changed {
                Ok(()) => continue,
                Err(_) => return,
            },
        };
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("watching the followed VMs: {e}");
                f.failed = Some(format!("watching VMs and VMIs: {e}"));
                continue;
            }
        };
        let targets = &f.targets;
        if is_vm {
            vm_seen.apply(event, |o| target_of(targets, o, true), vm_view);
        } else {
            vmi_seen.apply(event, |o| target_of(targets, o, false), vmi_view);
        }
        if !(vm_seen.listed && vmi_seen.listed) {
            continue;
        }
        for i in 0..f.targets.len() {
            if !f.is_done(i) {
                f.look(
                    i,
                    Observation {
                        vm: vm_seen.now.get(&i).cloned(),
                        vmi: vmi_seen.now.get(&i).cloned(),
                    },
                );
            }
        }
    }
}
