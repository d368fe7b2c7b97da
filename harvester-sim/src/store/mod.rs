//! The object store: schema-free objects keyed by (resource, namespace, name), one global
//! resourceVersion counter, a bounded event history for resuming watches, and a broadcast
//! channel for live watches. The verbs live in `ops.rs`; `settle.rs` hands changes to the
//! simulated controllers the store is made with ([`Controllers`]).

mod ops;
mod policies;
mod select_index;
mod settle;
mod webhook_content;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::broadcast;

pub use crate::store_vocab::{DeleteOptions, Key};
pub use ops::{ListQuery, PatchParams};

use crate::cluster::{Cluster, Controllers};
use crate::errors::ApiError;
use crate::managed_fields::Writer;
use crate::meta;
use crate::requestlog::{RequestLog, RequestRecord};
use crate::resources::{ResIdx, RESOURCES};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::settings::{Settings, SettingsPatch};

/// A watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Object created.
    Added,
    /// Object changed.
    Modified,
    /// Object removed.
    Deleted,
}

impl EventType {
    /// The wire name (`ADDED`, `MODIFIED`, `DELETED`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change to the store.
#[derive(Debug, Clone)]
pub struct StoreEvent {
    /// resourceVersion of the change.
    pub rv: u64,
    /// Resource the object is stored as (core `events` for both Event APIs: convert with
    /// [`crate::convert::to_view`] for the served form).
    pub res: ResIdx,
    /// What happened.
    pub kind: EventType,
    /// The object after the change (for DELETED: its last state, with the deletion's resourceVersion).
    pub object: Value,
    /// The object before the change (MODIFIED and DELETED).
    pub old: Option<Value>,
}

/// What a new watch starts from: the events to send first and the live channel.
pub struct WatchStart {
    /// Events to send before live ones (synthetic ADDED for a list-less watch, or history).
    pub initial: Vec<Arc<StoreEvent>>,
    /// Live events (may include events already in `initial`; skip rv <= `start_rv`).
    pub rx: broadcast::Receiver<Arc<StoreEvent>>,
    /// The resourceVersion the initial part reaches.
    pub start_rv: u64,
}

/// The shared store.
pub struct Store {
    inner: Mutex<Inner>,
}

pub(crate) struct Inner {
    rv: u64,
    objects: Vec<BTreeMap<Key, Value>>,
    uid_index: HashMap<String, (ResIdx, Key)>,
    owner_index: HashMap<String, BTreeSet<(ResIdx, Key)>>,
    /// Label and field indexes for selected lists and watches.
    select_index: select_index::SelectIndex,
    /// Whether selected lists and watches use [`Inner::select_index`] (tests compare both).
    select_indexed: bool,
    history: VecDeque<Arc<StoreEvent>>,
    floor: u64,
    settings: Settings,
    dirty: VecDeque<(ResIdx, Key)>,
    removed_uids: VecDeque<String>,
    /// The controllers that react to every change, in order.
    controllers: Controllers,
    /// Per controller (in [`Inner::controllers`] order): the resourceVersion at which its
    /// last asynchronous pass changed nothing.
    quiet_rv: Vec<u64>,
    tx: broadcast::Sender<Arc<StoreEvent>>,
    log: Arc<RequestLog>,
    /// Who the write in progress is recorded as in managedFields (`None`: keep them as they are).
    writer: Option<Writer>,
    /// Who sends the client request being served (None while the simulated controllers
    /// write): what the admission policies see as `request.userInfo`.
    requester: Option<crate::identity::Identity>,
    /// A scratch copy serving a dry run (`dryRun=All`): what admission sees as
    /// `request.dryRun`.
    dry_run: bool,
}

/// Capacity of the live watch channel; a watcher that falls further behind is closed with 410.
const BROADCAST_CAPACITY: usize = 65_536;

impl Store {
    /// A new empty store.
    pub fn new(settings: Settings, log: Arc<RequestLog>, controllers: Controllers) -> Arc<Store> {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        Arc::new(Store {
            inner: Mutex::new(Inner {
                rv: 0,
                objects: RESOURCES.iter().map(|_| BTreeMap::new()).collect(),
                uid_index: HashMap::new(),
                owner_index: HashMap::new(),
                select_index: Default::default(),
                select_indexed: true,
                history: VecDeque::new(),
                floor: 0,
                settings,
                dirty: VecDeque::new(),
                removed_uids: VecDeque::new(),
                quiet_rv: vec![0; controllers.len()],
                controllers,
                tx,
                log,
                writer: None,
                requester: None,
                dry_run: false,
            }),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current global resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    /// The current settings.
    pub fn settings(&self) -> Settings {
        self.lock().settings.clone()
    }

    /// Changes settings and lets the simulated controllers react (for example to a node coming back).
    pub fn update_settings(&self, p: &SettingsPatch) -> Settings {
        let mut g = self.lock();
        g.settings.apply(p);
        g.mark_all_dirty();
        // Asynchronous controllers have not looked at the new settings yet (a webhook back
        // up, a node back): nothing is settled until each has passed again.
        g.quiet_rv.iter_mut().for_each(|q| *q = 0);
        g.settle();
        g.settings.clone()
    }

    /// A scratch copy for a dry run (`dryRun=All`): the same objects, settings and
    /// resourceVersion, but no watch history, no watchers and a private request log, so
    /// whatever is done to it (controllers included) is seen by nobody and dropped with it.
    pub fn scratch_copy(&self) -> Arc<Store> {
        let g = self.lock();
        let (tx, _) = broadcast::channel(16);
        Arc::new(Store {
            inner: Mutex::new(Inner {
                rv: g.rv,
                objects: g.objects.clone(),
                uid_index: g.uid_index.clone(),
                owner_index: g.owner_index.clone(),
                select_index: g.select_index.clone(),
                select_indexed: g.select_indexed,
                history: VecDeque::new(),
                floor: g.rv,
                settings: g.settings.clone(),
                dirty: VecDeque::new(),
                removed_uids: g.removed_uids.clone(),
                quiet_rv: g.quiet_rv.clone(),
                controllers: g.controllers,
                tx,
                log: Arc::new(RequestLog::default()),
                writer: None,
                requester: None,
                dry_run: true,
            }),
        })
    }

    /// Whether selected lists and watches read the label and field indexes (the default)
    /// or scan every object of the resource: the answers are the same, which the
    /// simulator's tests check by comparing both.
    pub fn set_select_indexed(&self, on: bool) {
        self.lock().select_indexed = on;
    }

    /// Forgets the watch history: watches from any earlier resourceVersion now get 410 Gone.
    pub fn compact(&self) {
        let mut g = self.lock();
        g.history.clear();
        g.floor = g.rv;
    }

    /// Number of objects of a resource.
    pub fn count(&self, res: ResIdx) -> usize {
        self.lock()
            .objects
            .get(crate::convert::storage_of(res))
            .map_or(0, BTreeMap::len)
    }

    /// Every object of a resource (test helper).
    pub fn all(&self, res: ResIdx) -> Vec<Value> {
        self.lock()
            .objects
            .get(crate::convert::storage_of(res))
            .map(|m| {
                m.values()
                    .map(|o| crate::convert::to_view(res, o))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the simulated controllers have nothing left to do: always when they are
    /// synchronous; otherwise when every controller's last pass, at the current
    /// resourceVersion, changed nothing.
    pub fn controllers_settled(&self) -> bool {
        let g = self.lock();
        g.settings.controller_delay_ms == 0
            || (g.removed_uids.is_empty() && g.quiet_rv.iter().all(|q| *q == g.rv))
    }

    /// One asynchronous pass of controller `index` (of those the store was made with) over
    /// every object; does nothing while the controllers are synchronous.
    pub fn controller_pass(&self, index: usize) {
        let mut g = self.lock();
        if g.settings.controller_delay_ms > 0 {
            g.controller_pass(index);
        }
    }

    /// Runs `f` against the store as a controller reads it ([`Cluster`]), changing nothing:
    /// a timed controller's look.
    pub(crate) fn read_cluster<R>(&self, f: impl FnOnce(&dyn Cluster) -> R) -> R {
        let g = self.lock();
        f(&*g)
    }

    /// Runs `f` against the store as a controller sees it ([`Cluster`]),
    /// then lets the other controllers react: how an asynchronous controller writes.
    pub(crate) fn with_cluster<R>(&self, f: impl FnOnce(&mut dyn Cluster) -> R) -> R {
        let mut g = self.lock();
        let out = f(&mut *g);
        g.settle();
        out
    }

    /// Runs the simulated controllers over every object (used after loading a scenario).
    pub fn reconcile_all(&self) {
        let mut g = self.lock();
        g.mark_all_dirty();
        g.settle();
    }

    /// Starts a watch: validates the resourceVersion against the history and snapshots what to
    /// send first, atomically with subscribing to live events. The selectors only narrow the
    /// synthetic ADDED events to those that can match; the watcher matches every event.
    pub fn watch_start(
        &self,
        res: ResIdx,
        ns: Option<&str>,
        selectors: (&LabelSelector, &FieldSelector),
        rv: Option<&str>,
        send_initial: bool,
    ) -> Result<WatchStart, ApiError> {
        let g = self.lock();
        let rx = g.tx.subscribe();
        let parsed =
            match rv {
                None | Some("") | Some("0") => None,
                Some(s) => Some(s.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version: {s:?}"))
                })?),
            };
        let synthetic = parsed.is_none() || send_initial;
        if synthetic {
            let sres = crate::convert::storage_of(res);
            let initial = g
                .selected(sres, ns, selectors.0, selectors.1)
                .map(|(_, o)| {
                    Arc::new(StoreEvent {
                        rv: g.rv,
                        res: sres,
                        kind: EventType::Added,
                        object: o.clone(),
                        old: None,
                    })
                })
                .collect();
            return Ok(WatchStart {
                initial,
                rx,
                start_rv: g.rv,
            });
        }
        let from = parsed.unwrap_or(0);
        if from < g.floor {
            return Err(ApiError::expired(format!(
                "too old resource version: {from} ({})",
                g.floor
            )));
        }
        let initial = g
            .history
            .iter()
            .filter(|e| e.rv > from && e.res == crate::convert::storage_of(res))
            .cloned()
            .collect();
        Ok(WatchStart {
            initial,
            rx,
            start_rv: g.rv.max(from),
        })
    }
}

impl Inner {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Objects of a resource, optionally in one namespace, in (namespace, name) order.
    fn range<'a>(
        &'a self,
        res: ResIdx,
        ns: Option<&'a str>,
    ) -> Box<dyn Iterator<Item = (&'a Key, &'a Value)> + 'a> {
        let Some(map) = self.objects.get(res) else {
            return Box::new(std::iter::empty());
        };
        match ns {
            Some(ns) => Box::new(
                map.range((ns.to_string(), String::new())..)
                    .take_while(move |(k, _)| k.0 == ns),
            ),
            None => Box::new(map.iter()),
        }
    }

    /// The objects of (storage) resource `res`, optionally in one namespace, that can match
    /// the selectors, in (namespace, name) order: those the index narrows them to, or every
    /// one ([`Inner::range`]). A superset: the caller matches each against the selectors.
    fn selected<'a>(
        &'a self,
        res: ResIdx,
        ns: Option<&'a str>,
        label: &LabelSelector,
        field: &FieldSelector,
    ) -> Box<dyn Iterator<Item = (&'a Key, &'a Value)> + 'a> {
        let narrowed = self
            .select_indexed
            .then(|| self.select_index.candidates(res, label, field))
            .flatten();
        let (Some(keys), Some(map)) = (narrowed, self.objects.get(res)) else {
            return self.range(res, ns);
        };
        let keys: Box<dyn Iterator<Item = &'a Key> + 'a> = match ns {
            Some(ns) => Box::new(
                keys.range((ns.to_string(), String::new())..)
                    .take_while(move |k| k.0 == ns),
            ),
            None => Box::new(keys.iter()),
        };
        Box::new(keys.filter_map(move |k| map.get_key_value(k)))
    }

