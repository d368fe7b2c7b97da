//! vmrecover: node-local recovery of KubeVirt VMs left stuck after a power cut.
//!
//! The pipeline (see `docs/architecture.md`): gather facts at the edge ([`boot`],
//! [`node`], [`cluster`]), decide with a pure planner ([`recovery::plan`]), apply with
//! re-checked preconditions ([`recovery::apply`]), report ([`recovery::RunReport`]).
//! Flags and environment are resolved once into [`config::Config`] by [`commands`].

#![warn(missing_docs)]

pub mod agent;
pub mod boot;
pub mod check;
pub mod cli;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod evidence;
pub mod exit;
pub mod logging;
pub mod node;
pub mod pipeline;
pub mod recovery;
mod serde_duration;
pub mod shutdown;
pub mod state_file;
pub mod style;
