//! Process discovery (design §5): virt-launcher-monitor, virt-launcher and qemu
//! processes, each mapped to the VMI it serves from its command line.
//!
//! Processes are read with `sysinfo` from `/proc` of vmrecover's own pid namespace: on a
//! node that is the host's; in a DaemonSet it is the host's only with `hostPID: true`
//! (checked against `<host_root>/proc/1` when the host root is not `/`).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use sysinfo::{
    ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System, ThreadKind, UpdateKind,
};

use super::{cmdline, stat, VmProcess};
use crate::evidence::Gathered;

/// Where the process table is read (the pid namespace sysinfo sees).
pub const PROC: &str = "/proc";

/// One process as the scan saw it, before classification (kept small and owned so the
/// classification is testable without sysinfo).
#[derive(Debug, Clone)]
pub struct RawProcess {
    /// Process id.
    pub pid: u32,
    /// Parent pid.
    pub parent_pid: Option<u32>,
    /// Kernel `comm` (at most 15 bytes).
    pub comm: OsString,
    /// Executable path, when readable.
    pub exe: Option<std::path::PathBuf>,
    /// Arguments including `argv[0]`; empty for kernel threads, zombies and processes
    /// whose command line vanished or could not be read.
    pub cmd: Vec<OsString>,
    /// Start time, seconds since the epoch (sysinfo's, second resolution).
    pub start_epoch: u64,
    /// Seconds since the process started, at scan time.
    pub run_time_secs: u64,
}

/// Scans the process table and returns the VM processes.
pub fn scan(host_root: &Path) -> Gathered<Vec<VmProcess>> {
    if let Err(why) = check_pid_namespace(host_root) {
        return Gathered::unreadable("process table (/proc)", why);
    }
    if let Err(e) = std::fs::read_dir(PROC) {
        return Gathered::unreadable(PROC, format!("cannot list processes: {e}"));
    }
    let mut sys = System::new();
    sys.refresh_processes_specifics(
        ProcessesToUpdate::All,
        true,
        ProcessRefreshKind::nothing()
            .without_tasks()
            .with_cmd(UpdateKind::Always)
            .with_exe(UpdateKind::Always),
    );
    let boot = System::boot_time();
    let raw = sys.processes().values().filter_map(|p| {
        if p.thread_kind() == Some(ThreadKind::Kernel) {
            return None;
        }
        if matches!(p.status(), ProcessStatus::Zombie | ProcessStatus::Dead) {
            return None;
        }
        Some(RawProcess {
            pid: p.pid().as_u32(),
            parent_pid: p.parent().map(|pp| pp.as_u32()),
            comm: p.name().to_os_string(),
            exe: p.exe().map(Path::to_path_buf),
            cmd: p.cmd().to_vec(),
            start_epoch: p.start_time(),
            run_time_secs: p.run_time(),
        })
    });
    let candidates: Vec<VmProcess> = raw.filter_map(|r| classify(&r)).collect();
    drop(sys);
    let ticks = stat::ticks_per_second();
    let confirmed = candidates
        .into_iter()
        .filter_map(|p| confirm(Path::new(PROC), p, boot, ticks))
        .collect::<Vec<_>>();
    let mut confirmed = confirmed;
    confirmed.sort_by_key(|p| p.pid);
    Gathered::read(confirmed)
}

/// Turns a scanned process into a `VmProcess` when it is one (start time still unset).
pub fn classify(r: &RawProcess) -> Option<VmProcess> {
    let exe = r.exe.as_deref().map(|e| e.as_os_str().as_bytes());
    let argv0 = r.cmd.first().map(|a| a.as_bytes());
    let kind = cmdline::classify(exe, argv0, r.comm.as_bytes())?;
    let args: Vec<&[u8]> = r.cmd.iter().skip(1).map(|a| a.as_bytes()).collect();
    let id = cmdline::identity(kind, &args);
    let all: Vec<&[u8]> = r.cmd.iter().map(|a| a.as_bytes()).collect();
    let (line, lossy) = cmdline::display_line(&all);
    Some(VmProcess {
        pid: r.pid,
        start_time: 0,
        kind,
        namespace: id.namespace,
        name: id.name,
        uid: id.uid,
        domain: id.domain,
        parent_pid: r.parent_pid,
        comm: String::from_utf8_lossy(r.comm.as_bytes()).into_owned(),
        exe: r
            .exe
            .as_deref()
            .map(|e| String::from_utf8_lossy(e.as_os_str().as_bytes()).into_owned()),
        cmdline: line,
        cmdline_lossy: lossy,
        cmdline_readable: !r.cmd.is_empty(),
        started_at_unix: r.start_epoch,
        run_time_secs: r.run_time_secs,
    })
}

