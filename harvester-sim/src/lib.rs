//! `harvester-sim`: a simulated Harvester API server (Kubernetes + KubeVirt + Longhorn) for
//! vmrecover's tests. It speaks HTTPS on loopback (plain HTTP as an option), serves the resources of design §4 as
//! schema-free JSON with the real apiserver's semantics, and is faithful enough that the real
//! `kubectl` (1.27–1.33) and `kube::Client` work against it.
//!
//! # Running it
//! ```text
//! harvester-sim --listen 127.0.0.1:0 --kubeconfig-out /tmp/kc \
//!     --scenario harvester-sim/scenarios/power-loss.yaml [--log-requests FILE] [--kube-version 1.33.2]
//! ```
//! It writes the admin kubeconfig (server `https://ADDR`, shaped like RKE2's `rke2.yaml`: the
//! simulator's CA and a client certificate `CN=kubernetes-admin, O=system:masters`; with
//! `--plain-http`, `http://ADDR` and a bearer token), prints one line `listening on ADDR` once
//! ready and runs until SIGTERM/SIGINT (exit 0). `--ca-out FILE` also writes the CA.
//!
//! # HTTPS and credentials ([`tls`], [`tokens`], [`kubeconfig`])
//! A `server-ca` signs the serving certificate (SANs `kubernetes…`, `localhost`,
//! `127.0.0.1`, `::1`, `10.53.0.1`), a `client-ca` signs client certificates (CN = user, O =
//! groups, as the apiserver's x509 authenticator reads them). Requests authenticate with a
//! client certificate, then a bearer token (the kubeconfig tokens, or one minted by
//! `POST serviceaccounts/NAME/token`); none, or one nobody issued, is 401 over HTTPS.
//! [`Sim::write_kubeconfig_as`] writes a token + CA kubeconfig for a ServiceAccount and a
//! client-certificate one for a user; [`Sim::write_token_kubeconfig`] one for any token;
//! [`Sim::ca_pem`] is what a pod's `ca.crt` holds.
//!
//! # In-process
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use harvester_sim::{Sim, SimConfig, FaultRule};
//! let sim = Sim::start(SimConfig::default().scenario_file("harvester-sim/scenarios/power-loss.yaml")).await?;
//! let kubeconfig = sim.kubeconfig_path();          // written for you, removed on drop
//! sim.add_fault(FaultRule::status(Some("PATCH"), "*/virtualmachineinstances/*", 503).times(1));
//! sim.set_virt_controller(true);
//! let vmi = sim.get("kubevirt.io/v1", "VirtualMachineInstance", "default", "vm-web-01");
//! let writes = sim.mutating_requests();            // client POST/PUT/PATCH/DELETE only
//! # let _ = (kubeconfig, vmi, writes); Ok(()) }
//! ```
//!
//! # Semantics
//! - One global, monotonically increasing `resourceVersion`; `uid`, `creationTimestamp`,
//!   `generation` (bumped when anything outside metadata/status changes, and when deletion starts).
//! - Create: 409 AlreadyExists, `generateName` (prefix cut to 58 bytes, 5 random characters),
//!   404 when the namespace does not exist; custom resources with a status subresource drop
//!   `status` on create, VMIs start `Pending` (virt-api's mutating webhook), pods start `Pending`.
//! - Validation ([`validation`]): create, update, patch and [`Sim::put`] refuse what the
//!   apiserver refuses, with its 422 `Invalid` Status (metadata of every kind, Events, Leases,
//!   updates without resourceVersion of Leases and custom resources, `MicroTime` syntax).
//! - Events: `events.k8s.io/v1` and core `v1` Events are one storage ([`convert`]).
//! - Update (PUT) and patch: 409 Conflict on a stale `resourceVersion`; a no-op does not write.
//!   Kinds with a status subresource ignore status on the main resource and everything but status on
//!   `/status`. VMIs have none (404): a status change through the main resource sticks only
//!   when KubeVirt's ServiceAccounts write it (the simulated virt-controller does), as virt-api's
//!   VMI mutating webhook decides; the user comes from the bearer token even without RBAC
//!   (no token: the admin, whose VMI status changes are reverted). No new finalizers may be added once an object is deleting (422, the real message).
//! - Patch: JSON patch (a failed `test` answers the real generic 422 Invalid
//!   "the server rejected our request due to an error in our request"), merge patch, strategic merge
//!   for built-in kinds (finalizers merge as a set, `$deleteFromPrimitiveList`; custom resources
//!   answer 415 like the real server), server-side apply (deep merge, creates when absent,
//!   `fieldManager` required).
//! - Delete: preconditions (uid, resourceVersion → 409, BeforeDelete's wording); a negative
//!   grace period is 1 s; `deletecollection` with label/field selectors (not for namespaces); finalizers keep the object with
//!   `deletionTimestamp`; removing the last finalizer removes it (watchers see DELETED);
//!   `propagationPolicy` Orphan/Foreground add the `orphan`/`foregroundDeletion` finalizers the
//!   garbage collector handles; pods delete gracefully (default `terminationGracePeriodSeconds`, 30):
//!   on a node listed in `downNodes` they stay Terminating, on an up node the simulated kubelet
//!   removes them at once, and a later delete with a shorter grace (0) removes them. Unscheduled or
//!   finished pods go at once.
//! - Admission ([`admission`]): writes pass virt-api's and Harvester's mutating and
//!   validating webhooks whose rules match, in the apiserver's order; each webhook (or every
//!   webhook of a Service) is switched `up`/`down`/`deny` with [`Sim::set_webhook`],
//!   `/_sim/webhooks` or the `webhooks` setting, and answers the apiserver's 500 or denial.
//! - ValidatingAdmissionPolicies ([`admission::vap`]): policies, bindings and params created
//!   through the API are enforced on every write as the client that sent it (the token's
//!   `extra`, e.g. the node of a pod-bound token, included), with CEL from the `cel` crate,
//!   before the validating webhooks; a denial is the apiserver's 422.
//! - Garbage collection: when an object is finally removed, its dependents (`ownerReferences`
//!   uid) are deleted (or lose the reference when another owner is alive).
//! - Simulated controllers live in [`controllers`], one file each; what differs between
//!   Harvester releases is data in [`profiles`] (setting `release`, default `1.8`).
//! - virt-controller (setting `virtController`), Harvester's VM controller
//!   (`harvesterController`), the kubelets and the garbage collector: see
//!   the crate's README.md and each file of [`controllers`] for what they do and the upstream
//!   source they follow. By default they react inside the request that changed something;
//!   with `controllerDelayMs` each runs in its own task ([`Sim::set_controller_delay`],
//!   [`Sim::wait_controllers_settled`], `GET /_sim/settled`). Their writes are logged as
//!   `internal`.
//! - Releases: [`SimConfig::release`] (`--release`) generates a scenario in one release's
//!   shapes ([`scenarios`]).
//! - Harvester's node-down controller (setting `nodeDownController`, off by default; its own
//!   task, every `nodeDownIntervalMs`): ≤ 1.6 force-deletes the launcher pods of a NotReady
//!   node after the `vm-force-reset-policy` period, ≥ 1.7 taints a node whose Ready is Unknown
//!   (`kubevirt.io/drain`, then `node.kubernetes.io/out-of-service`) and sets `Drained`, and
//!   stands still while an `Upgrade` runs. See [`controllers::node_down`].
//! - Watch: `resourceVersion` (unset/"0": synthetic ADDED of the current state first), 410 Gone
//!   ERROR event for a resourceVersion older than the kept history (`watchHistory` events, and
//!   everything before start-up or `/_sim/compact`), `timeoutSeconds`, `allowWatchBookmarks`,
//!   `sendInitialEvents`, label/field selectors with ADDED/DELETED on selection changes, and Table
//!   rows for `kubectl get -w`.
//! - Lists: label selectors (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`), field selectors
//!   (`metadata.name`, `metadata.namespace`, pods `spec.nodeName`, `status.phase`, ...; an unknown
//!   field is a 400), `limit`/`continue` pagination, server-side Table printing.
//! - Metadata-only reads ([`partial`]): `Accept: application/json;as=PartialObjectMetadataList;
//!   g=meta.k8s.io;v=v1` for lists and `as=PartialObjectMetadata` for gets and watches, with the
//!   apiserver's 406 for a mismatched form; the request log's `view` names the form asked for.
//! - `metadata.managedFields` ([`managed_fields`]): kept on every write (the manager is the
//!   request's `fieldManager` or user-agent prefix, a simulated controller's name for its own
//!   writes) and synthesised for loaded objects with the managers their kind has on a real
//!   cluster, so the bytes a client reads are a real cluster's.
//! - Discovery: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/G`, `/apis/G/V` (legacy form; kubectl
//!   asking for aggregated discovery falls back to it), `/openapi/v3` (JSON) and `/openapi/v2`
//!   (protobuf, the only form kubectl reads): PATCH operations declaring the `fieldValidation`
//!   parameter and no schemas, so kubectl 1.27–1.33 `create -f`/`apply -f` validate server-side
//!   (without `/openapi/v2`, kubectl ≤1.29 fails with "failed to download openapi").
//!
//! # RBAC (optional)
//! `--rbac FILE_OR_DIR...` ([`SimConfig::rbac_file`]) loads the ClusterRoles, Roles, bindings and
//! ServiceAccounts of deployment manifests (kustomization files and other kinds are skipped) and
//! enforces them: the admin kubeconfig is `system:masters`; `--sa-kubeconfig-out`
//! ([`Sim::write_kubeconfig_as`]) writes one for a ServiceAccount, whose requests get the real
//! 403 Forbidden Status when no rule grants them. See [`rbac`].
//!
//! # Dry run
//! `dryRun=All` on create/update/patch/delete validates and answers as if applied, on a
//! scratch copy of the store: nothing is stored, no watcher sees it, no controller reacts.
//!
//! # Control API over HTTP
//! See [`simapi`] for `/_sim/requests`, `/_sim/faults`, `/_sim/settings`,
//! `/_sim/webhooks`, `/_sim/objects` and `/_sim/compact`.
//!
//! # Scenario files
//! Multi-document YAML of objects as `kubectl get -o yaml` prints them, loaded as written
//! (status, deletionTimestamp and finalizers included); missing uid/resourceVersion/
//! creationTimestamp are filled in. An optional `apiVersion: sim.vmrecover.dev/v1`,
//! `kind: SimulatorSettings` document sets `downNodes`, `virtController`, `kubeVersion`,
//! `watchHistory`, `release`, `webhooks`, `harvesterController`, `controllerDelayMs`,
//! `nodeDownController`, `nodeDownIntervalMs`. Several files merge; `kind: List` documents are accepted.

