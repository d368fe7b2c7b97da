#![doc = include_str!("../README.md")]
//!
//! ## From Rust
//!
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
        controllers::spawn_timed(store.clone(), shutdown_rx.clone(), node_down_looks.clone());
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
