//! The admission webhooks a Harvester cluster registers, as data: names, configurations,
//! the Services behind them, failure policies and rules, exactly as the real
//! `ValidatingWebhookConfiguration`s and `MutatingWebhookConfiguration`s declare them. Only
//! the rules on resources the simulator serves are listed; which set a release has is a row
//! of [`crate::profiles`].
//!
//! Sources (read at the tags named):
//! - KubeVirt: `pkg/virt-operator/resource/generate/components/webhooks.go`
//!   (`NewVirtAPIMutatingWebhookConfiguration`, `NewVirtAPIValidatingWebhookConfiguration`)
//!   at v1.3.0, v1.4.0, v1.5.0, v1.6.0 and v1.7.0: configurations `virt-api-mutator` and
//!   `virt-api-validator`, Service `virt-api` in KubeVirt's namespace (`harvester-system` on
//!   Harvester), `timeoutSeconds` 10, failurePolicy Fail except the launcher eviction
//!   interceptor (Ignore up to v1.4.0; Fail with the match condition
//!   `object.metadata.name.startsWith("virt-launcher")` from v1.5.0; v1.7.0 adds the
//!   `hotplug-pod-eviction-interceptor` for `hp-volume-` pods).
//! - Harvester: `pkg/webhook/server/server.go` (configurations `harvester-validator` with the
//!   one webhook `validator.harvesterhci.io`, failurePolicy Fail, and `harvester-mutator` with
//!   `mutator.harvesterhci.io`, failurePolicy Ignore; Service `harvester-webhook` port 443,
//!   paths `/v1/webhook/validation` and `/v1/webhook/mutation`; no timeout set, so the
//!   apiserver's default of 10 s) and the `Resource()` of every admitter under
//!   `pkg/webhook/resources/` at v1.4.0 … v1.8.0: the validator's rules on served resources
//!   are `virtualmachines` and `virtualmachines/status` (CREATE, UPDATE), `nodes` (UPDATE),
//!   `namespaces` (UPDATE), `persistentvolumeclaims` (UPDATE, DELETE; also CREATE from
//!   v1.7.0); the mutator's are `pods` (CREATE), `virtualmachines` (CREATE, UPDATE),
//!   `persistentvolumeclaims` (CREATE, from v1.5.0) and `virtualmachineinstances` (CREATE,
//!   from v1.6.0).
//!
//! What a webhook that is up checks is modelled only where [`crate::admission::harvester_vm`]
//! says (Harvester's occupied-PVC check, v1.4.0 … v1.6.1).
//!
//! A rule names a resource or `resource/subresource` and matches nothing else: a rule on
//! `virtualmachines` sees every UPDATE of a VM — a metadata-only finalizer patch on a
//! deleting VM included, since rules cannot see which fields changed — but not one of
//! `virtualmachines/status`.

use serde::Serialize;

/// An admission operation (`admissionregistration/v1` `OperationType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    /// A create (POST; also a server-side apply that creates, and POST to `pods/eviction`).
    Create,
    /// An update (PUT or PATCH, of the object or a subresource).
    Update,
    /// A delete.
    Delete,
}

/// Whether a webhook mutates (called first, one after another) or validates (called last,
/// all at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// A `MutatingWebhookConfiguration` webhook.
    Mutating,
    /// A `ValidatingWebhookConfiguration` webhook.
    Validating,
}

/// What the apiserver does when it cannot call the webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FailurePolicy {
    /// The request fails with 500 InternalError.
    Fail,
    /// The request goes on as if the webhook had allowed it.
    Ignore,
}

/// A `RuleWithOperations` (API versions are always the served one; scope is `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// Operations it matches.
    pub operations: &'static [Operation],
    /// API group ("" for core).
    pub api_group: &'static str,
    /// Resources (`virtualmachines`, `virtualmachines/status`, `pods/eviction`).
    pub resources: &'static [&'static str],
}

/// The Service a webhook is reached through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// Namespace.
    pub namespace: &'static str,
    /// Name.
    pub name: &'static str,
    /// The ClusterIP the apiserver dials (illustrative: Harvester's service CIDR is
    /// 10.53.0.0/16).
    pub cluster_ip: &'static str,
}

/// One webhook of a webhook configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// The webhook's name (`virtualmachine-validator.kubevirt.io`).
    pub name: &'static str,
    /// The configuration object it belongs to (`virt-api-validator`).
    pub configuration: &'static str,
    /// Mutating or validating.
    pub phase: Phase,
    /// The Service behind it.
    pub service: Service,
    /// The URL path on the Service.
    pub path: &'static str,
    /// `failurePolicy`.
    pub failure_policy: FailurePolicy,
    /// `timeoutSeconds`.
    pub timeout_seconds: u32,
    /// `rules`.
    pub rules: &'static [Rule],
    /// A `matchConditions` expression of the form `object.metadata.name.startsWith("P")`: P.
    pub name_prefix: Option<&'static str>,
}