#![warn(missing_docs)]

pub mod admission;
pub mod api;
pub mod cluster;
pub mod controllers;
pub mod convert;
pub mod discovery;
pub mod errors;
mod exchange;
pub mod faults;
pub mod identity;
pub mod kube_version;
pub mod kubeconfig;
pub mod managed_fields;
pub mod meta;
pub mod node;
pub mod node_down_style;
pub mod openapi;
pub mod partial;
pub mod patch;
pub mod profiles;
pub mod protobuf;
pub mod rbac;
pub mod requestlog;
pub mod resources;
pub mod reviews;
pub mod scenario;
pub mod scenarios;
pub mod selectors;
mod server;
pub mod settings;
pub mod simapi;
pub mod store;
pub mod store_vocab;
pub mod table;
pub mod tls;
pub mod tokens;
pub mod validation;
mod watch;
pub mod webhook_switches;
pub mod webhooks;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch as tokio_watch;

pub use admission::WebhookState;
pub use errors::ApiError;
pub use faults::{FaultAction, FaultRule, Faults};
pub use rbac::Identity;
pub use requestlog::{RequestLog, RequestRecord};
pub use scenario::Scenario;
pub use settings::{Settings, SettingsPatch};
pub use store::Store;

/// How to start a simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Address to listen on (default `127.0.0.1:0`: a free port).
    pub listen: SocketAddr,
    /// Scenario files, loaded in order.
    pub scenario_files: Vec<PathBuf>,
    /// Scenario texts (YAML), loaded after the files.
    pub scenario_texts: Vec<String>,
    /// Settings applied after the scenarios' own.
    pub settings: SettingsPatch,
    /// Also append the request log as JSON lines to this file.
    pub log_file: Option<PathBuf>,
    /// Where to write the kubeconfig (default: a temporary file removed when the `Sim` drops).
    pub kubeconfig_out: Option<PathBuf>,
    /// RBAC manifests (files or directories, see [`rbac::load`]); when any are given (here or
    /// in `rbac_texts`), RBAC is enforced.
    pub rbac_files: Vec<PathBuf>,
    /// RBAC manifests as YAML text, loaded after the files.
    pub rbac_texts: Vec<String>,
    /// Serve plain HTTP instead of HTTPS (for clients that cannot do TLS; a request without
    /// credentials is then the admin, as on the apiserver's old insecure port).
    pub plain_http: bool,
    /// Generate the scenario for this Harvester release (`1.4` … `1.8`): the loaded objects
    /// are rewritten into its shapes ([`scenarios::for_release`]) and its controllers run.
    pub release: Option<String>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            scenario_files: Vec::new(),
            scenario_texts: Vec::new(),
            settings: SettingsPatch::default(),
            log_file: None,
            kubeconfig_out: None,
            rbac_files: Vec::new(),
            rbac_texts: Vec::new(),
            plain_http: false,
            release: None,
        }
    }
}

