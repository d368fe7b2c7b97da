//! What an admission webhook that is up checks, where the simulator models its content
//! ([`crate::admission::harvester_vm`]): run after the validating webhooks' up/down/deny state
//! let the request through, with the cluster's objects.

use serde_json::Value;

use super::Inner;
use crate::admission::harvester_vm::{check_non_shareable_pvcs, check_occupied_pvcs, VALIDATOR};
use crate::admission::{Operation, WebhookState};
use crate::errors::ApiError;
use crate::profiles::OccupiedPvcs;
use crate::resources::{find, ResourceDef};

impl Inner {
    /// Harvester's VM validator on a VM CREATE or UPDATE (the object or its status): its
    /// occupied-PVC check, as the release makes it.
    pub(super) fn webhook_content(
        &self,
        operation: Operation,
        resource: &ResourceDef,
        subresource: &str,
        object: &Value,
    ) -> Result<(), ApiError> {
        let is_vm = resource.group == "kubevirt.io" && resource.plural == "virtualmachines";
        let validates = matches!(operation, Operation::Create | Operation::Update)
            && matches!(subresource, "" | "status");
        let profile = self.settings.profile();
        let up = !matches!(
            self.settings.webhooks.get(VALIDATOR),
            Some(WebhookState::Down | WebhookState::Deny { .. })
        );
        let registered = profile.webhooks.iter().any(|w| w.name == VALIDATOR);
        if !(is_vm && validates && up && registered) {
            return Ok(());
        }
        let vms: Vec<Value> = find("kubevirt.io", "v1", "virtualmachines")
            .and_then(|i| self.objects.get(i))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        match profile.occupied_pvcs {
            OccupiedPvcs::AnyOtherVm => check_occupied_pvcs(object, &vms),
            OccupiedPvcs::NonShareable => {
                let pvcs = find("", "v1", "persistentvolumeclaims");
                let pvc = |ns: &str, name: &str| {
                    pvcs.and_then(|i| self.get_obj(i, &(ns.to_string(), name.to_string())))
                        .cloned()
                };
                check_non_shareable_pvcs(object, &vms, &pvc)
            }
        }
    }
}
