//! What the API server's refusal of a write means, told apart by the Status it builds
//! (k8s.io/apiserver v0.33.0), so a denial is never taken for a race:
//! - a failed JSON-patch `test`: `pkg/endpoints/handlers/patch.go` (`jsonPatcher`) answers
//!   `NewGenericServerResponse(422, ...)`, whose message is the generic "the server rejected
//!   our request due to an error in our request" (the `test` failure is in its causes): the
//!   object moved, re-read and re-decide; a 409 Conflict means the same;
//! - a ValidatingAdmissionPolicy denial: `pkg/admission/plugin/policy/validating/
//!   dispatcher.go` → `admission.NewForbidden`: `<resource> "<name>" is forbidden:
//!   ValidatingAdmissionPolicy '<policy>' [with binding '<binding>'] denied request:
//!   <message>`, 422 Invalid by default (or the validation's `reason`'s code);
//! - an admission webhook's denial (`pkg/admission/plugin/webhook/errors/statuserror.go`:
//!   `admission webhook "<name>" denied the request: <message>`, the webhook's code) or a
//!   webhook that cannot be called (500 `Internal error occurred: failed calling webhook
//!   "<name>": ...`, `pkg/util/webhook/error.go`);
//! - a validation error: any other 422 (`<Kind> "<name>" is invalid: <field errors>`).
//!
//! Every answer but a failed `test` and a conflict is final for the run: repeating the same
//! write would get the same answer.

/// The server's answer to a write that failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// 409, or a JSON-patch `test` that failed (the generic 422): the object moved.
    Moved,
    /// A ValidatingAdmissionPolicy refused the write.
    Policy {
        /// The policy's name.
        policy: String,
        /// Its message (what the policy's validation says).
        message: String,
    },
    /// An admission webhook refused the write.
    WebhookDenied {
        /// The webhook's name.
        webhook: String,
        /// Its message.
        message: String,
    },
    /// An admission webhook could not be called (its pods are down).
    WebhookUnavailable {
        /// The webhook's name.
        webhook: String,
        /// Why the call failed.
        detail: String,
    },
    /// The write is invalid for the server (a validation error).
    Invalid {
        /// The server's message.
        message: String,
    },
}

/// Harvester's VM mutator.
const HARVESTER_MUTATOR: &str = "mutator.harvesterhci.io";

/// What Harvester's VM mutator does to a deleting VM where it still acts on one (harvester
/// `pkg/webhook/resources/virtualmachine/mutator.go`; the early return for a deleting VM
/// first shipped in v1.4.3 (backport 169209852) and v1.5.1 (b34ccfc4b), from 8f106a4f6 in
/// v1.6.0).
const MUTATOR_ON_DELETING: &str = "Harvester v1.4.0-v1.4.2 and v1.5.0 run their VM mutator \
     on every change of a VM being deleted: it looks up the NetworkAttachmentDefinition of each \
     VM network, replaces spec.template.spec.affinity with the network affinity those imply and \
     adds a missing terminationGracePeriodSeconds; v1.4.3 and v1.5.1 no longer do";

/// The policy's message when a VM or VMI change touches more than the finalizers (the chart's
/// `admissionpolicy.yaml`).
const MORE_THAN_FINALIZERS: &str = "may only change metadata.finalizers";

/// The generic message of `NewGenericServerResponse(422, ...)` (k8s.io/apimachinery
/// `pkg/api/errors/errors.go`).
const GENERIC_422: &str = "the server rejected our request due to an error in our request";

/// What `err` means for a write; `None` when it is no refusal of the server's (unreachable,
/// 403 RBAC, 404, 5xx other than a webhook's): the caller's usual error handling applies.
pub fn classify(err: &kube::Error) -> Option<Refusal> {
    let kube::Error::Api(status) = err else {
        return None;
    };
    let msg = status.message.as_str();
    if let Some(r) = webhook(msg) {
        return Some(r);
    }
    if let Some(r) = policy(msg) {
        return Some(r);
    }
    match status.code {
        409 => Some(Refusal::Moved),
        422 if msg.starts_with(GENERIC_422) => Some(Refusal::Moved),
        422 => Some(Refusal::Invalid {
            message: msg.to_string(),
        }),
        _ => None,
    }
}

