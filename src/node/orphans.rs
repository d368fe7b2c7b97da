//! Orphans (design §5): launcher/qemu processes that belong to no VMI the cluster
//! places on this node, and the opt-in killer (`run --kill-orphans`).
//!
//! Finding orphans is pure (the planner joins processes with cluster objects); killing
//! one sends SIGTERM, waits up to a grace period, then SIGKILL, and refuses whenever the
//! pid no longer names the process that was scanned (its start time changed).

use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::{stat, VmProcess};

/// A VMI as the cluster places it on this node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VmiRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
}

/// Whether `p` serves `vmi`: same UID, or same namespace and name when the process does
/// not name a UID.
pub fn serves(p: &VmProcess, vmi: &VmiRef) -> bool {
    match p.uid.as_deref() {
        Some(uid) => uid == vmi.uid,
        None => {
            p.namespace.as_deref() == Some(vmi.namespace.as_str())
                && p.name.as_deref() == Some(vmi.name.as_str())
        }
    }
}

/// The processes that serve none of the VMIs placed on this node. Processes that name
/// no VMI at all (no UID, no namespace/name) are never orphans: nothing proves they are
/// KubeVirt's, so they are reported, never killed.
pub fn find<'a>(processes: &'a [VmProcess], placed: &[VmiRef]) -> Vec<&'a VmProcess> {
    processes
        .iter()
        .filter(|p| p.has_identity() && !placed.iter().any(|v| serves(p, v)))
        .collect()
}

/// How a kill ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum KillOutcome {
    /// The process was already gone before any signal was sent.
    AlreadyGone,
    /// It exited after SIGTERM within the grace period.
    Terminated {
        /// Time from SIGTERM to exit, in milliseconds.
        after_ms: u64,
    },
    /// It ignored SIGTERM for the grace period and was ended with SIGKILL.
    Killed {
        /// Time from SIGTERM to exit, in milliseconds.
        after_ms: u64,
    },
}

impl std::fmt::Display for KillOutcome {
    /// Operator-readable: `ended by SIGTERM after 0.4 s`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KillOutcome::AlreadyGone => f.write_str("already gone: no signal was needed"),
            KillOutcome::Terminated { after_ms } => {
                write!(f, "ended by SIGTERM after {}", seconds(*after_ms))
            }
            KillOutcome::Killed { after_ms } => write!(
                f,
                "ignored SIGTERM for the grace period; ended by SIGKILL after {}",
                seconds(*after_ms)
            ),
        }
    }
}

/// `0.4 s`, `12.0 s`.
fn seconds(ms: u64) -> String {
    format!("{}.{} s", ms / 1000, ms % 1000 / 100)
}

/// Why a kill was refused or failed. `Display` is the operator-readable sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KillError {
    /// The pid now names a different process (pid reuse): nothing was sent to it.
    #[error(
        "not signalled: pid {pid} now belongs to another process (it started at tick {found} \
         after boot, the scanned one at tick {expected})"
    )]
    PidReused {
        /// The pid.
        pid: u32,
        /// Start time at scan.
        expected: u64,
        /// Start time now.
        found: u64,
    },
    /// The pid is not one that may be signalled (0, 1, or out of range).
    #[error("not signalled: pid {0} is not a process vmrecover may signal")]
    InvalidPid(u32),
    /// Reading the process's identity failed.
    #[error("not signalled: cannot tell whether pid {pid} is still the scanned process: {reason}")]
    Identity {
        /// The pid.
        pid: u32,
        /// Why.
        reason: String,
    },
    /// Sending a signal failed.
    #[error("cannot send {signal} to pid {pid}: {}", .errno.desc())]
    Signal {
        /// The pid.
        pid: u32,
        /// The signal.
        signal: String,
        /// The error.
        errno: Errno,
    },
    /// The process survived SIGKILL for as long as we waited (e.g. stuck in D state).
    #[error(
        "pid {pid} is still alive {} after SIGKILL (stuck in the kernel, e.g. on a hung disk \
         or NFS server)",
        seconds(*.waited_ms)
    )]
    StillAlive {
        /// The pid.
        pid: u32,
        /// How long we waited after SIGKILL.
        waited_ms: u64,
    },
}

/// How long to wait for a process to disappear after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(20);

/// Identity check result.
enum Alive {
    Same,
    Gone,
}

fn check(proc_root: &Path, pid: u32, start_time: u64) -> Result<Alive, KillError> {
    match stat::read(proc_root, pid) {
        Ok(s) if s.start_ticks != start_time => Err(KillError::PidReused {
            pid,
            expected: start_time,
            found: s.start_ticks,
        }),
        // A zombie has exited; only its parent's reaping is left.
        Ok(s) if s.exited() => Ok(Alive::Gone),
        Ok(_) => Ok(Alive::Same),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Alive::Gone),
        Err(e) => Err(KillError::Identity {
            pid,
            reason: e.to_string(),
        }),
    }
}

/// Ends the process `pid` that started at `start_time` (clock ticks since boot, as in
/// [`VmProcess::start_time`]): SIGTERM, wait up to `grace`, then SIGKILL. The identity
/// is re-checked right before every signal; a reused pid is never signalled.
pub fn kill(pid: u32, start_time: u64, grace: Duration) -> Result<KillOutcome, KillError> {
    kill_in(Path::new(super::processes::PROC), pid, start_time, grace)
}

