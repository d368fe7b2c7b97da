//! Kubernetes side: typed views of the objects vmrecover reads and the requests it makes.

pub mod client;
pub mod errors;
pub mod events;
pub mod gather;
pub mod lease;
pub mod names;
pub mod objects;
pub mod retry;
pub mod snapshot;
pub mod wait;