fn policy(msg: &str) -> Option<Refusal> {
    let (_, rest) = msg.split_once("ValidatingAdmissionPolicy '")?;
    let (policy, after) = rest.split_once('\'')?;
    let (_, message) = after.split_once("denied request:")?;
    Some(Refusal::Policy {
        policy: policy.to_string(),
        message: message.trim().to_string(),
    })
}

fn webhook(msg: &str) -> Option<Refusal> {
    let quoted = |rest: &str| -> Option<(String, String)> {
        let (name, after) = rest.split_once('"')?;
        Some((name.to_string(), after.to_string()))
    };
    if let Some(rest) = msg.strip_prefix("Internal error occurred: failed calling webhook \"") {
        let (webhook, after) = quoted(rest)?;
        let detail = after
            .trim_start_matches(':')
            .trim()
            .trim_start_matches("failed to call webhook:")
            .trim()
            .to_string();
        return Some(Refusal::WebhookUnavailable { webhook, detail });
    }
    let rest = msg.strip_prefix("admission webhook \"")?;
    let (webhook, after) = quoted(rest)?;
    let message = after.strip_prefix(" denied the request")?;
    let message = message.strip_prefix(": ").unwrap_or(message).trim();
    Some(Refusal::WebhookDenied {
        webhook,
        message: message.to_string(),
    })
}

impl Refusal {
    /// Whether the same write would get the same answer in this run (all but [`Refusal::Moved`]).
    pub fn is_final(&self) -> bool {
        !matches!(self, Refusal::Moved)
    }

