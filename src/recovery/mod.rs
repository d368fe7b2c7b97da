//! The recovery engine: the pure planner, the applier and the run report.
