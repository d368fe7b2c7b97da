//! Admission: the room where a write meets virt-api's and Harvester's webhooks, and the
//! cluster's ValidatingAdmissionPolicies ([`vap`]).
//!
//! Every create, update (PUT, PATCH, `/status`), delete and eviction — a client's or a
//! simulated controller's — passes the webhooks of the simulated release
//! ([`webhooks`], chosen by [`crate::profiles::ReleaseProfile::webhooks`]) whose rules match
//! it, in the apiserver's order: the mutating ones first (one after another, configurations
//! sorted by name), then, after the object has passed the apiserver's own validation, the
//! validating ones. Each webhook is switched at runtime ([`WebhookState`], through
//! [`crate::Sim::set_webhook`], `POST /_sim/webhooks` or the `webhooks` setting):
//!
//! - `up`: it allows the request (what the simulator knows of a webhook's own checks is
//!   elsewhere, e.g. the VMI status rule in the store).
//! - `down`: its pods are gone. With failurePolicy Fail the request fails with the
//!   apiserver's 500 (below); with Ignore it goes on.
//! - `deny`: it answers `allowed: false` with a message and a code.
//!
//! The answers, as k8s.io/apiserver v0.33.0 builds them:
//! - A call that fails: `pkg/admission/plugin/webhook/{validating,mutating}/dispatcher.go`
//!   wrap the client error as `ErrCallingWebhook{Reason: fmt.Errorf("failed to call webhook:
//!   %w", err)}` (`pkg/util/webhook/error.go`: `failed calling webhook %q: %v`) and, with
//!   failurePolicy Fail, return `apierrors.NewInternalError(err)` (k8s.io/apimachinery
//!   `pkg/api/errors/errors.go`): code 500, reason `InternalError`, message `Internal error
//!   occurred: <err>`, `details.causes[0].message` `<err>`. The client error of a Service with
//!   no pods is Go's `*url.Error`: `Post "https://<svc>.<ns>.svc:443/<path>?timeout=10s":
//!   dial tcp <ClusterIP>:443: connect: connection refused` (kube-proxy rejects a
//!   ClusterIP without endpoints).
//! - A denial: `pkg/admission/plugin/webhook/errors/statuserror.go` `ToStatusErr` keeps the
//!   webhook's `AdmissionResponse.Result` (code raised to 400 when below; status Failure) and
//!   prefixes its message: `admission webhook "<name>" denied the request: <message>`.
//!   KubeVirt denies with 422 `Invalid` and the causes (`pkg/util/webhooks`
//!   `ToAdmissionResponse`), Harvester with its `AdmitError` (`pkg/webhook/error/error.go`:
//!   400 BadRequest, 422 Invalid with one cause, 409, 405, or 500 InternalError).
//! - Validating webhooks run in parallel and the first error to arrive is returned
//!   (`errs[0]`); here the first in configuration-name order, so answers are repeatable.
//!
//! ValidatingAdmissionPolicies created through the API run in [`vap`], as the client that
//! sent the write, after the apiserver's own validation and before the validating webhooks.
//!
//! [`crate::Sim::put`] and scenario loading store objects as written and skip admission.

pub mod harvester_vm;
pub mod harvester_vm_mutator;
pub mod vap;

use serde_json::{json, Value};

use crate::errors::ApiError;
use crate::resources::ResourceDef;
use crate::settings::Settings;
pub use crate::webhook_switches::{known_names, resolve, switch, WebhookState};
pub use crate::webhooks::{self, FailurePolicy, Operation, Phase, Rule, Service, Webhook};

/// One request as the admission chain sees it.
#[derive(Debug, Clone, Copy)]
pub struct Attributes<'a> {
    /// The operation.
    pub operation: Operation,
    /// The resource.
    pub resource: &'a ResourceDef,
    /// The subresource (`status`, `eviction`) or "".
    pub subresource: &'a str,
    /// The object's name.
    pub name: &'a str,
}

impl Attributes<'_> {
    fn matches(&self, hook: &Webhook) -> bool {
        let resource = if self.subresource.is_empty() {
            self.resource.plural.to_string()
        } else {
            format!("{}/{}", self.resource.plural, self.subresource)
        };
        let rule_matches = hook.rules.iter().any(|r| {
            r.operations.contains(&self.operation)
                && r.api_group == self.resource.group
                && r.resources.contains(&resource.as_str())
        });
        rule_matches && hook.name_prefix.is_none_or(|p| self.name.starts_with(p))
    }
}