impl Webhook {
    /// The URL the apiserver posts the AdmissionReview to (client-go adds the timeout).
    pub fn url(&self) -> String {
        format!(
            "https://{}.{}.svc:443{}?timeout={}s",
            self.service.name, self.service.namespace, self.path, self.timeout_seconds
        )
    }
}

/// KubeVirt's namespace on Harvester.
pub const KUBEVIRT_NAMESPACE: &str = "harvester-system";

/// virt-api's Service.
pub const VIRT_API: Service = Service {
    namespace: KUBEVIRT_NAMESPACE,
    name: "virt-api",
    cluster_ip: "10.53.121.37",
};

/// Harvester's webhook Service.
pub const HARVESTER_WEBHOOK: Service = Service {
    namespace: "harvester-system",
    name: "harvester-webhook",
    cluster_ip: "10.53.88.209",
};

const CREATE_UPDATE: &[Operation] = &[Operation::Create, Operation::Update];
const CREATE: &[Operation] = &[Operation::Create];
const UPDATE: &[Operation] = &[Operation::Update];
/// `OperationAll` (`*`): every operation.
const ALL_OPERATIONS: &[Operation] = &[Operation::Create, Operation::Update, Operation::Delete];

const KUBEVIRT: &str = "kubevirt.io";

/// `virtualmachines-mutator.kubevirt.io` (every KubeVirt release).
pub const VM_MUTATOR: Webhook = Webhook {
    name: "virtualmachines-mutator.kubevirt.io",
    configuration: "virt-api-mutator",
    phase: Phase::Mutating,
    service: VIRT_API,
    path: "/virtualmachines-mutate",
    failure_policy: FailurePolicy::Fail,
    timeout_seconds: 10,
    rules: &[Rule {
        operations: CREATE_UPDATE,
        api_group: KUBEVIRT,
        resources: &["virtualmachines"],
    }],
    name_prefix: None,
};

/// `virtualmachineinstances-mutator.kubevirt.io` (every KubeVirt release).
pub const VMI_MUTATOR: Webhook = Webhook {
    name: "virtualmachineinstances-mutator.kubevirt.io",
    configuration: "virt-api-mutator",
    phase: Phase::Mutating,
    service: VIRT_API,
    path: "/virtualmachineinstances-mutate",
    failure_policy: FailurePolicy::Fail,
    timeout_seconds: 10,
    rules: &[Rule {
        operations: CREATE_UPDATE,
        api_group: KUBEVIRT,
        resources: &["virtualmachineinstances"],
    }],
    name_prefix: None,
};

/// `virt-launcher-eviction-interceptor.kubevirt.io`, KubeVirt 1.3 and 1.4: failurePolicy
/// Ignore ("We don't want to block evictions in the cluster in a case where this webhook is
/// down"), every pod.
pub const LAUNCHER_EVICTION_IGNORE: Webhook = Webhook {
    name: "virt-launcher-eviction-interceptor.kubevirt.io",
    configuration: "virt-api-validator",
    phase: Phase::Validating,
    service: VIRT_API,
    path: "/launcher-eviction-validate",
    failure_policy: FailurePolicy::Ignore,
    timeout_seconds: 10,
    rules: &[Rule {
        operations: ALL_OPERATIONS,
        api_group: "",
        resources: &["pods/eviction"],
    }],
    name_prefix: None,
};

/// `virt-launcher-eviction-interceptor.kubevirt.io`, KubeVirt ≥ 1.5: failurePolicy Fail, only
/// for pods named `virt-launcher…` (match condition `only-vms`).
pub const LAUNCHER_EVICTION_FAIL: Webhook = Webhook {
    failure_policy: FailurePolicy::Fail,
    name_prefix: Some("virt-launcher"),
    ..LAUNCHER_EVICTION_IGNORE
};

/// `virt-launcher-eviction-interceptor.kubevirt.io`, KubeVirt ≥ 1.7: as from 1.5, at the
/// path `/pod-eviction-validate` it shares with the hotplug interceptor.
pub const LAUNCHER_EVICTION_1_7: Webhook = Webhook {
    path: "/pod-eviction-validate",
    ..LAUNCHER_EVICTION_FAIL
};

/// `hotplug-pod-eviction-interceptor.kubevirt.io`, KubeVirt ≥ 1.7: failurePolicy Fail, only
/// for pods named `hp-volume-…` (match condition `only-hotplug-pods`).
pub const HOTPLUG_EVICTION: Webhook = Webhook {
    name: "hotplug-pod-eviction-interceptor.kubevirt.io",
    name_prefix: Some("hp-volume-"),
    ..LAUNCHER_EVICTION_1_7
};