/// Reads the exact start time (clock ticks) of a candidate and checks it is still the
/// process sysinfo saw: a process that vanished since, exited, or whose pid was reused
/// (start second differs) is dropped.
fn confirm(proc_root: &Path, mut p: VmProcess, boot: u64, ticks: u64) -> Option<VmProcess> {
    let st = stat::read(proc_root, p.pid).ok()?;
    if st.exited() {
        return None;
    }
    let seen_since_boot = p.started_at_unix.saturating_sub(boot);
    let now_since_boot = st.start_ticks / ticks.max(1);
    if seen_since_boot.abs_diff(now_since_boot) > 2 {
        return None;
    }
    p.start_time = st.start_ticks;
    Some(p)
}

/// With a host root other than `/`, the processes sysinfo sees must be the host's:
/// `<host_root>/proc/self` must name vmrecover's own pid, which holds only when the
/// host's procfs shows the pid namespace vmrecover runs in (`hostPID: true`). This needs
/// no privilege (unlike reading `/proc/1/ns/pid`). Without a procfs under the host root
/// there is nothing to compare with and the check passes (the fd scan then reports its
/// own could-not-read).
fn check_pid_namespace(host_root: &Path) -> Result<(), String> {
    if host_root == Path::new("/") {
        return Ok(());
    }
    let self_link = host_root.join("proc/self");
    let seen = match std::fs::read_link(&self_link) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(format!(
                "cannot read {} to check the pid namespace: {e}",
                self_link.display()
            ))
        }
    };
    let own = std::process::id().to_string();
    if seen.as_os_str() != own.as_str() {
        return Err(format!(
            "vmrecover is pid {own} but the host's procfs ({}) sees it as {}: it runs in \
             another pid namespace and cannot see the host's processes (run the DaemonSet \
             with hostPID: true)",
            self_link.display(),
            seen.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::ProcessKind;

    fn raw(exe: &str, cmd: &[&[u8]]) -> RawProcess {
        RawProcess {
            pid: 10,
            parent_pid: Some(1),
            comm: OsString::from("x"),
            exe: Some(exe.into()),
            cmd: cmd
                .iter()
                .map(|c| std::ffi::OsStr::from_bytes(c).to_os_string())
                .collect(),
            start_epoch: 0,
            run_time_secs: 0,
        }
    }

    #[test]
    fn classify_qemu_with_non_utf8_argument() {
        let r = raw(
            "/usr/bin/qemu-system-x86_64",
            &[
                b"/usr/bin/qemu-system-x86_64",
                b"-name",
                b"guest=default_vm1,debug-threads=on",
                b"-bogus",
                b"\xff\xfe",
            ],
        );
        let p = classify(&r).expect("a qemu");
        assert_eq!(p.kind, ProcessKind::Qemu);
        assert_eq!(p.namespace.as_deref(), Some("default"));
        assert!(p.cmdline_lossy);
        assert!(p.cmdline.contains('\u{fffd}'));
    }

    #[test]
    fn unrelated_process_is_not_classified() {
        assert!(classify(&raw("/usr/bin/sleep", &[b"sleep", b"600"])).is_none());
    }

    #[test]
    fn vanished_process_is_not_confirmed() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        child.wait().expect("reap");
        let p = classify(&RawProcess {
            pid,
            ..raw("/usr/bin/virt-launcher", &[b"virt-launcher"])
        })
        .expect("classified");
        assert!(confirm(Path::new(PROC), p, 0, 100).is_none());
    }

    #[test]
    fn host_root_slash_skips_namespace_check() {
        assert!(check_pid_namespace(Path::new("/")).is_ok());
        let dir = tempfile::tempdir().expect("tempdir");
        // No procfs under the host root: nothing to compare.
        assert!(check_pid_namespace(dir.path()).is_ok());
    }

    #[test]
    fn different_namespace_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("proc")).expect("mkdir");
        // Our pid as another namespace would show it.
        let other = (std::process::id() + 1).to_string();
        std::os::unix::fs::symlink(other, dir.path().join("proc/self")).expect("symlink");
        let err = check_pid_namespace(dir.path()).expect_err("differs");
        assert!(err.contains("hostPID"), "{err}");
        // The machine's own procfs under a host root is the same namespace.
        let same = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink("/proc", same.path().join("proc")).expect("symlink");
        assert!(check_pid_namespace(same.path()).is_ok());
    }
}
