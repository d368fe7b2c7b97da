//! The verbs: get, list, create, update, patch, delete and direct loading, with the
//! apiserver's metadata semantics.

use serde_json::{json, Value};

use super::{object_path, Inner, Store};
use crate::admission::{self, vap, Operation, Phase};
use crate::convert::{from_view, storage_of, to_view, view_cow};
use crate::errors::ApiError;
use crate::identity::Identity;
use crate::managed_fields::{self, Writer};
use crate::meta;
use crate::patch::{self, PatchKind};
use crate::resources::{find_kind, ResIdx, ResourceDef, RESOURCES};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store_vocab::{DeleteOptions, Key};
use crate::validation;

/// Parameters of a list.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// `labelSelector`.
    pub label_selector: Option<String>,
    /// `fieldSelector`.
    pub field_selector: Option<String>,
    /// `limit` (0: no limit).
    pub limit: usize,
    /// `continue` token from a previous page.
    pub continue_token: Option<String>,
}

/// A patch request.
#[derive(Debug, Clone, Copy)]
pub struct PatchParams<'a> {
    /// Patch type (from the Content-Type).
    pub kind: PatchKind,
    /// Patch body.
    pub body: &'a [u8],
    /// Whether the `/status` subresource is patched.
    pub status: bool,
    /// `fieldManager` query parameter (required for server-side apply).
    pub field_manager: Option<&'a str>,
}

fn res_def(res: ResIdx) -> &'static ResourceDef {
    &RESOURCES[res.min(RESOURCES.len() - 1)]
}

fn key_for(r: &ResourceDef, ns: &str, name: &str) -> Key {
    let ns = if r.namespaced { ns } else { "" };
    (ns.to_string(), name.to_string())
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    bytes.and_then(|b| String::from_utf8(b).ok())
}

/// `names.MaxGeneratedNameLength`: 63 − 5 random characters.
const MAX_GENERATED_NAME_LENGTH: usize = 58;

const GENERATE_NAME_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn random_suffix() -> String {
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| GENERATE_NAME_CHARS[*b as usize % GENERATE_NAME_CHARS.len()] as char)
        .collect()
}

impl Store {
    /// Gets one object.
    pub fn get(&self, res: ResIdx, ns: &str, name: &str) -> Result<Value, ApiError> {
        let r = res_def(res);
        self.lock()
            .view_get(res, &key_for(r, ns, name))
            .ok_or_else(|| ApiError::not_found(r, name))
    }