/// `virtualmachineinstances-create-validator.kubevirt.io` (every KubeVirt release).
pub const VMI_CREATE_VALIDATOR: Webhook = Webhook {
    name: "virtualmachineinstances-create-validator.kubevirt.io",
    configuration: "virt-api-validator",
    phase: Phase::Validating,
    service: VIRT_API,
    path: "/virtualmachineinstances-validate-create",
    failure_policy: FailurePolicy::Fail,
    timeout_seconds: 10,
    rules: &[Rule {
        operations: CREATE,
        api_group: KUBEVIRT,
        resources: &["virtualmachineinstances"],
    }],
    name_prefix: None,
};

/// `virtualmachineinstances-update-validator.kubevirt.io` (every KubeVirt release).
pub const VMI_UPDATE_VALIDATOR: Webhook = Webhook {
    name: "virtualmachineinstances-update-validator.kubevirt.io",
    path: "/virtualmachineinstances-validate-update",
    rules: &[Rule {
        operations: UPDATE,
        api_group: KUBEVIRT,
        resources: &["virtualmachineinstances"],
    }],
    ..VMI_CREATE_VALIDATOR
};

/// `virtualmachine-validator.kubevirt.io` (every KubeVirt release).
pub const VM_VALIDATOR: Webhook = Webhook {
    name: "virtualmachine-validator.kubevirt.io",
    path: "/virtualmachines-validate",
    rules: &[Rule {
        operations: CREATE_UPDATE,
        api_group: KUBEVIRT,
        resources: &["virtualmachines"],
    }],
    ..VMI_CREATE_VALIDATOR
};

/// `kubevirt-crd-status-validator.kubevirt.io` (every KubeVirt release; of its resources
/// the simulator serves `virtualmachines/status`).
pub const STATUS_VALIDATOR: Webhook = Webhook {
    name: "kubevirt-crd-status-validator.kubevirt.io",
    path: "/status-validate",
    rules: &[Rule {
        operations: CREATE_UPDATE,
        api_group: KUBEVIRT,
        resources: &["virtualmachines/status"],
    }],
    ..VMI_CREATE_VALIDATOR
};

const HARVESTER_VALIDATOR_BASE: Webhook = Webhook {
    name: "validator.harvesterhci.io",
    configuration: "harvester-validator",
    phase: Phase::Validating,
    service: HARVESTER_WEBHOOK,
    path: "/v1/webhook/validation",
    failure_policy: FailurePolicy::Fail,
    timeout_seconds: 10,
    rules: &[],
    name_prefix: None,
};

/// `validator.harvesterhci.io`, Harvester 1.4–1.6.
pub const HARVESTER_VALIDATOR_1_4: Webhook = Webhook {
    rules: &[
        Rule {
            operations: UPDATE,
            api_group: "",
            resources: &["nodes"],
        },
        Rule {
            operations: &[Operation::Delete, Operation::Update],
            api_group: "",
            resources: &["persistentvolumeclaims"],
        },
        Rule {
            operations: CREATE_UPDATE,
            api_group: KUBEVIRT,
            resources: &["virtualmachines", "virtualmachines/status"],
        },
        Rule {
            operations: UPDATE,
            api_group: "",
            resources: &["namespaces"],
        },
    ],
    ..HARVESTER_VALIDATOR_BASE
};

/// `validator.harvesterhci.io`, Harvester ≥ 1.7 (PVC creates are validated too).
pub const HARVESTER_VALIDATOR_1_7: Webhook = Webhook {
    rules: &[
        Rule {
            operations: UPDATE,
            api_group: "",
            resources: &["nodes"],
        },
        Rule {
            operations: &[Operation::Delete, Operation::Update, Operation::Create],
            api_group: "",
            resources: &["persistentvolumeclaims"],
        },
        Rule {
            operations: CREATE_UPDATE,
            api_group: KUBEVIRT,
            resources: &["virtualmachines", "virtualmachines/status"],
        },
        Rule {
            operations: UPDATE,
            api_group: "",
            resources: &["namespaces"],
        },
    ],
    ..HARVESTER_VALIDATOR_BASE
};

const HARVESTER_MUTATOR_BASE: Webhook = Webhook {
    name: "mutator.harvesterhci.io",
    configuration: "harvester-mutator",
    phase: Phase::Mutating,
    service: HARVESTER_WEBHOOK,
    path: "/v1/webhook/mutation",
    failure_policy: FailurePolicy::Ignore,
    timeout_seconds: 10,
    rules: &[],
    name_prefix: None,
};