impl SimConfig {
    /// Adds a scenario file.
    pub fn scenario_file(mut self, p: impl Into<PathBuf>) -> Self {
        self.scenario_files.push(p.into());
        self
    }

    /// Adds scenario YAML text.
    pub fn scenario_text(mut self, t: impl Into<String>) -> Self {
        self.scenario_texts.push(t.into());
        self
    }

    /// Adds RBAC manifests (a file or a directory) and turns RBAC enforcement on.
    pub fn rbac_file(mut self, p: impl Into<PathBuf>) -> Self {
        self.rbac_files.push(p.into());
        self
    }

    /// Adds RBAC manifests as YAML text and turns RBAC enforcement on.
    pub fn rbac_text(mut self, t: impl Into<String>) -> Self {
        self.rbac_texts.push(t.into());
        self
    }

    /// Serves plain HTTP instead of HTTPS.
    pub fn plain_http(mut self) -> Self {
        self.plain_http = true;
        self
    }

    /// Whether RBAC is enforced.
    pub fn rbac_enforced(&self) -> bool {
        !self.rbac_files.is_empty() || !self.rbac_texts.is_empty()
    }

    /// Generates the scenario for a Harvester release (see [`SimConfig::release`]).
    pub fn release(mut self, r: impl Into<String>) -> Self {
        self.release = Some(r.into());
        self
    }