    /// Lists objects (in one namespace or all) as a `...List` object with a resourceVersion.
    pub fn list(&self, res: ResIdx, ns: Option<&str>, q: &ListQuery) -> Result<Value, ApiError> {
        let r = res_def(res);
        let label = LabelSelector::parse(q.label_selector.as_deref().unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        // The apiserver answers just the conversion error; kubectl adds "Unable to find ... that match ...".
        let field = FieldSelector::parse(r, q.field_selector.as_deref().unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        let start: Option<Key> = match q.continue_token.as_deref() {
            None | Some("") => None,
            Some(t) => {
                let decoded = unhex(t).ok_or_else(|| {
                    ApiError::bad_request("continue key is not valid: illegal token")
                })?;
                let (cns, cname) = decoded.split_once('\u{0}').ok_or_else(|| {
                    ApiError::bad_request("continue key is not valid: illegal token")
                })?;
                Some((cns.to_string(), cname.to_string()))
            }
        };
        let g = self.lock();
        let ns = if r.namespaced { ns } else { None };
        let mut items = Vec::new();
        let mut next: Option<Key> = None;
        let mut remaining = 0usize;
        for (k, stored) in g.selected(storage_of(res), ns, &label, &field) {
            if start.as_ref().is_some_and(|s| k <= s) {
                continue;
            }
            let o = &*view_cow(res, stored);
            if !label.matches(o) || !field.matches(r, o) {
                continue;
            }
            if q.limit > 0 && items.len() >= q.limit {
                remaining += 1;
                continue;
            }
            if q.limit > 0 && items.len() + 1 == q.limit {
                next = Some(k.clone());
            }
            items.push(o.clone());
        }
        let mut md = json!({"resourceVersion": g.rv.to_string()});
        if remaining > 0 {
            if let Some((kns, kname)) = next {
                md["continue"] = json!(hex(&format!("{kns}\u{0}{kname}")));
                md["remainingItemCount"] = json!(remaining);
            }
        }
        Ok(json!({
            "kind": format!("{}List", r.kind),
            "apiVersion": r.api_version(),
            "metadata": md,
            "items": items,
        }))
    }

    /// Creates an object (POST to a collection) as the admin.
    pub fn create(&self, res: ResIdx, ns: &str, body: Value) -> Result<Value, ApiError> {
        self.create_as(res, ns, body, &Identity::admin())
    }

    /// Creates an object as `who` (the admission policies see who).
    pub fn create_as(
        &self,
        res: ResIdx,
        ns: &str,
        body: Value,
        who: &Identity,
    ) -> Result<Value, ApiError> {
        let mut g = self.lock();
        g.requester = Some(who.clone());
        g.writer = Some(Writer::update(&who.manager, false));
        let out = g.create(res, ns, body, None);
        g.requester = None;
        g.writer = None;
        let out = out?;
        g.settle();
        Ok(out)
    }

    /// Replaces an object (PUT), or only its status when `status` is true, as the admin.
    pub fn update(
        &self,
        res: ResIdx,
        ns: &str,
        name: &str,
        body: Value,
        status: bool,
    ) -> Result<Value, ApiError> {
        self.update_as(res, ns, name, body, status, &Identity::admin())
    }

    /// Replaces an object as `who`: a VMI's status changes only stick for KubeVirt's own
    /// ServiceAccounts ([`Identity::is_kubevirt`]), as virt-api's VMI mutating webhook does.
    pub fn update_as(
        &self,
        res: ResIdx,
        ns: &str,
        name: &str,
        body: Value,
        status: bool,
        who: &Identity,
    ) -> Result<Value, ApiError> {
        let r = res_def(res);
        if meta::resource_version(&body).is_empty() && !validation::allows_unconditional_update(r) {
            // store.go Update: checked before the body is compared with anything.
            if self.lock().view_get(res, &key_for(r, ns, name)).is_some() {
                return Err(validation::unconditional_update(r, name));
            }
        }
        let mut g = self.lock();
        g.requester = Some(who.clone());
        g.writer = Some(Writer::update(&who.manager, status));
        let out = g.update(res, ns, name, body, status, None, who.is_kubevirt());
        g.requester = None;
        g.writer = None;
        let out = out?;
        g.settle();
        Ok(out)
    }

    /// Patches an object (or its status) as the admin. Server-side apply creates the object
    /// when absent; the returned flag says whether it did.
    pub fn patch(
        &self,
        res: ResIdx,
        ns: &str,
        name: &str,
        p: &PatchParams<'_>,
    ) -> Result<(Value, bool), ApiError> {
        self.patch_as(res, ns, name, p, &Identity::admin())
    }

    /// Patches an object as `who` (see [`Store::update_as`] for what depends on it).
    pub fn patch_as(
        &self,
        res: ResIdx,
        ns: &str,
        name: &str,
        p: &PatchParams<'_>,
        who: &Identity,
    ) -> Result<(Value, bool), ApiError> {
        let PatchParams {
            kind,
            field_manager,
            ..
        } = *p;
        if kind == PatchKind::Apply && field_manager.is_none_or(str::is_empty) {
            return Err(ApiError::new(
                422,
                "Invalid",
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ));
        }
        let mut g = self.lock();
        g.requester = Some(who.clone());
        // An apply is recorded as an `Apply` of the fields it changed (not, as the apiserver
        // does, of exactly the fields of the applied configuration).
        g.writer = Some(Writer {
            operation: if p.kind == PatchKind::Apply {
                "Apply"
            } else {
                "Update"
            },
            ..Writer::update(&who.manager, p.status)
        });
        let out = Self::patch_locked(&mut g, res, ns, name, p, who);
        g.requester = None;
        g.writer = None;
        let out = out?;
        g.settle();
        Ok(out)
    }

    fn patch_locked(
        g: &mut Inner,
        res: ResIdx,
        ns: &str,
        name: &str,
        p: &PatchParams<'_>,
        who: &Identity,
    ) -> Result<(Value, bool), ApiError> {
        let PatchParams {
            kind, body, status, ..
        } = *p;
        let r = res_def(res);
        let key = key_for(r, ns, name);
        let current = g.view_get(res, &key);
        let out = match current {
            None if kind == PatchKind::Apply && !status => {
                let mut applied = patch::parse_apply_body(body)?;
                let m = meta::meta_mut(&mut applied);
                m.insert("name".into(), json!(name));
                (g.create(res, ns, applied, None)?, true)
            }
            None => return Err(ApiError::not_found(r, name)),
            Some(cur) => {
                let patched = patch::apply_patch(kind, r, &cur, body)?;
                let patched_rv = meta::resource_version(&patched);
                if !patched_rv.is_empty() && patched_rv != meta::resource_version(&cur) {
                    return Err(ApiError::stale(r, name));
                }
                (
                    g.update(res, ns, name, patched, status, None, who.is_kubevirt())?,
                    false,
                )
            }
        };
        Ok(out)
    }

    /// Deletes an object with the apiserver's graceful-deletion and finalizer semantics. Returns
    /// the object (still present with a deletionTimestamp, or as deleted) or a `Status` Success.
    pub fn delete(
        &self,
        res: ResIdx,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        self.delete_as(res, ns, name, opts, &Identity::admin())
    }

    /// Deletes an object as `who` (the admission policies see who).
    pub fn delete_as(
        &self,
        res: ResIdx,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
        who: &Identity,
    ) -> Result<Value, ApiError> {
        let mut g = self.lock();
        g.requester = Some(who.clone());
        let out = g.delete(res, ns, name, opts, None);
        g.requester = None;
        let out = out?;
        g.settle();
        Ok(out)
    }

    /// Deletes every object a list with these selectors returns (one page when `limit` is
    /// set), each with the single-object delete semantics, and answers the list as it was
    /// before (k8s.io/apiserver pkg/registry/generic/registry/store.go `DeleteCollection`,
    /// v0.33.0: objects already gone are skipped, any other failure ends it).
    pub fn delete_collection(
        &self,
        res: ResIdx,
        ns: Option<&str>,
        q: &ListQuery,
        opts: &DeleteOptions,
        who: &Identity,
    ) -> Result<Value, ApiError> {
        let listed = self.list(res, ns, q)?;
        let mut g = self.lock();
        for item in listed["items"].as_array().into_iter().flatten() {
            g.requester = Some(who.clone());
            let out = g.delete(res, meta::namespace(item), meta::name(item), opts, None);
            g.requester = None;
            match out {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => {
                    g.settle();
                    return Err(e);
                }
            }
            g.settle();
        }
        Ok(listed)
    }

    /// `POST pods/NAME/eviction` with a policy/v1 (or v1beta1) Eviction: deletes the pod with
    /// the Eviction's `deleteOptions`, as k8s.io/kubernetes
    /// `pkg/registry/core/pod/storage/eviction.go` (v1.33) does when no PodDisruptionBudget
    /// covers it (the simulator serves none): the name must match the URL's (400), the
    /// validating webhooks on `pods/eviction` CREATE run first, a missing pod is 404, and a
    /// Pending pod that is not deleting is deleted with its resourceVersion as precondition.
    /// Answers `Status` Success with code 201, as the create handler does.
    pub fn evict(
        &self,
        ns: &str,
        name: &str,
        eviction: &Value,
        who: &Identity,
    ) -> Result<Value, ApiError> {
        let Some(pods) = find_kind("v1", "Pod") else {
            return Err(ApiError::path_not_found());
        };
        let r = res_def(pods);
        if eviction.pointer("/metadata/name").and_then(Value::as_str) != Some(name) {
            return Err(ApiError::bad_request(
                "name in URL does not match name in Eviction object",
            ));
        }
        let kind = eviction
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("Eviction");
        let av = eviction
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("policy/v1");
        if kind != "Eviction" || !matches!(av, "policy/v1" | "policy/v1beta1") {
            return Err(ApiError::bad_request(format!(
                "not a Eviction object: {av}, Kind={kind}"
            )));
        }
        let mut opts = DeleteOptions::default();
        if let Some(d) = eviction.get("deleteOptions").filter(|d| d.is_object()) {
            opts.merge_body(d);
        }
        let mut g = self.lock();
        g.admit(Phase::Mutating, Operation::Create, r, "eviction", name)?;
        // The eviction's own admission; the pod delete it makes skips admission
        // (eviction.go deletes with rest.ValidateAllObjectFunc).
        g.requester = Some(who.clone());
        let policies = g.admit_policies(&vap::Request {
            operation: Operation::Create,
            resource: r,
            subresource: "eviction",
            namespace: ns,
            name,
            object: Some(eviction),
            old_object: None,
            user: who,
            dry_run: g.dry_run,
        });
        g.requester = None;
        policies?;
        g.admit(Phase::Validating, Operation::Create, r, "eviction", name)?;
        let pod = g
            .view_get(pods, &key_for(r, ns, name))
            .ok_or_else(|| ApiError::not_found(r, name))?;
        let phase = pod
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("");
        // shouldEnforceResourceVersion: not terminal, not deleting (and here, where no PDB
        // exists, only the Pending pods that canIgnorePDB lets through get this far with it).
        if phase == "Pending" && !meta::is_deleting(&pod) && opts.precondition_rv.is_none() {
            opts.precondition_rv = Some(meta::resource_version(&pod).to_string());
        }
        let out = g.delete(pods, ns, name, &opts, None);
        g.settle();
        out?;
        Ok(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        )
    }

    /// Stores an object exactly as given (status, deletionTimestamp and finalizers included),
    /// bypassing create/update/delete semantics but not validation (an object the apiserver
    /// would refuse to store is refused with its 422); fills uid, creationTimestamp and resourceVersion
    /// when missing. The simulated controllers then react to it.
    pub fn put(&self, obj: Value) -> Result<Value, ApiError> {
        let mut g = self.lock();
        let out = g.load(obj)?;
        g.settle();
        Ok(out)
    }

    /// Loads many objects as [`Store::put`] does, without running the controllers.
    pub fn load_all(&self, objs: Vec<Value>) -> Result<usize, ApiError> {
        let mut g = self.lock();
        let n = objs.len();
        for o in objs {
            g.load(o)?;
        }
        Ok(n)
    }

    /// Removes an object at once, bypassing finalizers (test set-up helper). Returns whether it existed.
    pub fn remove(&self, res: ResIdx, ns: &str, name: &str) -> bool {
        let r = res_def(res);
        let mut g = self.lock();
        let found = g
            .store_remove(storage_of(res), &key_for(r, ns, name))
            .is_some();
        g.settle();
        found
    }
}

impl Inner {
    /// One phase of the admission webhooks for a write (see [`crate::admission`]).
    pub(super) fn admit(
        &self,
        phase: Phase,
        operation: Operation,
        resource: &ResourceDef,
        subresource: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        admission::admit(
            &self.settings,
            phase,
            &admission::Attributes {
                operation,
                resource,
                subresource,
                name,
            },
        )
    }

    fn namespace_exists(&self, ns: &str) -> bool {
        let Some(nsi) = crate::resources::find("", "v1", "namespaces") else {
            return true;
        };
        self.get_obj(nsi, &(String::new(), ns.to_string()))
            .is_some()
    }

    fn check_kind(r: &ResourceDef, body: &Value) -> Result<(), ApiError> {
        let kind = body.get("kind").and_then(Value::as_str).unwrap_or("");
        let av = body.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        if (!kind.is_empty() && kind != r.kind) || (!av.is_empty() && av != r.api_version()) {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                r.api_version()
            )));
        }
        Ok(())
    }

    pub(super) fn create(
        &mut self,
        res: ResIdx,
        ns: &str,
        mut body: Value,
        actor: Option<&str>,
    ) -> Result<Value, ApiError> {
        let r = res_def(res);
        if let Some(a) = actor {
            self.writer = Some(Writer::update(a, false));
        }
        if !body.is_object() {
            return Err(ApiError::bad_request("the request body is not an object"));
        }
        Self::check_kind(r, &body)?;
        validation::check_micro_times(r, &body)?;
        let body_ns = meta::namespace(&body).to_string();
        if r.namespaced {
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            if !self.namespace_exists(ns) {
                return Err(ApiError::namespace_not_found(ns));
            }
        }
        let mut name = meta::name(&body).to_string();
        let requested_name = name.clone();
        if name.is_empty() {
            let gen = body
                .pointer("/metadata/generateName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if gen.is_empty() {
                return Err(ApiError::invalid(
                    r,
                    "",
                    "metadata.name",
                    "FieldValueRequired",
                    "name or generateName is required",
                ));
            }
            // names.SimpleNameGenerator (k8s.io/apiserver pkg/storage/names/generate.go,
            // v0.33.0): the prefix is cut to 58 bytes, then 5 random characters.
            let mut base = gen.as_str();
            if base.len() > MAX_GENERATED_NAME_LENGTH {
                let mut end = MAX_GENERATED_NAME_LENGTH;
                while !base.is_char_boundary(end) {
                    end -= 1;
                }
                base = &base[..end];
            }
            name = format!("{base}{}", random_suffix());
        }
        // The mutating webhooks run in the handler, before the registry's create
        // (k8s.io/apiserver pkg/endpoints/handlers/create.go, v0.33.0).
        self.admit(Phase::Mutating, Operation::Create, r, "", &name)?;
        let obj = body
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("not an object"))?;
        obj.insert("apiVersion".into(), json!(r.api_version()));
        obj.insert("kind".into(), json!(r.kind));
        if r.status_subresource {
            match r.plural {
                "pods" => {
                    obj.insert(
                        "status".into(),
                        json!({"phase": "Pending", "qosClass": "BestEffort"}),
                    );
                }
                "namespaces" => {
                    obj.insert("status".into(), json!({"phase": "Active"}));
                }
                _ if r.custom => {
                    obj.remove("status");
                }
                _ => {}
            }
        }
        if is_vmi(r) {
            // vmi-mutator.go on create (v1.4.0), for every creator: status is Pending with
            // its phase transition time.
            let now = meta::now_rfc3339();
            obj.insert(
                "status".into(),
                json!({"phase": "Pending", "phaseTransitionTimestamps": [
                    {"phase": "Pending", "phaseTransitionTimestamp": now}]}),
            );
        }
        let m = meta::meta_mut(&mut body);
        m.insert("name".into(), json!(name));
        if r.namespaced {
            m.insert("namespace".into(), json!(ns));
        } else {
            m.remove("namespace");
        }
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), json!(meta::now_rfc3339()));
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
        m.remove("selfLink");
        if r.tracks_generation() {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
        if r.plural == "namespaces" {
            let labels = m.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
        }
        // Registry Create (pkg/registry/generic/registry/store.go, v0.33.0): the strategy's
        // validation, then the validating webhooks, then storage, which finds a name taken.
        validation::validate_create(res, &body, self.settings.kube_minor())?;
        self.policy_check(
            Operation::Create,
            r,
            "",
            ns,
            &requested_name,
            Some(&body),
            None,
        )?;
        self.admit(Phase::Validating, Operation::Create, r, "", &name)?;
        self.webhook_content(Operation::Create, r, "", &body)?;
        if self.view_get(res, &key_for(r, ns, &name)).is_some() {
            return Err(ApiError::already_exists(r, &name));
        }
        let stored = self.view_put(res, body);
        if let Some(a) = actor {
            self.log_internal(a, "POST", object_path(res, ns, ""), stored.clone(), 201);
        }
        Ok(stored)
    }

    /// `kubevirt`: the writer is one of KubeVirt's ServiceAccounts (its VMI status writes stick).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn update(
        &mut self,
        res: ResIdx,
        ns: &str,
        name: &str,
        mut body: Value,
        status: bool,
        actor: Option<&str>,
        kubevirt: bool,
    ) -> Result<Value, ApiError> {
        let r = res_def(res);
        if let Some(a) = actor {
            self.writer = Some(Writer::update(a, status));
        }
        let key = key_for(r, ns, name);
        let old = self
            .view_get(res, &key)
            .ok_or_else(|| ApiError::not_found(r, name))?;
        if !body.is_object() {
            return Err(ApiError::bad_request("the request body is not an object"));
        }
        Self::check_kind(r, &body)?;
        validation::check_micro_times(r, &body)?;
        let body_name = meta::name(&body);
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let body_ns = meta::namespace(&body);
        if r.namespaced && !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        // Store.Update (store.go, v0.33.0): the updated object (patch applied, mutating
        // webhooks called) comes first, then the resourceVersion check, the strategy's
        // validation and the validating webhooks; a no-op is found by storage after all that.
        let sub = if status { "status" } else { "" };
        self.admit(Phase::Mutating, Operation::Update, r, sub, name)?;
        self.mutator_content(Operation::Update, r, sub, &mut body)?;
        let body_rv = meta::resource_version(&body);
        if !body_rv.is_empty() && body_rv != meta::resource_version(&old) {
            return Err(ApiError::stale(r, name));
        }
        let mut new = if status {
            let mut n = old.clone();
            match body.get("status") {
                Some(s) => {
                    if let Some(o) = n.as_object_mut() {
                        o.insert("status".into(), s.clone());
                    }
                }
                None => {
                    if let Some(o) = n.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            n
        } else {
            // virt-api's VMI mutating webhook (kubevirt pkg/virt-api/webhooks/mutating-webhook/
            // mutators/vmi-mutator.go, v1.4.0): on update, a status change from anyone but
            // KubeVirt's ServiceAccounts is replaced by the old status.
            let reverts_status = r.status_subresource || (is_vmi(r) && !kubevirt);
            if reverts_status {
                if let Some(o) = body.as_object_mut() {
                    match old.get("status") {
                        Some(s) => {
                            o.insert("status".into(), s.clone());
                        }
                        None => {
                            o.remove("status");
                        }
                    }
                }
            }
            body
        };
        if let Some(o) = new.as_object_mut() {
            o.insert("apiVersion".into(), json!(r.api_version()));
            o.insert("kind".into(), json!(r.kind));
        }
        {
            let m = meta::meta_mut(&mut new);
            m.insert("name".into(), json!(name));
            if r.namespaced {
                m.insert("namespace".into(), json!(ns));
            }
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match old.pointer(&format!("/metadata/{f}")) {
                    Some(v) => {
                        m.insert(f.into(), v.clone());
                    }
                    None => {
                        m.remove(f);
                    }
                }
            }
            m.remove("selfLink");
        }
        validation::validate_update(res, &new, &old, self.settings.kube_minor())?;
        self.policy_check(Operation::Update, r, sub, ns, name, Some(&new), Some(&old))?;
        self.admit(Phase::Validating, Operation::Update, r, sub, name)?;
        self.webhook_content(Operation::Update, r, sub, &new)?;
        if r.tracks_generation() && meta::spec_part(&new) != meta::spec_part(&old) {
            let gen = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta::meta_mut(&mut new).insert("generation".into(), json!(gen + 1));
        }
        // A no-op update does not write (the resourceVersion stays), like the apiserver.
        let mut cmp = new.clone();
        meta::meta_mut(&mut cmp).insert(
            "resourceVersion".into(),
            json!(meta::resource_version(&old)),
        );
        if cmp == old {
            return Ok(old);
        }
        let path = format!(
            "{}{}",
            object_path(res, ns, name),
            if status { "/status" } else { "" }
        );
        // The update that empties a deleting object's finalizers deletes it, and the answer
        // is the updated object itself (deletionTimestamp set, no finalizers, the stored
        // resourceVersion), 200: k8s.io/apiserver pkg/registry/generic/registry/store.go
        // `Update` → `ShouldDeleteDuringUpdate` → `deleteWithoutFinalizers` ("return the
        // object in the request instead" of finalizeDelete's Status), v1.29.0 to v1.33.0.
        if should_remove_after_update(r, &new) {
            meta::meta_mut(&mut new).insert(
                "resourceVersion".into(),
                json!(meta::resource_version(&old)),
            );
            self.replace_silently(res, &key, new);
            let mut gone = self.view_remove(res, &key).unwrap_or_default();
            // The watch's DELETED event has the deletion's own resourceVersion; the answer is
            // the object of the request, with the version it was updated from.
            if gone.is_object() {
                meta::meta_mut(&mut gone).insert(
                    "resourceVersion".into(),
                    json!(meta::resource_version(&old)),
                );
            }
            if let Some(a) = actor {
                self.log_internal(a, "PUT", path, gone.clone(), 200);
            }
            return Ok(gone);
        }
        let stored = self.view_put(res, new);
        if let Some(a) = actor {
            self.log_internal(a, "PUT", path, stored.clone(), 200);
        }
        Ok(stored)
    }

    pub(super) fn delete(
        &mut self,
        res: ResIdx,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
        actor: Option<&str>,
    ) -> Result<Value, ApiError> {
        let r = res_def(res);
        let key = key_for(r, ns, name);
        let cur = self
            .view_get(res, &key)
            .ok_or_else(|| ApiError::not_found(r, name))?;
        // k8s.io/apiserver pkg/registry/rest/delete.go BeforeDelete (v0.33.0) checks the
        // preconditions first, with a Conflict on the *kind* (GroupResource{group, Kind});
        // namespaces check the UID in their own Delete
        // (k8s.io/kubernetes pkg/registry/core/namespace/storage/storage.go, v1.33.0).
        if let Some(u) = &opts.precondition_uid {
            if u != meta::uid(&cur) {
                if r.group.is_empty() && r.plural == "namespaces" {
                    return Err(ApiError::conflict(
                        r,
                        name,
                        &format!(
                            "Precondition failed: UID in precondition: {u}, UID in object meta: {}",
                            meta::uid(&cur)
                        ),
                    ));
                }
                return Err(ApiError::conflict_on_kind(
                    r,
                    name,
                    &format!(
                        "the UID in the precondition ({u}) does not match the UID in record ({}). The object might have been deleted and then recreated",
                        meta::uid(&cur)
                    ),
                ));
            }
        }
        if let Some(v) = &opts.precondition_rv {
            if v != meta::resource_version(&cur) {
                return Err(ApiError::conflict_on_kind(
                    r,
                    name,
                    &format!(
                        "the ResourceVersion in the precondition ({v}) does not match the ResourceVersion in record ({}). The object might have been modified",
                        meta::resource_version(&cur)
                    ),
                ));
            }
        }
        // The DELETE webhooks: mutating in the handler, validating as the registry's
        // deleteValidation once the preconditions hold (store.go Delete, v0.33.0).
        self.admit(Phase::Mutating, Operation::Delete, r, "", name)?;
        self.policy_check(Operation::Delete, r, "", ns, name, None, Some(&cur))?;
        self.admit(Phase::Validating, Operation::Delete, r, "", name)?;
        if let Some(a) = actor {
            let body = json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": opts.grace_period_seconds, "propagationPolicy": opts.propagation_policy});
            self.log_internal(a, "DELETE", object_path(res, ns, name), body, 200);
        }
        let grace = deletion_grace(r, &cur, opts.grace_period_seconds);
        let now = jiff::Timestamp::now().as_second();
        let mut obj = cur.clone();
        if meta::is_deleting(&cur) {
            // Already terminating: only a shorter grace period changes anything.
            let cur_grace = cur
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if r.plural == "pods" && grace < cur_grace {
                // BeforeDelete: the deletionTimestamp moves back by the old period and forward
                // by the new one, never into the past; a graceful (non-zero) request whose time
                // has run out becomes 1 s.
                let old_ts = cur
                    .pointer("/metadata/deletionTimestamp")
                    .and_then(Value::as_str)
                    .and_then(meta::parse_ts)
                    .unwrap_or(now);
                let mut ts = old_ts - cur_grace + grace;
                let mut grace = grace;
                if ts < now {
                    ts = now;
                    if grace != 0 {
                        grace = 1;
                    }
                }
                let m = meta::meta_mut(&mut obj);
                m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                m.insert("deletionTimestamp".into(), json!(meta::ts_rfc3339(ts)));
                if grace == 0 && meta::finalizers(&obj).is_empty() {
                    self.replace_silently(res, &key, obj);
                    return Ok(self.deleted_response(r, res, &key));
                }
                return Ok(self.view_put(res, obj));
            }
            if meta::finalizers(&cur).is_empty() && cur_grace == 0 {
                return Ok(self.deleted_response(r, res, &key));
            }
            return Ok(cur);
        }
        let mut fins = meta::finalizers(&obj);
        match opts.propagation_policy.as_deref() {
            Some("Orphan") if !fins.iter().any(|f| f == "orphan") => fins.push("orphan".into()),
            Some("Foreground") if !fins.iter().any(|f| f == "foregroundDeletion") => {
                fins.push("foregroundDeletion".into())
            }
            _ => {}
        }
        if grace > 0 || !fins.is_empty() {
            meta::set_finalizers(&mut obj, &fins);
            let m = meta::meta_mut(&mut obj);
            m.insert(
                "deletionTimestamp".into(),
                json!(meta::ts_rfc3339(now + grace)),
            );
            m.insert("deletionGracePeriodSeconds".into(), json!(grace));
            if r.tracks_generation() {
                let gen = cur
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                m.insert("generation".into(), json!(gen + 1));
            }
            return Ok(self.view_put(res, obj));
        }
        Ok(self.deleted_response(r, res, &key))
    }

    fn deleted_response(&mut self, r: &ResourceDef, res: ResIdx, key: &Key) -> Value {
        let gone = self.view_remove(res, key).unwrap_or_default();
        if r.returns_deleted_object {
            return gone;
        }
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {"name": key.1, "group": r.group, "kind": r.plural, "uid": meta::uid(&gone)},
        })
    }

    /// Stores an object as written (scenario loading and direct test set-up).
    pub(super) fn load(&mut self, mut obj: Value) -> Result<Value, ApiError> {
        let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let res = find_kind(av, kind).ok_or_else(|| {
            ApiError::bad_request(format!("the simulator does not serve {av} {kind}"))
        })?;
        let r = res_def(res);
        if meta::name(&obj).is_empty() {
            return Err(ApiError::bad_request(format!(
                "{kind} without metadata.name"
            )));
        }
        let m = meta::meta_mut(&mut obj);
        if r.namespaced {
            let ns_missing = m
                .get("namespace")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty);
            if ns_missing {
                m.insert("namespace".into(), json!("default"));
            }
        } else {
            m.remove("namespace");
        }
        if m.get("uid")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        }
        if m.get("creationTimestamp")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            m.insert("creationTimestamp".into(), json!(meta::now_rfc3339()));
        }
        if r.tracks_generation() && m.get("generation").is_none() {
            m.insert("generation".into(), json!(1));
        }
        // A numeric resourceVersion in the file is kept in view: the global counter moves past it.
        if let Some(given) = m
            .get("resourceVersion")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<u64>().ok())
        {
            self.rv = self.rv.max(given.saturating_sub(1));
        }
        // An object the apiserver could never have stored is refused here too (the state it is
        // in may be any the API can reach: deletionTimestamp, finalizers, status).
        validation::validate_create(res, &obj, self.settings.kube_minor())?;
        managed_fields::synthesize(r, &mut obj);
        let writer = self.writer.take();
        let stored = self.view_put(res, obj);
        self.writer = writer;
        Ok(stored)
    }

    /// The object of served resource `res` (converted from its storage form).
    pub(super) fn view_get(&self, res: ResIdx, key: &Key) -> Option<Value> {
        self.get_obj(storage_of(res), key).map(|o| to_view(res, o))
    }

    /// Stores an object given in the served form of `res`; returns it as stored, served form.
    pub(super) fn view_put(&mut self, res: ResIdx, mut obj: Value) -> Value {
        if let Some(w) = self.writer.clone() {
            let r = res_def(res);
            let old = self.view_get(res, &key_for(r, meta::namespace(&obj), meta::name(&obj)));
            managed_fields::stamp(r, old.as_ref(), &mut obj, &w, &meta::now_rfc3339());
        }
        let stored = self.store_put(storage_of(res), from_view(res, &obj));
        to_view(res, &stored)
    }

    /// Removes an object for good; returns its last state in the served form of `res`.
    pub(super) fn view_remove(&mut self, res: ResIdx, key: &Key) -> Option<Value> {
        self.store_remove(storage_of(res), key)
            .map(|o| to_view(res, &o))
    }

    /// Replaces an object without a resourceVersion or watch event (its removal follows).
    fn replace_silently(&mut self, res: ResIdx, key: &Key, obj: Value) {
        let sres = storage_of(res);
        let new = from_view(res, &obj);
        if let Some(old) = self.get_obj(sres, key).cloned() {
            self.index_remove(sres, key, &old);
        }
        self.index_add(sres, key, &new);
        if let Some(m) = self.objects.get_mut(sres) {
            m.insert(key.clone(), new);
        }
    }
}