/// The webhooks of the simulated release with their current state, in call order.
pub fn list(settings: &Settings) -> Vec<Value> {
    ordered(settings, Phase::Mutating)
        .into_iter()
        .chain(ordered(settings, Phase::Validating))
        .map(|w| {
            let mut v = json!(w);
            v["url"] = json!(w.url());
            v["state"] = json!(state_of(settings, w.name));
            v
        })
        .collect()
}

fn state_of<'a>(settings: &'a Settings, name: &str) -> &'a WebhookState {
    const UP: &WebhookState = &WebhookState::Up;
    settings.webhooks.get(name).unwrap_or(UP)
}

/// The release's webhooks of one phase, configurations in name order (stable within one).
fn ordered(settings: &Settings, phase: Phase) -> Vec<&'static Webhook> {
    let mut hooks: Vec<&'static Webhook> = settings
        .profile()
        .webhooks
        .iter()
        .filter(|w| w.phase == phase)
        .collect();
    hooks.sort_by_key(|w| w.configuration);
    hooks
}

/// Runs one phase of the webhooks over a request: `Ok` when every matching webhook allows
/// it (or is down with failurePolicy Ignore), else the apiserver's error.
pub fn admit(settings: &Settings, phase: Phase, a: &Attributes<'_>) -> Result<(), ApiError> {
    for hook in ordered(settings, phase) {
        if !a.matches(hook) {
            continue;
        }
        match state_of(settings, hook.name) {
            WebhookState::Up => {}
            WebhookState::Down if hook.failure_policy == FailurePolicy::Ignore => {}
            WebhookState::Down => return Err(unreachable(hook)),
            WebhookState::Deny { message, code } => return Err(denied(hook.name, message, *code)),
        }
    }
    Ok(())
}

/// The 500 of a webhook that cannot be called (failurePolicy Fail).
pub fn unreachable(hook: &Webhook) -> ApiError {
    let err = format!(
        "failed calling webhook {:?}: failed to call webhook: Post {:?}: dial tcp {}:443: connect: connection refused",
        hook.name,
        hook.url(),
        hook.service.cluster_ip
    );
    ApiError {
        code: 500,
        reason: "InternalError",
        message: format!("Internal error occurred: {err}"),
        details: json!({"causes": [{"message": err}]}),
    }
}

/// A webhook's denial as `ToStatusErr` returns it.
pub fn denied(webhook: &str, message: &str, code: u16) -> ApiError {
    let code = code.max(400);
    let reason = match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        _ => "",
    };
    let deny = format!("admission webhook {webhook:?} denied the request");
    let message_out = if message.is_empty() {
        format!("{deny} without explanation")
    } else {
        format!("{deny}: {message}")
    };
    let details = if code == 422 {
        json!({"causes": [{"reason": "FieldValueInvalid", "message": message}]})
    } else {
        Value::Null
    };
    ApiError {
        code,
        reason,
        message: message_out,
        details,
    }
}

