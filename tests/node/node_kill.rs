//! The orphan killer on real processes: SIGTERM, grace, SIGKILL, and the pid-reuse guard.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use harvester_sim::node::*;
use vmrecover::node::orphans::{self, KillError, KillOutcome};
use vmrecover::node::stat;

const UID: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

fn start_ticks(pid: u32) -> u64 {
    stat::read(Path::new("/proc"), pid)
        .expect("stat")
        .start_ticks
}

fn qemu(opts: FakeOpts) -> FakeProc {
    FakeProc::spawn(
        QEMU,
        "/usr/bin/qemu-system-x86_64",
        &qemu_args("default", "orphan", UID),
        &opts,
    )
}

#[test]
fn sigterm_ends_a_cooperative_process() {
    let mut p = qemu(FakeOpts::default());
    let outcome =
        orphans::kill(p.pid(), start_ticks(p.pid()), Duration::from_secs(10)).expect("killed");
    assert!(
        matches!(outcome, KillOutcome::Terminated { .. }),
        "{outcome:?}"
    );
    let status = p.child.wait().expect("reap");
    assert_eq!(status.signal(), Some(libc_sigterm()));
}

#[test]
fn sigkill_after_grace_when_sigterm_is_ignored() {
    let mut p = qemu(FakeOpts {
        ignore_term: true,
        ..FakeOpts::default()
    });
    let outcome =
        orphans::kill(p.pid(), start_ticks(p.pid()), Duration::from_millis(300)).expect("killed");
    assert!(matches!(outcome, KillOutcome::Killed { .. }), "{outcome:?}");
    let status = p.child.wait().expect("reap");
    assert_eq!(status.signal(), Some(libc_sigkill()));
}

#[test]
fn changed_start_time_is_refused_and_nothing_is_sent() {
    let mut p = qemu(FakeOpts::default());
    let real = start_ticks(p.pid());
    let err = orphans::kill(p.pid(), real + 1, Duration::from_millis(100)).expect_err("refused");
    assert_eq!(
        err,
        KillError::PidReused {
            pid: p.pid(),
            expected: real + 1,
            found: real
        }
    );
    assert!(
        p.child.try_wait().expect("try_wait").is_none(),
        "still running: no signal was sent"
    );
}

#[test]
fn a_process_gone_before_the_kill_is_reported_as_such() {
    let mut p = qemu(FakeOpts::default());
    let (pid, ticks) = (p.pid(), start_ticks(p.pid()));
    p.child.kill().expect("kill");
    p.child.wait().expect("reap");
    assert_eq!(
        orphans::kill(pid, ticks, Duration::from_millis(100)),
        Ok(KillOutcome::AlreadyGone)
    );
}

fn libc_sigterm() -> i32 {
    nix::sys::signal::Signal::SIGTERM as i32
}

fn libc_sigkill() -> i32 {
    nix::sys::signal::Signal::SIGKILL as i32
}
