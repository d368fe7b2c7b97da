//! The recovery engine: the pure planner, the applier and the run report.

pub mod apply;
pub mod audit;
pub mod finalizers;
pub mod intents;
pub mod model;
pub mod plan;
pub mod recheck;
pub mod render;
pub mod report;

#[cfg(test)]
mod plan_tests;
pub mod session;