/// Whether a resource is KubeVirt's VirtualMachineInstance.
fn is_vmi(r: &ResourceDef) -> bool {
    r.group == "kubevirt.io" && r.plural == "virtualmachineinstances"
}

/// Graceful deletion period: only pods have one; unscheduled or finished pods go at once.
/// A negative period is 1 s: k8s.io/apiserver pkg/registry/rest/delete.go BeforeDelete
/// ("Negative values will be treated as the value `1s` on the delete path", v0.33.0) and
/// k8s.io/kubernetes pkg/registry/core/pod/strategy.go CheckGracefulDelete (v1.33.0).
fn deletion_grace(r: &ResourceDef, obj: &Value, requested: Option<i64>) -> i64 {
    if r.plural != "pods" || !r.group.is_empty() {
        return 0;
    }
    let requested = requested.map(|g| if g < 0 { 1 } else { g });
    let node = obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    let phase = obj
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    if node.is_empty() || phase == "Succeeded" || phase == "Failed" {
        return 0;
    }
    requested
        .or_else(|| {
            obj.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .map(|g| if g < 0 { 1 } else { g })
        .unwrap_or(30)
}

/// Whether an update leaves a deleting object with nothing to wait for (no finalizers, and
/// for pods no grace period left), so that the store removes it.
fn should_remove_after_update(r: &ResourceDef, obj: &Value) -> bool {
    if !meta::is_deleting(obj) || !meta::finalizers(obj).is_empty() {
        return false;
    }
    if r.plural == "pods" && r.group.is_empty() {
        return obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            == 0;
    }
    true
}
