//! Node evidence (design §5): virt-launcher/qemu processes and Longhorn disks held here.
//!
//! INTERFACE CONTRACT (used by status and the planner; keep these names):
//! `NodeOptions`, `NodeFacts`, `VmProcess`, `ProcessKind`, `gather`,
//! `NodeFacts::processes_for`, `NodeFacts::volume_holders`, `render_table`.

use std::io::{self, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::evidence::Gathered;

/// Where node evidence is read from.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The host's root filesystem (`/`, or where a DaemonSet mounted it).
    pub host_root: PathBuf,
}

/// What a VM process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProcessKind {
    /// `virt-launcher-monitor`.
    LauncherMonitor,
    /// `virt-launcher`.
    Launcher,
    /// `qemu-kvm` / `qemu-system-*`.
    Qemu,
}

/// A live process that belongs to a VM, with the VMI identity read from its command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmProcess {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks since boot (with pid, the process identity).
    pub start_time: u64,
    /// Which kind of VM process.
    pub kind: ProcessKind,
    /// The VMI's namespace, when the command line names it.
    pub namespace: Option<String>,
    /// The VMI's name, when the command line names it.
    pub name: Option<String>,
    /// The VMI's UID, when the command line names it.
    pub uid: Option<String>,
}

/// Everything gathered about VM processes and disks on this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeFacts {
    /// VM processes found.
    pub processes: Gathered<Vec<VmProcess>>,
}

impl NodeFacts {
    /// The processes that belong to the VMI `namespace/name` with `uid`, or why that
    /// cannot be known.
    pub fn processes_for(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<Vec<&VmProcess>, String> {
        let procs = self.processes.as_result()?;
        Ok(procs
            .iter()
            .filter(|p| {
                p.uid.as_deref() == Some(uid)
                    || (p.namespace.as_deref() == Some(namespace)
                        && p.name.as_deref() == Some(name))
            })
            .collect())
    }

    /// How the Longhorn volume `volume` is held on this node ("open by pid 42 (qemu)",
    /// "mounted at …"); empty when it is not; an error when that cannot be known.
    pub fn volume_holders(&self, volume: &str) -> Result<Vec<String>, String> {
        let _ = volume;
        Err("disk evidence is not built yet".into())
    }
}

/// Gathers node facts; never fails: unreadable sources become `Unreadable` evidence.
pub fn gather(opts: &NodeOptions) -> NodeFacts {
    let _ = opts;
    NodeFacts {
        processes: Gathered::unreadable("process table", "not built yet"),
    }
}

/// Writes the node section of `vmrecover status` as a table.
pub fn render_table(facts: &NodeFacts, out: &mut dyn Write) -> io::Result<()> {
    match facts.processes.as_result() {
        Ok(p) => writeln!(out, "VM processes: {}", p.len()),
        Err(e) => writeln!(out, "VM processes: could not read ({e})"),
    }
}