    fn get_obj(&self, res: ResIdx, key: &Key) -> Option<&Value> {
        self.objects.get(res).and_then(|m| m.get(key))
    }

    fn mark_all_dirty(&mut self) {
        let keys: Vec<(ResIdx, Key)> = self
            .objects
            .iter()
            .enumerate()
            .flat_map(|(i, m)| m.keys().map(move |k| (i, k.clone())))
            .collect();
        self.dirty.extend(keys);
    }

    fn index_remove(&mut self, res: ResIdx, key: &Key, obj: &Value) {
        self.select_index.remove(res, key, obj);
        let uid = meta::uid(obj);
        if !uid.is_empty() {
            self.uid_index.remove(uid);
        }
        for o in meta::owner_uids(obj) {
            if let Some(set) = self.owner_index.get_mut(&o) {
                set.remove(&(res, key.clone()));
                if set.is_empty() {
                    self.owner_index.remove(&o);
                }
            }
        }
    }

    fn index_add(&mut self, res: ResIdx, key: &Key, obj: &Value) {
        self.select_index.add(res, key, obj);
        let uid = meta::uid(obj);
        if !uid.is_empty() {
            self.uid_index.insert(uid.to_string(), (res, key.clone()));
        }
        for o in meta::owner_uids(obj) {
            self.owner_index
                .entry(o)
                .or_default()
                .insert((res, key.clone()));
        }
    }