    /// Sets the settings overrides.
    pub fn settings(mut self, s: SettingsPatch) -> Self {
        self.settings = s;
        self
    }
}

/// The path of a scenario shipped with this crate (`harvester-sim/scenarios/NAME`).
pub fn shipped_scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name)
}

/// A running simulator; it stops when dropped.
pub struct Sim {
    state: Arc<exchange::State>,
    addr: SocketAddr,
    pki: Option<Arc<tls::Pki>>,
    kubeconfig: PathBuf,
    remove_kubeconfig: bool,
    admin_kubeconfig: String,
    shutdown: tokio_watch::Sender<bool>,
    node_down_looks: Arc<std::sync::atomic::AtomicU64>,
}

impl Sim {
    /// Loads the scenarios, binds, writes the kubeconfig and starts serving on the current
    /// tokio runtime.
    pub async fn start(cfg: SimConfig) -> anyhow::Result<Sim> {
        let mut sc = Scenario::default();
        for f in &cfg.scenario_files {
            sc.merge(Scenario::load(f)?);
        }
        for (i, t) in cfg.scenario_texts.iter().enumerate() {
            sc.merge(Scenario::parse(t, &format!("scenario text {}", i + 1))?);
        }
        if let Some(r) = &cfg.release {
            let p = profiles::profile(r).ok_or_else(|| {
                anyhow!(
                    "unknown Harvester release {r:?} (known: {})",
                    profiles::known_names()
                )
            })?;
            scenarios::for_release(&mut sc, p);
        }
        let mut settings = Settings::default();
        settings.apply(&sc.settings);
        settings.apply(&cfg.settings);
        let log = Arc::new(match &cfg.log_file {
            Some(p) => RequestLog::with_file(p)?,
            None => RequestLog::default(),
        });
        let store = Store::new(settings, log.clone(), controllers::ALL);
        store
            .load_all(sc.objects)
            .map_err(|e| anyhow!("loading scenario objects: {e}"))?;
        let mut policy = Vec::new();
        for f in &cfg.rbac_files {
            policy.extend(rbac::load(f)?);
        }
        for (i, t) in cfg.rbac_texts.iter().enumerate() {
            policy.extend(rbac::parse(t, &format!("RBAC text {}", i + 1))?);
        }
        if cfg.rbac_enforced() && policy.is_empty() {
            return Err(anyhow!(
                "RBAC manifests were given but hold no ClusterRole, Role, binding or ServiceAccount"
            ));
        }
        store
            .load_all(policy)
            .map_err(|e| anyhow!("loading RBAC objects: {e}"))?;
        store.reconcile_all();
        store.compact();
        let listener = TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.listen))?;
        let addr = listener.local_addr().context("listener has no address")?;
        let (shutdown, shutdown_rx) = tokio_watch::channel(false);
        let node_down_looks = Arc::new(std::sync::atomic::AtomicU64::new(0));
        tokio::spawn(controllers::node_down::run(
            store.clone(),
            shutdown_rx.clone(),
            node_down_looks.clone(),
        ));
        let pki = if cfg.plain_http {
            None
        } else {
            Some(Arc::new(tls::Pki::generate()?))
        };
        let tls = pki.as_ref().map(|p| p.server_config()).transpose()?;
        let state = Arc::new(exchange::State {
            store,
            log,
            faults: Arc::new(Faults::default()),
            addr,
            shutdown: shutdown_rx,
            rbac: cfg.rbac_enforced(),
            tokens: Arc::new(tokens::Tokens::default()),
            tls,
        });
        let (kubeconfig, remove_kubeconfig) = match &cfg.kubeconfig_out {
            Some(p) => (p.clone(), false),
            None => (
                std::env::temp_dir()
                    .join(format!("harvester-sim-{}.kubeconfig", uuid::Uuid::new_v4())),
                true,
            ),
        };
        let endpoint = match &pki {
            Some(p) => kubeconfig::Endpoint::Https(addr, p),
            None => kubeconfig::Endpoint::Http(addr),
        };
        let admin_kubeconfig = kubeconfig::render(endpoint)?;
        kubeconfig::write_text(&admin_kubeconfig, &kubeconfig)?;
        tokio::spawn(server::serve(listener, state.clone()));
        controllers::spawn_tasks(state.store.clone(), state.shutdown.clone());
        Ok(Sim {
            state,
            addr,
            pki,
            admin_kubeconfig,
            kubeconfig,
            remove_kubeconfig,
            shutdown,
            node_down_looks,
        })
    }

    /// Waits until the node-down controller has taken `n` more looks at the cluster (each a
    /// full read and decision, switched on or not): after a change, two looks prove it saw
    /// the change. Gives up after 30 s (a stuck runtime) and says so.
    pub async fn wait_node_down_looks(&self, n: u64) {
        use std::sync::atomic::Ordering;
        let target = self.node_down_looks.load(Ordering::SeqCst) + n;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.node_down_looks.load(Ordering::SeqCst) < target {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the node-down controller took no look in 30 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://ADDR` (`http://ADDR` with [`SimConfig::plain_http`]).
    pub fn url(&self) -> String {
        match self.pki {
            Some(_) => format!("https://{}", self.addr),
            None => format!("http://{}", self.addr),
        }
    }

    /// The CA that signed the serving certificate, PEM (`None` over plain HTTP).
    pub fn ca_pem(&self) -> Option<String> {
        self.pki.as_ref().map(|p| p.ca_pem())
    }

    /// A client certificate for `user` in `groups` (at most two), signed by the client CA
    /// (`None` over plain HTTP).
    pub fn client_cert(
        &self,
        user: &str,
        groups: &[String],
    ) -> Option<anyhow::Result<tls::ClientCert>> {
        self.pki.as_ref().map(|p| p.client_cert(user, groups))
    }

    fn endpoint(&self) -> kubeconfig::Endpoint<'_> {
        match &self.pki {
            Some(p) => kubeconfig::Endpoint::Https(self.addr, p),
            None => kubeconfig::Endpoint::Http(self.addr),
        }
    }

    /// The kubeconfig file pointing at this simulator (the admin's: a client certificate
    /// in `system:masters` over HTTPS, a token over plain HTTP).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The admin kubeconfig text.
    pub fn kubeconfig_yaml(&self) -> String {
        self.admin_kubeconfig.clone()
    }

    /// Writes a kubeconfig that authenticates as `who` (for example
    /// `Identity::service_account("harvester-system", "vmrecover")`, by token and CA; a user
    /// by client certificate) to `path`. Without RBAC enforcement every identity may do
    /// everything.
    pub fn write_kubeconfig_as(&self, who: &Identity, path: &Path) -> anyhow::Result<()> {
        kubeconfig::write_as(self.endpoint(), who, path)
    }

    /// Writes a kubeconfig that authenticates with a bearer token (e.g. one a TokenRequest
    /// returned) and trusts the simulator's CA.
    pub fn write_token_kubeconfig(&self, token: &str, path: &Path) -> anyhow::Result<()> {
        kubeconfig::write_text(&kubeconfig::render_token(self.endpoint(), token), path)
    }

    /// Who a bearer token authenticates as (a kubeconfig token of this simulator or one it
    /// issued through TokenRequest, with its `extra`), or `None`.
    pub fn authenticate_token(&self, token: &str) -> Option<Identity> {
        crate::rbac::authenticate(
            &self.state.store,
            &self.state.tokens,
            &format!("Bearer {token}"),
        )
    }

    /// Whether requests are authenticated and authorized against the RBAC objects.
    pub fn rbac_enforced(&self) -> bool {
        self.state.rbac
    }

    /// The store (direct access for set-up and inspection).
    pub fn store(&self) -> &Arc<Store> {
        &self.state.store
    }

    /// Every logged request (including internal controller writes, marked `internal`).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state.log.all()
    }

    /// Client requests that change state (POST/PUT/PATCH/DELETE outside `/_sim`, not internal).
    pub fn mutating_requests(&self) -> Vec<RequestRecord> {
        self.requests()
            .into_iter()
            .filter(RequestRecord::is_mutating)
            .collect()
    }

    /// Clears the request log.
    pub fn clear_requests(&self) {
        self.state.log.clear()
    }

    /// Adds a fault rule.
    pub fn add_fault(&self, r: FaultRule) {
        self.state.faults.add(r)
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.state.faults.clear()
    }

    /// The fault rules with their counters.
    pub fn faults(&self) -> Vec<FaultRule> {
        self.state.faults.list()
    }

    /// Current settings.
    pub fn settings(&self) -> Settings {
        self.state.store.settings()
    }

    /// Changes settings; the simulated controllers react at once.
    pub fn update_settings(&self, p: &SettingsPatch) -> Settings {
        self.state.store.update_settings(p)
    }

    /// Marks a node down (its kubelet no longer confirms pod deletions) or up again.
    pub fn set_node_down(&self, node: &str, down: bool) {
        let mut nodes = self.settings().down_nodes;
        if down {
            nodes.insert(node.to_string());
        } else {
            nodes.remove(node);
        }
        self.update_settings(&SettingsPatch {
            down_nodes: Some(nodes),
            ..SettingsPatch::default()
        });
    }

    /// Switches the simulated virt-controller on or off.
    pub fn set_virt_controller(&self, on: bool) {
        self.update_settings(&SettingsPatch {
            virt_controller: Some(on),
            ..SettingsPatch::default()
        });
    }

    /// Switches the start of new VMIs (launcher pod, scheduling, kubelet, virt-handler) on
    /// or off.
    pub fn set_vm_starts(&self, on: bool) {
        self.update_settings(&SettingsPatch {
            vm_starts: Some(on),
            ..SettingsPatch::default()
        });
    }

    /// Switches Harvester's VM controller (its PVC clean-up) on or off.
    pub fn set_harvester_controller(&self, on: bool) {
        self.update_settings(&SettingsPatch {
            harvester_controller: Some(on),
            ..SettingsPatch::default()
        });
    }

    /// Makes the controllers asynchronous, each in its own task looking every `delay` (zero:
    /// back to synchronous).
    pub fn set_controller_delay(&self, delay: std::time::Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.update_settings(&SettingsPatch {
            controller_delay_ms: Some(ms),
            ..SettingsPatch::default()
        });
    }

    /// Whether the controllers have nothing left to do (see [`Store::controllers_settled`]).
    pub fn controllers_settled(&self) -> bool {
        self.state.store.controllers_settled()
    }

    /// Waits until the controllers have settled (true), or `timeout` passed (false). Compare
    /// end states only after this when the controllers are asynchronous.
    pub async fn wait_controllers_settled(&self, timeout: std::time::Duration) -> bool {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            if self.controllers_settled() {
                return true;
            }
            if tokio::time::Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Switches an admission webhook (by name, e.g. `virtualmachine-validator.kubevirt.io`)
    /// or every webhook behind a Service (`virt-api`, `harvester-webhook`) up, down or to
    /// denying; returns the webhooks switched. The simulated controllers retry what the
    /// webhooks refused them once the state changes. See [`admission`].
    pub fn set_webhook(&self, name: &str, state: WebhookState) -> Result<Vec<String>, String> {
        let names = admission::resolve(name)?;
        let mut webhooks = std::collections::BTreeMap::new();
        webhooks.insert(name.to_string(), state);
        self.update_settings(&SettingsPatch {
            webhooks: Some(webhooks),
            ..SettingsPatch::default()
        });
        Ok(names)
    }

    /// The webhooks of the simulated release, in call order, with their state (as
    /// `GET /_sim/webhooks` answers).
    pub fn webhooks(&self) -> Vec<Value> {
        admission::list(&self.settings())
    }

    fn res(api_version: &str, kind: &str) -> Option<resources::ResIdx> {
        resources::find_kind(api_version, kind)
    }

    /// Reads one object (`None` when absent or the kind is not served).
    pub fn get(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let res = Self::res(api_version, kind)?;
        self.state.store.get(res, ns, name).ok()
    }

    /// Every object of a kind.
    pub fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        Self::res(api_version, kind)
            .map(|r| self.state.store.all(r))
            .unwrap_or_default()
    }

    /// Stores an object as written (bypassing create/update/delete semantics, not validation:
    /// an object the apiserver would refuse to store is a 422 here too); the simulated
    /// controllers then react to it.
    pub fn put(&self, obj: Value) -> Result<Value, ApiError> {
        self.state.store.put(obj)
    }

    /// Removes an object at once, ignoring finalizers. Returns whether it existed.
    pub fn remove(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> bool {
        Self::res(api_version, kind).is_some_and(|r| self.state.store.remove(r, ns, name))
    }

    /// Forgets the watch history (watches from older resourceVersions get 410 Gone).
    pub fn compact(&self) {
        self.state.store.compact()
    }

    /// Stops serving (also done on drop).
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.shutdown();
        if self.remove_kubeconfig {
            let _ = std::fs::remove_file(&self.kubeconfig);
            let _ = std::fs::remove_dir_all(kubectl_cache_dir(&self.kubeconfig));
        }
    }
}

/// Where kubectl should keep its discovery cache when it talks to the simulator through
/// `kubeconfig` (`kubectl --cache-dir`). kubectl keys its cache by the server's host and
/// port only, and simulators listen on ports the system hands out again: without a cache of
/// its own a kubectl can believe what an earlier simulator on the same port served (a kind
/// this one's Kubernetes version does not serve, say).
pub fn kubectl_cache_dir(kubeconfig: &Path) -> PathBuf {
    let mut dir = kubeconfig.as_os_str().to_owned();
    dir.push(".kubectl-cache");
    PathBuf::from(dir)
}

/// A kubectl (`bin`: `"kubectl"` or a versioned binary) that talks to the simulator behind
/// `kubeconfig` with a discovery cache of that simulator's own ([`kubectl_cache_dir`]); the
/// caller adds the arguments (`tokio::process::Command::from` makes it async).
pub fn kubectl(bin: impl AsRef<std::ffi::OsStr>, kubeconfig: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("--cache-dir")
        .arg(kubectl_cache_dir(kubeconfig))
        .arg("--kubeconfig")
        .arg(kubeconfig);
    cmd
}
