//! What an admission webhook that is up does, where the simulator models its content, with
//! the cluster's objects: Harvester's VM validator ([`crate::admission::harvester_vm`]), run
//! after the validating webhooks' up/down/deny state let the request through, and Harvester's
//! VM mutator on a deleting VM ([`crate::admission::harvester_vm_mutator`]), run after the
//! mutating webhooks' state did.

use serde_json::Value;

use super::Inner;
use crate::admission::harvester_vm::{check_non_shareable_pvcs, check_occupied_pvcs, VALIDATOR};
use crate::admission::harvester_vm_mutator::{self, MUTATOR};
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
        // Both checks look at the VMs of the object's namespace only: borrowed, not copied
        // (a 5,000-VM site made every VM update copy ~25 MB).
        let ns = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let vms: Vec<&Value> = find("kubevirt.io", "v1", "virtualmachines")
            .and_then(|i| self.objects.get(i))
            .map(|m| {
                m.range((ns.clone(), String::new())..)
                    .take_while(|(k, _)| k.0 == ns)
                    .map(|(_, v)| v)
                    .collect()
            })
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

impl harvester_vm_mutator::Cache for Inner {
    fn nad(&self, namespace: &str, name: &str) -> Option<Value> {
        let i = find("k8s.cni.cncf.io", "v1", "network-attachment-definitions")?;
        self.get_obj(i, &(namespace.to_string(), name.to_string()))
            .cloned()
    }

    fn setting(&self, name: &str) -> Option<Value> {
        let i = find("harvesterhci.io", "v1beta1", "settings")?;
        self.get_obj(i, &(String::new(), name.to_string())).cloned()
    }
}

impl Inner {
    /// Harvester's VM mutator on an UPDATE of a VM being deleted, in the releases where it
    /// acts on one (the profile's `vm_mutator_on_deleting`), when it is registered and up
    /// (down, failurePolicy Ignore lets the request through unchanged).
    pub(super) fn mutator_content(
        &self,
        operation: Operation,
        resource: &ResourceDef,
        subresource: &str,
        object: &mut Value,
    ) -> Result<(), ApiError> {
        let is_vm = resource.group == "kubevirt.io" && resource.plural == "virtualmachines";
        let profile = self.settings.profile();
        let up = !matches!(
            self.settings.webhooks.get(MUTATOR),
            Some(WebhookState::Down | WebhookState::Deny { .. })
        );
        let registered = profile.webhooks.iter().any(|w| w.name == MUTATOR);
        let deleting = object
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|d| !d.is_null());
        if is_vm
            && operation == Operation::Update
            && subresource.is_empty()
            && profile.vm_mutator_on_deleting
            && up
            && registered
            && deleting
        {
            harvester_vm_mutator::mutate_update(object, self)?;
        }
        Ok(())
    }
}
