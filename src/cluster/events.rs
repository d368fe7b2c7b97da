//! Kubernetes Events (events.k8s.io/v1) recording each action on the object it touched.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::Client;

use super::errors::RequestFailed;
use super::names::REPORTING_CONTROLLER;

/// The object an Event is about.
#[derive(Debug, Clone)]
pub struct Regarding {
    /// e.g. `kubevirt.io/v1`.
    pub api_version: String,
    /// e.g. `VirtualMachineInstance`.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
}

/// Creates Events as `vmrecover` from `reportingInstance`.
#[derive(Clone)]
pub struct EventRecorder {
    client: Client,
    instance: String,
}

impl EventRecorder {
    /// A recorder for this node's instance (`vmrecover-<node>`).
    pub fn new(client: Client, node: &str) -> Self {
        EventRecorder {
            client,
            // The apiserver refuses a reportingInstance over 128 bytes (a node name may have 253).
            instance: cut(&format!("{REPORTING_CONTROLLER}-{node}"), 128),
        }
    }

    /// Records `action` (e.g. `ClearFinalizers`) with `reason` (e.g. `Recovered`) and a
    /// note of at most 1 kB. A failure is returned for the caller to log, never retried.
    pub async fn record(
        &self,
        about: &Regarding,
        warning: bool,
        action: &str,
        reason: &str,
        note: &str,
    ) -> Result<(), RequestFailed> {
        let api = Api::<Event>::namespaced(self.client.clone(), &about.namespace);
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(generate_name(&about.name)),
                namespace: Some(about.namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(jiff::Timestamp::now())),
            reporting_controller: Some(REPORTING_CONTROLLER.to_string()),
            reporting_instance: Some(self.instance.clone()),
            action: Some(action.to_string()),
            reason: Some(reason.to_string()),
            type_: Some(if warning { "Warning" } else { "Normal" }.to_string()),
            note: Some(truncate(note, 1024)),
            regarding: Some(ObjectReference {
                api_version: Some(about.api_version.clone()),
                kind: Some(about.kind.clone()),
                namespace: Some(about.namespace.clone()),
                name: Some(about.name.clone()),
                uid: Some(about.uid.clone()),
                ..ObjectReference::default()
            }),
            ..Event::default()
        };
        api.create(&PostParams::default(), &event)
            .await
            .map(|_| ())
            .map_err(|e| {
                RequestFailed::new(
                    "create",
                    format!("events.events.k8s.io in {}", about.namespace),
                    e,
                )
            })
    }
}

/// Longest prefix the apiserver keeps before adding its 5 random characters
/// (`names.MaxGeneratedNameLength` in k8s.io/apiserver `pkg/storage/names/generate.go`).
const MAX_GENERATE_NAME: usize = 58;

/// `metadata.generateName` for an Event about `name`: `<name>-`, cut so the apiserver keeps
/// all of it, never ending in `.` or `-` before the final dash. events.k8s.io/v1 validates it
/// as a DNS-subdomain prefix where only a trailing `-` may dangle; `<name>.` is a 422.
fn generate_name(name: &str) -> String {
    let mut end = name.len().min(MAX_GENERATE_NAME - 1);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let base = name[..end].trim_end_matches(['.', '-']);
    let base = if base.is_empty() { "vmrecover" } else { base };
    format!("{base}-")
}

/// The longest prefix of `s` of at most `max` bytes.
fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    #[test]
    fn generate_name_is_a_valid_prefix() {
        assert_eq!(super::generate_name("vm-web-01"), "vm-web-01-");
        let long = format!("{}.{}", "a".repeat(56), "b".repeat(100));
        let g = super::generate_name(&long);
        assert_eq!(
            g,
            format!("{}-", "a".repeat(56)),
            "cut, and the dangling dot dropped"
        );
        assert!(g.len() <= super::MAX_GENERATE_NAME);
        assert_eq!(super::generate_name("---"), "vmrecover-");
        assert_eq!(super::cut(&"n".repeat(300), 128).len(), 128);
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        let s = "é".repeat(600);
        let t = super::truncate(&s, 1024);
        assert!(t.len() <= 1024 && t.ends_with("..."));
        assert_eq!(super::truncate("short", 1024), "short");
    }
}