/// `mutator.harvesterhci.io`, Harvester 1.4.
pub const HARVESTER_MUTATOR_1_4: Webhook = Webhook {
    rules: &[
        Rule {
            operations: CREATE,
            api_group: "",
            resources: &["pods"],
        },
        Rule {
            operations: CREATE_UPDATE,
            api_group: KUBEVIRT,
            resources: &["virtualmachines"],
        },
    ],
    ..HARVESTER_MUTATOR_BASE
};

/// `mutator.harvesterhci.io`, Harvester 1.5 (PVC creates too).
pub const HARVESTER_MUTATOR_1_5: Webhook = Webhook {
    rules: &[
        Rule {
            operations: CREATE,
            api_group: "",
            resources: &["persistentvolumeclaims"],
        },
        Rule {
            operations: CREATE,
            api_group: "",
            resources: &["pods"],
        },
        Rule {
            operations: CREATE_UPDATE,
            api_group: KUBEVIRT,
            resources: &["virtualmachines"],
        },
    ],
    ..HARVESTER_MUTATOR_BASE
};

/// `mutator.harvesterhci.io`, Harvester ≥ 1.6 (VMI creates too).
pub const HARVESTER_MUTATOR_1_6: Webhook = Webhook {
    rules: &[
        Rule {
            operations: CREATE,
            api_group: "",
            resources: &["persistentvolumeclaims"],
        },
        Rule {
            operations: CREATE,
            api_group: "",
            resources: &["pods"],
        },
        Rule {
            operations: CREATE_UPDATE,
            api_group: KUBEVIRT,
            resources: &["virtualmachines"],
        },
        Rule {
            operations: CREATE,
            api_group: KUBEVIRT,
            resources: &["virtualmachineinstances"],
        },
    ],
    ..HARVESTER_MUTATOR_BASE
};

/// Harvester 1.4 (KubeVirt 1.3).
pub const HARVESTER_1_4: &[Webhook] = &[
    HARVESTER_MUTATOR_1_4,
    VM_MUTATOR,
    VMI_MUTATOR,
    HARVESTER_VALIDATOR_1_4,
    LAUNCHER_EVICTION_IGNORE,
    VMI_CREATE_VALIDATOR,
    VMI_UPDATE_VALIDATOR,
    VM_VALIDATOR,
    STATUS_VALIDATOR,
];

/// Harvester 1.5 (KubeVirt 1.4).
pub const HARVESTER_1_5: &[Webhook] = &[
    HARVESTER_MUTATOR_1_5,
    VM_MUTATOR,
    VMI_MUTATOR,
    HARVESTER_VALIDATOR_1_4,
    LAUNCHER_EVICTION_IGNORE,
    VMI_CREATE_VALIDATOR,
    VMI_UPDATE_VALIDATOR,
    VM_VALIDATOR,
    STATUS_VALIDATOR,
];

/// Harvester 1.6 (KubeVirt 1.5).
pub const HARVESTER_1_6: &[Webhook] = &[
    HARVESTER_MUTATOR_1_6,
    VM_MUTATOR,
    VMI_MUTATOR,
    HARVESTER_VALIDATOR_1_4,
    LAUNCHER_EVICTION_FAIL,
    VMI_CREATE_VALIDATOR,
    VMI_UPDATE_VALIDATOR,
    VM_VALIDATOR,
    STATUS_VALIDATOR,
];

/// Harvester 1.7 (KubeVirt 1.6).
pub const HARVESTER_1_7: &[Webhook] = &[
    HARVESTER_MUTATOR_1_6,
    VM_MUTATOR,
    VMI_MUTATOR,
    HARVESTER_VALIDATOR_1_7,
    LAUNCHER_EVICTION_FAIL,
    VMI_CREATE_VALIDATOR,
    VMI_UPDATE_VALIDATOR,
    VM_VALIDATOR,
    STATUS_VALIDATOR,
];

/// Harvester 1.8 (KubeVirt 1.7).
pub const HARVESTER_1_8: &[Webhook] = &[
    HARVESTER_MUTATOR_1_6,
    VM_MUTATOR,
    VMI_MUTATOR,
    HARVESTER_VALIDATOR_1_7,
    LAUNCHER_EVICTION_1_7,
    HOTPLUG_EVICTION,
    VMI_CREATE_VALIDATOR,
    VMI_UPDATE_VALIDATOR,
    VM_VALIDATOR,
    STATUS_VALIDATOR,
];

/// The Services behind webhooks (a name that switches all of their webhooks at once).
pub const SERVICES: &[Service] = &[VIRT_API, HARVESTER_WEBHOOK];