/// A webhook's 422 denial naming the field (Harvester's `werror.NewInvalidError(message,
/// field)`: one cause with the field).
pub fn denied_with_field(webhook: &str, message: &str, field: &str) -> ApiError {
    let mut e = denied(webhook, message, 422);
    e.details = json!({"causes": [{"reason": "FieldValueInvalid", "message": message,
        "field": field}]});
    e
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::resources::{find, RESOURCES};

    fn res(group: &str, plural: &str) -> &'static ResourceDef {
        let Some(i) = find(group, "v1", plural) else {
            panic!("{plural} not served")
        };
        &RESOURCES[i]
    }

    fn with(name: &str, state: WebhookState) -> Settings {
        let mut s = Settings::default();
        if let Err(e) = switch(&mut s.webhooks, name, &state) {
            panic!("{e}")
        }
        s
    }

    fn update(group: &str, plural: &str, sub: &'static str) -> Attributes<'static> {
        Attributes {
            operation: Operation::Update,
            resource: res(group, plural),
            subresource: sub,
            name: "vm-1",
        }
    }

    #[test]
    fn virt_api_down_fails_vm_and_vmi_updates_at_the_mutator() {
        let s = with("virt-api", WebhookState::Down);
        let vm = update("kubevirt.io", "virtualmachines", "");
        let Err(e) = admit(&s, Phase::Mutating, &vm) else {
            panic!("virt-api is down")
        };
        assert_eq!((e.code, e.reason), (500, "InternalError"));
        assert_eq!(
            e.message,
            "Internal error occurred: failed calling webhook \"virtualmachines-mutator.kubevirt.io\": failed to call webhook: Post \"https://virt-api.harvester-system.svc:443/virtualmachines-mutate?timeout=10s\": dial tcp 10.53.121.37:443: connect: connection refused"
        );
        assert_eq!(
            e.details["causes"][0]["message"],
            e.message.trim_start_matches("Internal error occurred: ")
        );
        let vmi = update("kubevirt.io", "virtualmachineinstances", "");
        assert!(admit(&s, Phase::Mutating, &vmi).is_err());
        // Pods, leases, events: no virt-api webhook sees them.
        assert!(admit(&s, Phase::Mutating, &update("", "pods", "")).is_ok());
        assert!(admit(&s, Phase::Validating, &update("", "pods", "")).is_ok());
    }

    #[test]
    fn one_validator_down_names_itself() {
        let s = with("virtualmachine-validator.kubevirt.io", WebhookState::Down);
        let vm = update("kubevirt.io", "virtualmachines", "");
        assert!(admit(&s, Phase::Mutating, &vm).is_ok());
        let Err(e) = admit(&s, Phase::Validating, &vm) else {
            panic!("the validator is down")
        };
        assert!(e
            .message
            .contains("\"virtualmachine-validator.kubevirt.io\""));
        // The VM's status subresource is another rule.
        let status = update("kubevirt.io", "virtualmachines", "status");
        assert!(admit(&s, Phase::Validating, &status).is_ok());
    }

    #[test]
    fn denial_wording_and_codes() {
        let s = with(
            "validator.harvesterhci.io",
            WebhookState::deny("the volume is in use"),
        );
        let vm = update("kubevirt.io", "virtualmachines", "");
        let Err(e) = admit(&s, Phase::Validating, &vm) else {
            panic!("denied")
        };
        assert_eq!((e.code, e.reason), (422, "Invalid"));
        assert_eq!(
            e.message,
            "admission webhook \"validator.harvesterhci.io\" denied the request: the volume is in use"
        );
        let e = denied("x", "", 200);
        assert_eq!(e.code, 400);
        assert_eq!(
            e.message,
            "admission webhook \"x\" denied the request without explanation"
        );
        // VMIs are not Harvester's to validate.
        let vmi = update("kubevirt.io", "virtualmachineinstances", "");
        assert!(admit(&s, Phase::Validating, &vmi).is_ok());
    }

    #[test]
    fn ignore_policy_and_match_conditions() {
        let s = with("harvester-webhook", WebhookState::Down);
        let create_pod = Attributes {
            operation: Operation::Create,
            resource: res("", "pods"),
            subresource: "",
            name: "p",
        };
        assert!(admit(&s, Phase::Mutating, &create_pod).is_ok(), "Ignore");
        assert!(admit(&s, Phase::Validating, &update("", "nodes", "")).is_err());

        let mut s = with("virt-api", WebhookState::Down);
        let evict = |name: &'static str| Attributes {
            operation: Operation::Create,
            resource: res("", "pods"),
            subresource: "eviction",
            name,
        };
        assert!(admit(&s, Phase::Validating, &evict("web-0")).is_ok());
        assert!(admit(&s, Phase::Validating, &evict("virt-launcher-vm-1-abcde")).is_err());
        s.release = "1.5".into();
        assert!(
            admit(&s, Phase::Validating, &evict("virt-launcher-vm-1-abcde")).is_ok(),
            "KubeVirt 1.4's interceptor ignores failures"
        );
    }

    #[test]
    fn names_resolve() {
        assert_eq!(
            resolve("harvester-webhook").ok(),
            Some(vec![
                "mutator.harvesterhci.io".to_string(),
                "validator.harvesterhci.io".to_string()
            ])
        );
        assert!(resolve("virt-api").is_ok_and(|v| v.len() == 8));
        assert!(resolve("nope").is_err());
        let mut m = BTreeMap::new();
        let _ = switch(&mut m, "virt-api", &WebhookState::Down);
        let _ = switch(&mut m, "virt-api", &WebhookState::Up);
        assert!(m.is_empty());
    }
}
