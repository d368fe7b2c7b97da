//! This host: the Node is this machine and this boot, the process table is the host's, the
//! journal and boot records are there, the device and CSI directories are readable, the
//! state directory is writable.

use std::path::Path;

use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};

use super::Check;
use crate::boot::{self, journal::JournalFinding, records::BootEnd};
use crate::cluster::describe;
use crate::config::Config;
use crate::node::identity::{self, NodeMatch};

/// The Node as read, and the checks about it.
pub struct NodeChecks {
    /// The Node, when it could be read.
    pub node: Option<Node>,
    /// `host.node-identity`.
    pub checks: Vec<Check>,
}

/// The checks that need no cluster.
pub fn checks(cfg: &Config) -> Vec<Check> {
    let root = &cfg.node_evidence.host_root;
    let mut out = vec![host_pid(root)];
    let facts = boot::gather(&cfg.boot, jiff::Timestamp::now());
    out.push(journal(&facts.journal.finding));
    out.push(boot_records(&facts));
    for (name, rel, why) in [
        (
            "host.dev-longhorn",
            "dev/longhorn",
            "Longhorn's block devices",
        ),
        ("host.sysfs", "sys/block", "block devices and their holders"),
        (
            "host.kubelet-csi",
            "var/lib/kubelet/plugins/kubernetes.io/csi",
            "the kubelet's CSI staging and publish paths",
        ),
    ] {
        out.push(readable_dir(name, &root.join(rel), why));
    }
    out.push(state_dir(&cfg.state_dir));
    out
}

fn host_pid(root: &Path) -> Check {
    const NAME: &str = "host.pid-namespace";
    const FIX: &str = "run the agent with hostPID: true (the chart's DaemonSet does) and the \
                       host's / mounted at --host-root";
    if let Err((source, why)) = crate::node::processes::procfs_self(root) {
        return Check::fail(NAME, format!("{source}: {why}"), FIX);
    }
    let comm_of = |pid: &str| {
        std::fs::read_to_string(root.join("proc").join(pid).join("comm"))
            .map(|s| s.trim().to_string())
    };
    let init = match comm_of("1") {
        Ok(c) => c,
        Err(e) => {
            return Check::fail(
                NAME,
                format!("cannot read {}: {e}", root.join("proc/1/comm").display()),
                FIX,
            )
        }
    };
    if init != "systemd" && init != "init" {
        return Check::fail(
            NAME,
            format!("pid 1 is {init:?}, not the host's init: this is a container's own process table, where no VM's process can be seen"),
            FIX,
        );
    }
    let kubelet = std::fs::read_dir(root.join("proc"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .any(|e| comm_of(&e.file_name().to_string_lossy()).is_ok_and(|c| c == "kubelet"))
        })
        .unwrap_or(false);
    if !kubelet {
        return Check::fail(
            NAME,
            format!(
                "pid 1 is {init}, but no kubelet process is visible under {}",
                root.join("proc").display()
            ),
            FIX,
        );
    }
    Check::ok(
        NAME,
        format!("pid 1 is {init} and the kubelet is visible: the host's process table"),
    )
}

fn journal(finding: &JournalFinding) -> Check {
    const NAME: &str = "host.journal";
    match finding {
        JournalFinding::PreviousBoot(tail) => Check::ok(
            NAME,
            format!(
                "the previous boot {} is readable ({} entries of its tail)",
                crate::boot::records::short_id(&tail.boot_id),
                tail.entries_read
            ),
        ),
        JournalFinding::NoEvidence { reason } => Check::warn(
            NAME,
            format!("the journal holds no previous boot: {reason}"),
            "make the journal persistent (Storage=persistent; Harvester keeps /var/log) and \
             mount it at --journal-dir; a first boot has none yet",
        ),
        JournalFinding::Unreadable { source, reason } => Check::fail(
            NAME,
            format!("{source} unreadable: {reason}"),
            "mount the host's /var/log/journal read-only and pass it as --journal-dir \
             (VMRECOVER_JOURNAL_DIR)",
        ),
    }
}

fn boot_records(facts: &boot::BootFacts) -> Check {
    const NAME: &str = "host.boot-records";
    let fix = "install vmrecover-boot.service on the host and start it now \
               (systemctl enable --now vmrecover-boot.service); until it ran in this boot \
               the next unclean-boot verdict will be \"unknown\"";
    let history =
        match facts.history.as_result() {
            Ok(h) => h,
            Err(e) => return Check::fail(
                NAME,
                format!("{}: {e}", facts.records.path),
                "repair or move the records file aside; vmrecover-boot.service writes a new one",
            ),
        };
    if history.iter().any(|b| b.ended == BootEnd::Running) {
        Check::ok(
            NAME,
            format!(
                "{}: this boot recorded by vmrecover-boot.service",
                facts.records.path
            ),
        )
    } else if history.is_empty() {
        Check::warn(
            NAME,
            format!(
                "no boot records in {} (a fresh install?)",
                facts.records.path
            ),
            fix,
        )
    } else {
        Check::warn(
            NAME,
            format!(
                "{}: vmrecover-boot.service did not run in this boot ({} earlier boot(s) recorded)",
                facts.records.path,
                history.len()
            ),
            fix,
        )
    }
}