    /// The failure reason for `what` (e.g. `virtualmachines default/vm-1`): the server's
    /// message and the next step.
    pub fn reason(&self, what: &str) -> String {
        match self {
            Refusal::Moved => format!("{what} changed since it was read"),
            Refusal::Policy { policy, message } if message.contains(MORE_THAN_FINALIZERS) => {
                format!(
                    "{what}: the API server's admission policy {policy} refused the change: \
                     {message}; nothing was changed and it is not retried in this run. vmrecover \
                     sends only the finalizers: a mutating admission webhook added the rest \
                     ({MUTATOR_ON_DELETING}); upgrade Harvester, or check the VM and clear its \
                     finalizer by hand (docs/runbook.md)"
                )
            }
            Refusal::Policy { policy, message } => format!(
                "{what}: the API server's admission policy {policy} refused the change: \
                 {message}; nothing was changed and it is not retried in this run (a finalizer \
                 named with --also-finalizer must also be in the chart's alsoFinalizers, the \
                 policy's params; docs/safety.md)"
            ),
            Refusal::WebhookUnavailable { webhook, detail } => format!(
                "{what}: admission webhook {webhook} is unavailable ({detail}); nothing was \
                 changed, a later pass or a rerun retries once it is back"
            ),
            Refusal::WebhookDenied { webhook, message } if webhook == HARVESTER_MUTATOR => {
                format!(
                    "{what}: admission webhook {webhook} denied the change: {message}; nothing \
                     was changed and it is not retried in this run ({MUTATOR_ON_DELETING}: \
                     recreate what it names, e.g. the VM network's NetworkAttachmentDefinition \
                     with its cluster network label, or upgrade Harvester to v1.4.3/v1.5.1 or \
                     later; a person's own finalizer patch meets the same mutator: \
                     docs/runbook.md)"
                )
            }
            Refusal::WebhookDenied { webhook, message } => format!(
                "{what}: admission webhook {webhook} denied the change: {message}; nothing was \
                 changed and it is not retried in this run (fix what the webhook names, or \
                 clear the finalizer by hand: docs/runbook.md)"
            ),
            Refusal::Invalid { message } => format!(
                "{what}: the API server refused the change as invalid: {message}; nothing was \
                 changed and it is not retried in this run (a bug of vmrecover's: please \
                 report it with this message)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, reason)
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn each_answer_is_told_apart() {
        let test_failed = api(
            422,
            "Invalid",
            "the server rejected our request due to an error in our request",
        );
        assert_eq!(classify(&test_failed), Some(Refusal::Moved));
        assert_eq!(
            classify(&api(409, "Conflict", "Operation cannot be fulfilled")),
            Some(Refusal::Moved)
        );
        let vap = api(
            422,
            "Invalid",
            "virtualmachines.kubevirt.io \"vm-1\" is forbidden: ValidatingAdmissionPolicy 'vmrecover-node-restriction' with binding 'vmrecover-node-restriction' denied request: vmrecover may only remove the finalizers it knows and the ones the operator named (alsoFinalizers), not: example.com/keep",
        );
        assert_eq!(
            classify(&vap),
            Some(Refusal::Policy {
                policy: "vmrecover-node-restriction".into(),
                message: "vmrecover may only remove the finalizers it knows and the ones the operator named (alsoFinalizers), not: example.com/keep".into(),
            })
        );
        let forbidden_reason = api(
            403,
            "Forbidden",
            "pods \"p\" is forbidden: ValidatingAdmissionPolicy 'p' denied request: no",
        );
        assert!(matches!(
            classify(&forbidden_reason),
            Some(Refusal::Policy { .. })
        ));
        let hook = api(400, "BadRequest", "admission webhook \"validator.harvesterhci.io\" denied the request: PVC x is used by other VM");
        assert_eq!(
            classify(&hook),
            Some(Refusal::WebhookDenied {
                webhook: "validator.harvesterhci.io".into(),
                message: "PVC x is used by other VM".into()
            })
        );
        let silent = api(
            400,
            "",
            "admission webhook \"x\" denied the request without explanation",
        );
        assert!(
            matches!(classify(&silent), Some(Refusal::WebhookDenied { message, .. }) if message == "without explanation")
        );
        let down = api(500, "InternalError", "Internal error occurred: failed calling webhook \"virtualmachines-mutator.kubevirt.io\": failed to call webhook: Post \"https://virt-api\": connection refused");
        assert!(matches!(
            classify(&down),
            Some(Refusal::WebhookUnavailable { .. })
        ));
        let invalid = api(422, "Invalid", "VirtualMachine.kubevirt.io \"vm-1\" is invalid: metadata.finalizers[0]: Invalid value: \"a b\": name part must consist of ...");
        assert!(matches!(classify(&invalid), Some(Refusal::Invalid { .. })));
        assert_eq!(classify(&api(403, "Forbidden", "rbac says no")), None);
        assert_eq!(classify(&api(500, "InternalError", "etcd")), None);
        for r in [
            classify(&vap),
            classify(&hook),
            classify(&down),
            classify(&invalid),
        ] {
            assert!(r.is_some_and(|r| r.is_final()));
        }
        let reason = classify(&vap)
            .map(|r| r.reason("virtualmachines default/vm-1"))
            .unwrap_or_default();
        assert!(
            reason.contains("refused the change: vmrecover may only remove")
                && reason.contains("not retried"),
            "{reason}"
        );
    }

    #[test]
    fn harvesters_vm_mutator_gets_its_own_next_step() {
        let nad = api(500, "InternalError", "admission webhook \"mutator.harvesterhci.io\" denied the request: network-attachment-definitions.k8s.cni.cncf.io \"vlan10\" not found");
        let r = classify(&nad).map(|r| r.reason("virtualmachines default/vm-1"));
        assert!(
            r.as_ref().is_some_and(|r| r.contains(
                "denied the change: network-attachment-definitions.k8s.cni.cncf.io \"vlan10\" not found; nothing was changed"
            ) && r.contains("NetworkAttachmentDefinition") && r.contains("v1.4.3")),
            "{r:?}"
        );
        let spec = api(422, "Invalid", "virtualmachines.kubevirt.io \"vm-1\" is forbidden: ValidatingAdmissionPolicy 'vmrecover-node-restriction' with binding 'vmrecover-node-restriction' denied request: vmrecover may only change metadata.finalizers of a VirtualMachine or VirtualMachineInstance (its spec, status, labels, annotations and owner references stay)");
        let r = classify(&spec).map(|r| r.reason("virtualmachines default/vm-1"));
        assert!(
            r.as_ref().is_some_and(
                |r| r.contains("a mutating admission webhook added the rest")
                    && !r.contains("alsoFinalizers")
            ),
            "{r:?}"
        );
    }
}
