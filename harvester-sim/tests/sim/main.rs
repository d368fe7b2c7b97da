//! harvester-sim's own tests: its fidelity to the real kube-apiserver, KubeVirt,
//! Harvester and Longhorn (checked with the real `kubectl` where it can be), its
//! simulated controllers, RBAC, TLS, faults and the binary. One test binary.

mod common;

mod binary_and_scenarios;
mod controllers;
mod controllers_async;
mod dry_run;
mod faults_log;
mod fidelity_admission;
mod fidelity_delete;
mod fidelity_kubevirt;
mod fidelity_validation;
mod golden;
mod harvester_vm_mutator;
mod kube_versions;
mod kubectl;
mod node_down;
mod rbac;
mod reviews;
mod select_index;
mod subresources;
mod tls;
mod verbs;
mod watch;
