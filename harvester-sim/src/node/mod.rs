//! A simulated Harvester node, for vmrecover's node side: the host root it reads
//! ([`HostRoot`], [`HostTree`] for block devices), fake virt-launcher/qemu processes
//! ([`FakeProc`]), and a private pid namespace per node ([`PidNamespace`]) so that one
//! test's fake VMs are invisible to every other test.

mod fake_vm;
mod host_root;
mod host_tree;
mod pid_namespace;

pub use fake_vm::*;
pub use host_root::{dashed, HostRoot, BOOT_ID, EMPTY_MOUNTINFO, MACHINE_ID};
pub use host_tree::*;
pub use pid_namespace::PidNamespace;