fn readable_dir(name: &str, dir: &Path, why: &str) -> Check {
    match std::fs::read_dir(dir) {
        Ok(_) => Check::ok(name, format!("{} readable ({why})", dir.display())),
        Err(e) => Check::fail(
            name,
            format!(
                "cannot read {}: {e}; without {why} no disk can be proven free",
                dir.display()
            ),
            "mount the host's / (with /dev, /sys and /var/lib/kubelet) read-only at --host-root",
        ),
    }
}

fn state_dir(dir: &Path) -> Check {
    const NAME: &str = "host.state-dir";
    let fix = "mount a persistent host directory there (/usr/local/vmrecover or \
               /var/lib/rancher/vmrecover on Harvester) read-write as --state-dir";
    let probe = dir.join(format!(".vmrecover-check-{}", std::process::id()));
    let written = std::fs::write(&probe, b"probe\n").and_then(|()| std::fs::remove_file(&probe));
    match written {
        Ok(()) if !persistent_on_harvester(dir) => Check::warn(
            NAME,
            format!(
                "{} writable, but on Harvester /var, /etc and /run are tmpfs (only /var/lib/rancher, \
                 /var/lib/kubelet, /var/log, /etc/rancher and /etc/systemd persist): the boot \
                 records would not survive a reboot",
                dir.display()
            ),
            fix,
        ),
        Ok(()) => Check::ok(
            NAME,
            format!(
                "{} writable (probe file written and removed)",
                dir.display()
            ),
        ),
        Err(e) => {
            let _ = std::fs::remove_file(&probe);
            Check::fail(NAME, format!("cannot write in {}: {e}", dir.display()), fix)
        }
    }
}

/// Whether `dir` is on one of the Harvester host's persistent paths, as far as its name tells
/// (docs/architecture.md §4: `/var` and `/etc` are otherwise tmpfs there).
fn persistent_on_harvester(dir: &Path) -> bool {
    let tmpfs = ["/var/", "/etc/", "/run/"];
    let kept = [
        "/var/lib/rancher/",
        "/var/lib/kubelet/",
        "/var/log/",
        "/etc/rancher/",
        "/etc/systemd/",
    ];
    let d = format!("{}/", dir.display());
    kept.iter().any(|k| d.starts_with(k)) || !tmpfs.iter().any(|t| d.starts_with(t))
}

/// The Node named by `--node` is this machine, in this boot.
pub async fn node_identity(cfg: &Config, client: &Client) -> NodeChecks {
    const NAME: &str = "host.node-identity";
    let nodes = Api::<Node>::all(client.clone());
    let node = match nodes.get_opt(&cfg.node).await {
        Ok(Some(n)) => n,
        Ok(None) => {
            return NodeChecks {
                node: None,
                checks: vec![Check::fail(
                    NAME,
                    format!("no Node named {:?}", cfg.node),
                    "pass --node (NODE_NAME) with this node's name as `kubectl get nodes` shows it",
                )],
            }
        }
        Err(e) => {
            return NodeChecks {
                node: None,
                checks: vec![Check::fail(
                    NAME,
                    describe(&e, "get", &format!("nodes/{}", cfg.node)),
                    "grant get on nodes (the chart's ClusterRole does)",
                )],
            }
        }
    };
    let info = node.status.as_ref().and_then(|s| s.node_info.as_ref());
    let (mid, bid) = info.map_or((String::new(), String::new()), |i| {
        (i.machine_id.clone(), i.boot_id.clone())
    });
    let check = match identity::read(&cfg.node_evidence.host_root).as_result() {
        Err(e) => Check::fail(
            NAME,
            format!("this machine's identity is unreadable: {e}"),
            "mount the host's / at --host-root (etc/machine-id, proc/sys/kernel/random/boot_id)",
        ),
        Ok(host) => match host.check_node(&mid, &bid) {
            NodeMatch::Same => Check::ok(
                NAME,
                format!("Node {} is this machine (machine-id {}) in this boot", cfg.node, host.machine_id),
            ),
            NodeMatch::OtherMachine { node: n, here } => Check::fail(
                NAME,
                format!("Node {} has machine-id {n}, this machine has {here}: --node names another machine", cfg.node),
                "pass --node (NODE_NAME, the pod's spec.nodeName) with this machine's Node name",
            ),
            NodeMatch::OtherBoot { node: n, here } => Check::warn(
                NAME,
                format!("Node {} reports boot {n}, this boot is {here}: the kubelet has not posted this boot yet", cfg.node),
                "wait for the kubelet's next status update and run check again",
            ),
            NodeMatch::Unusable { field, value } => Check::fail(
                NAME,
                format!("Node {} reports {field} {value:?}, not a 128-bit id", cfg.node),
                "check the kubelet on this node: it writes status.nodeInfo",
            ),
        },
    };
    NodeChecks {
        node: Some(node),
        checks: vec![check],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_dir_must_be_on_a_path_harvester_keeps() {
        for kept in [
            "/usr/local/vmrecover",
            "/var/lib/rancher/vmrecover",
            "/oem/vmrecover",
        ] {
            assert!(persistent_on_harvester(Path::new(kept)), "{kept}");
        }
        for lost in ["/var/lib/vmrecover", "/etc/vmrecover", "/run/vmrecover"] {
            assert!(!persistent_on_harvester(Path::new(lost)), "{lost}");
        }
    }
}
