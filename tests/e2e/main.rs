//! vmrecover end to end: the built binary (and, in `inprocess`, the library) against the
//! simulated Harvester API server over real HTTP, checked with the real `kubectl`; the
//! boot verdict from real journal files; the chart, `deploy/` and the image. One test
//! binary (ripgrep's shape): support modules are compiled once; each node's fake VM
//! processes live in a pid namespace of their own (`harvester_sim::node::PidNamespace`).

mod admission_support;
mod boot_support;
mod chart_support;
mod deploy_support;
mod e2e_support;
mod fence_support;

mod admission_e2e;
mod admission_policy_e2e;
mod agent_e2e;
mod boot_records;
mod boot_status;
mod chart_conventions;
mod chart_monitoring;
mod chart_readiness_alert;
mod chart_render;
mod chart_schema;
mod check_e2e;
mod clock_skew;
mod deploy_manifests;
mod deploy_rbac;
mod disk_proof_e2e;
mod docs_generated;
mod fence_procedure;
mod fenced_e2e;
mod follow_e2e;
mod harvester_e2e;
mod harvester_mutator_e2e;
mod harvester_webhooks;
mod host_mode_e2e;
mod hotplug_e2e;
mod image_arm64;
mod image_build;
mod image_containerd;
mod incluster_e2e;
mod inprocess;
mod install_addon;
mod kube_versions;
mod longhorn_namespace;
mod output_colors;
mod power_cuts;
mod recovery_causes_e2e;
mod recovery_e2e;
mod release_e2e;
mod reliability_bad_input;
mod reliability_blast;
mod reliability_crash;
mod reliability_faults;
mod reliability_races;
mod safety_e2e;
mod seed_e2e;
mod site_e2e;
mod state_versions_e2e;
mod status_exit_codes;
mod uninstall;
