//! Policy: the knobs the planner obeys.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cluster::NamespacedName;

/// Everything `plan()` needs to know besides the facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// A deleting VMI is stuck once this long has passed since the later of its
    /// deletionTimestamp and this boot.
    #[serde(with = "crate::serde_duration")]
    pub stuck_after: Duration,
    /// How long controllers get to clear their own finalizers first.
    #[serde(with = "crate::serde_duration")]
    pub controller_grace: Duration,
    /// At most this many VMs acted on in one run; more is refused whole.
    pub max_vms: usize,
    /// Finalizers the operator named for removal besides the known ones.
    pub also_finalizers: Vec<String>,
    /// Only these VMs, when not empty.
    pub only: Vec<NamespacedName>,
    /// Whether orphan launcher/qemu processes are to be killed.
    pub kill_orphans: bool,
    /// Whether the pause switches stop this plan (everywhere but `run --ignore-pause`, a
    /// person's override; `Policy::default()` is off for the planner's tests).
    #[serde(default)]
    pub honour_pause: bool,
    /// Whether a person confirmed acting while a Harvester Upgrade is in progress
    /// (`run --during-upgrade`); the agent never does.
    #[serde(default)]
    pub during_upgrade: bool,
    /// A fenced-node run (`run --fenced-node`): the node is declared powered off by a
    /// person; its own evidence is not read and the fence is checked instead.
    #[serde(default)]
    pub fenced: bool,
    /// A fenced-node run: how long the node's signs of life are watched for a change, and
    /// how recent (by the API server's clock) a sign must be to count as one: one maximum
    /// virt-handler heartbeat interval by default.
    #[serde(default = "default_fence_watch", with = "crate::serde_duration")]
    pub fence_watch: Duration,
}

/// virt-handler stamps `kubevirt.io/heartbeat` with `wait.JitterUntil(interval 1 min, jitter
/// 1.2, sliding)`: 1 min to 2 min 12 s apart, plus the stamp's own run time (kubevirt
/// `pkg/virt-handler/heartbeat/heartbeat.go`, read at commit 030d740).
pub const DEFAULT_FENCE_WATCH: Duration = Duration::from_secs(132);

fn default_fence_watch() -> Duration {
    DEFAULT_FENCE_WATCH
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            stuck_after: Duration::from_secs(300),
            controller_grace: Duration::from_secs(120),
            max_vms: 50,
            also_finalizers: Vec::new(),
            only: Vec::new(),
            kill_orphans: false,
            honour_pause: false,
            during_upgrade: false,
            fenced: false,
            fence_watch: DEFAULT_FENCE_WATCH,
        }
    }
}