fn kill_in(
    proc_root: &Path,
    pid: u32,
    start_time: u64,
    grace: Duration,
) -> Result<KillOutcome, KillError> {
    let raw = i32::try_from(pid).map_err(|_| KillError::InvalidPid(pid))?;
    if raw <= 1 {
        return Err(KillError::InvalidPid(pid));
    }
    let target = Pid::from_raw(raw);
    if let Alive::Gone = check(proc_root, pid, start_time)? {
        return Ok(KillOutcome::AlreadyGone);
    }
    let started = Instant::now();
    send(target, pid, Signal::SIGTERM)?;
    if wait_gone(proc_root, pid, start_time, grace)? {
        return Ok(KillOutcome::Terminated {
            after_ms: millis(started.elapsed()),
        });
    }
    if let Alive::Gone = check(proc_root, pid, start_time)? {
        return Ok(KillOutcome::Terminated {
            after_ms: millis(started.elapsed()),
        });
    }
    send(target, pid, Signal::SIGKILL)?;
    if wait_gone(proc_root, pid, start_time, KILL_WAIT)? {
        return Ok(KillOutcome::Killed {
            after_ms: millis(started.elapsed()),
        });
    }
    Err(KillError::StillAlive {
        pid,
        waited_ms: millis(KILL_WAIT),
    })
}

fn send(target: Pid, pid: u32, sig: Signal) -> Result<(), KillError> {
    match signal::kill(target, sig) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(errno) => Err(KillError::Signal {
            pid,
            signal: sig.as_str().to_string(),
            errno,
        }),
    }
}

/// Polls until the process is gone (or exited) or `limit` passes; a pid that now names
/// another process means ours is gone.
fn wait_gone(
    proc_root: &Path,
    pid: u32,
    start_time: u64,
    limit: Duration,
) -> Result<bool, KillError> {
    let deadline = Instant::now() + limit;
    loop {
        match check(proc_root, pid, start_time) {
            Ok(Alive::Gone) | Err(KillError::PidReused { .. }) => return Ok(true),
            Ok(Alive::Same) => {}
            Err(e) => return Err(e),
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(POLL);
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::ProcessKind;

    fn vp(uid: Option<&str>, ns: Option<&str>, name: Option<&str>) -> VmProcess {
        VmProcess {
            pid: 7,
            start_time: 1,
            kind: ProcessKind::Qemu,
            namespace: ns.map(Into::into),
            name: name.map(Into::into),
            uid: uid.map(Into::into),
            domain: None,
            parent_pid: None,
            comm: "qemu-kvm".into(),
            exe: None,
            cmdline: String::new(),
            cmdline_lossy: false,
            cmdline_readable: true,
            started_at_unix: 0,
            run_time_secs: 0,
        }
    }

    fn vmi(ns: &str, name: &str, uid: &str) -> VmiRef {
        VmiRef {
            namespace: ns.into(),
            name: name.into(),
            uid: uid.into(),
        }
    }

    #[test]
    fn orphan_table() {
        let procs = vec![
            vp(Some("u1"), Some("default"), Some("a")), // placed
            vp(Some("u2"), Some("default"), Some("b")), // uid not placed, name placed with other uid
            vp(None, Some("default"), Some("c")),       // name only, placed
            vp(None, Some("default"), Some("d")),       // name only, not placed
            vp(None, None, None),                       // unidentified: never an orphan
        ];
        let placed = vec![
            vmi("default", "a", "u1"),
            vmi("default", "b", "u9"),
            vmi("default", "c", "u3"),
        ];
        let orphans: Vec<Option<&str>> = find(&procs, &placed)
            .iter()
            .map(|p| p.name.as_deref())
            .collect();
        assert_eq!(orphans, vec![Some("b"), Some("d")]);
        assert!(find(&procs, &[]).len() == 4);
    }

    #[test]
    fn outcomes_and_errors_read_as_sentences() {
        assert_eq!(
            KillOutcome::AlreadyGone.to_string(),
            "already gone: no signal was needed"
        );
        assert_eq!(
            KillOutcome::Terminated { after_ms: 420 }.to_string(),
            "ended by SIGTERM after 0.4 s"
        );
        assert_eq!(
            KillOutcome::Killed { after_ms: 12_050 }.to_string(),
            "ignored SIGTERM for the grace period; ended by SIGKILL after 12.0 s"
        );
        let reused = KillError::PidReused {
            pid: 42,
            expected: 100,
            found: 200,
        };
        assert_eq!(
            reused.to_string(),
            "not signalled: pid 42 now belongs to another process (it started at tick 200 \
             after boot, the scanned one at tick 100)"
        );
        let denied = KillError::Signal {
            pid: 42,
            signal: "SIGTERM".into(),
            errno: Errno::EPERM,
        };
        assert_eq!(
            denied.to_string(),
            "cannot send SIGTERM to pid 42: Operation not permitted"
        );
        let stuck = KillError::StillAlive {
            pid: 42,
            waited_ms: 5000,
        };
        assert!(stuck
            .to_string()
            .starts_with("pid 42 is still alive 5.0 s after SIGKILL"));
        for e in [reused, denied, stuck, KillError::InvalidPid(1)] {
            assert!(!e.to_string().contains('{'), "{e}");
        }
    }

    #[test]
    fn refuses_init_and_zero() {
        assert_eq!(kill(0, 1, Duration::ZERO), Err(KillError::InvalidPid(0)));
        assert_eq!(kill(1, 1, Duration::ZERO), Err(KillError::InvalidPid(1)));
        assert_eq!(
            kill(u32::MAX, 1, Duration::ZERO),
            Err(KillError::InvalidPid(u32::MAX))
        );
    }
}
