//! Node evidence with real parts: real processes (fake virt-launcher/qemu under their
//! real names), real block device nodes, sysfs trees and mount tables, read by the
//! library in-process and by `vmrecover status`. One test binary; the fakes and host
//! trees come from `harvester_sim::node`.

mod node_disk_stacks;
mod node_disks;
mod node_kill;
mod node_processes;
mod node_status_cli;
mod node_timeouts;