    fn record(&mut self, ev: StoreEvent) {
        let ev = Arc::new(ev);
        self.history.push_back(ev.clone());
        while self.history.len() > self.settings.watch_history {
            if let Some(old) = self.history.pop_front() {
                self.floor = old.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(ev);
    }

    /// Stores an object (its resourceVersion is assigned here) and emits ADDED or MODIFIED.
    fn store_put(&mut self, res: ResIdx, mut obj: Value) -> Value {
        let key = (
            meta::namespace(&obj).to_string(),
            meta::name(&obj).to_string(),
        );
        let rv = self.next_rv();
        meta::meta_mut(&mut obj).insert("resourceVersion".into(), Value::String(rv.to_string()));
        let old = self.objects.get_mut(res).and_then(|m| m.remove(&key));
        if let Some(o) = &old {
            self.index_remove(res, &key, o);
        }
        self.index_add(res, &key, &obj);
        if let Some(m) = self.objects.get_mut(res) {
            m.insert(key.clone(), obj.clone());
        }
        let kind = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(StoreEvent {
            rv,
            res,
            kind,
            object: obj.clone(),
            old,
        });
        self.dirty.push_back((res, key));
        self.mark_owners_dirty(&obj);
        obj
    }

    /// Owners react to changes of their dependents (virt-controller to pods, the GC to foreground deletion).
    fn mark_owners_dirty(&mut self, obj: &Value) {
        for o in meta::owner_uids(obj) {
            if let Some(target) = self.uid_index.get(&o).cloned() {
                self.dirty.push_back(target);
            }
        }
    }

    /// Removes an object for good, emits DELETED and queues garbage collection of its dependents.
    fn store_remove(&mut self, res: ResIdx, key: &Key) -> Option<Value> {
        let old = self.objects.get_mut(res).and_then(|m| m.remove(key))?;
        self.index_remove(res, key, &old);
        let rv = self.next_rv();
        let mut last = old.clone();
        meta::meta_mut(&mut last).insert("resourceVersion".into(), Value::String(rv.to_string()));
        self.record(StoreEvent {
            rv,
            res,
            kind: EventType::Deleted,
            object: last.clone(),
            old: Some(old),
        });
        let uid = meta::uid(&last).to_string();
        if !uid.is_empty() {
            self.removed_uids.push_back(uid);
        }
        self.dirty.push_back((res, key.clone()));
        self.mark_owners_dirty(&last);
        Some(last)
    }

    /// Logs a write made by a simulated controller.
    fn log_internal(&self, actor: &str, method: &str, path: String, body: Value, status: u16) {
        self.log.push(RequestRecord {
            user: None,
            seq: 0,
            time: String::new(),
            method: method.into(),
            path,
            query: String::new(),
            content_type: if body.is_null() {
                String::new()
            } else {
                "application/json".into()
            },
            view: String::new(),
            body,
            status,
            bytes_in: 0,
            bytes_out: 0,
            micros: 0,
            internal: true,
            actor: Some(actor.into()),
        });
    }
}

/// The URL path of an object.
pub fn object_path(res: ResIdx, ns: &str, name: &str) -> String {
    let Some(r) = RESOURCES.get(res) else {
        return String::new();
    };
    let base = if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    if r.namespaced {
        format!("{base}/namespaces/{ns}/{}/{name}", r.plural)
    } else {
        format!("{base}/{}/{name}", r.plural)
    }
}
