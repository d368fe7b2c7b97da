//! The webhook switches: how a webhook behaves now ([`WebhookState`], set through the
//! settings) and which webhooks a switch names (a webhook, or every webhook behind a
//! Service), over every release's webhook table.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::profiles::PROFILES;
use crate::webhooks::SERVICES;

/// How a webhook behaves now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum WebhookState {
    /// It allows every request (the default).
    #[default]
    Up,
    /// Its pods are down: calls to it fail (connection refused).
    Down,
    /// It denies every request it sees.
    Deny {
        /// `AdmissionResponse.result.message`.
        message: String,
        /// `AdmissionResponse.result.code` (default 422, as KubeVirt and Harvester's
        /// `NewInvalidError` answer).
        #[serde(default = "default_deny_code")]
        code: u16,
    },
}

fn default_deny_code() -> u16 {
    422
}

impl WebhookState {
    /// A denial with KubeVirt's and Harvester's usual code, 422.
    pub fn deny(message: impl Into<String>) -> Self {
        WebhookState::Deny {
            message: message.into(),
            code: default_deny_code(),
        }
    }
}

/// Every webhook name and Service name any release knows, for checking what a switch names.
pub fn known_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = PROFILES
        .iter()
        .flat_map(|p| p.webhooks.iter().map(|w| w.name))
        .chain(SERVICES.iter().map(|s| s.name))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The webhook names `name` stands for: itself, or every webhook behind a Service of that
/// name. An unknown name is an error that lists the known ones.
pub fn resolve(name: &str) -> Result<Vec<String>, String> {
    let behind: Vec<String> = PROFILES
        .iter()
        .flat_map(|p| p.webhooks.iter())
        .filter(|w| w.service.name == name)
        .map(|w| w.name.to_string())
        .collect();
    if !behind.is_empty() {
        let mut b = behind;
        b.sort();
        b.dedup();
        return Ok(b);
    }
    if known_names().contains(&name) {
        return Ok(vec![name.to_string()]);
    }
    Err(format!(
        "unknown webhook or webhook Service {name:?}; known: {}",
        known_names().join(", ")
    ))
}

/// Applies a switch to the settings' webhook states: `name` is a webhook or a Service (all of
/// its webhooks). Returns the webhooks switched.
pub fn switch(
    states: &mut BTreeMap<String, WebhookState>,
    name: &str,
    state: &WebhookState,
) -> Result<Vec<String>, String> {
    let names = resolve(name)?;
    for n in &names {
        if *state == WebhookState::Up {
            states.remove(n);
        } else {
            states.insert(n.clone(), state.clone());
        }
    }
    Ok(names)
}
