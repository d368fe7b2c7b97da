//! Process discovery (design §5): virt-launcher-monitor, virt-launcher and qemu
//! processes, each mapped to the VMI it serves from its command line.
//!
//! Processes are listed with `sysinfo` from `/proc` of vmrecover's own pid namespace: on a
//! node that is the host's; in a DaemonSet it is the host's only with `hostPID: true`
//! (checked against `<host_root>/proc/self` when the host root is not `/`).
//!
//! Identity: a process is its pid plus its start time in clock ticks since boot
//! (`/proc/<pid>/stat` field 22). Wall-clock times are never compared: right after a
//! power cut chrony steps the clock (`makestep`), and a step between two readings of the
//! boot time would make every live process look like another one. Each candidate is
//! re-read by vmrecover itself between two reads of its start ticks; a process whose
//! identity cannot be confirmed is reported as present with no VMI identity (it then
//! blocks every VMI and is never an orphan), never dropped.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sysinfo::{
    ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System, ThreadKind, UpdateKind,
};

use super::bounded::{self, ScanLimits};
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
    pub exe: Option<PathBuf>,
    /// Arguments including `argv[0]`; empty for kernel threads, zombies and processes
    /// whose command line vanished or could not be read.
    pub cmd: Vec<OsString>,
}

/// The clocks a scan shows times with. They only feed `started_at_unix` and
/// `run_time_secs` (for people); identity never depends on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanClock {
    /// Wall-clock time of the scan.
    pub now: SystemTime,
    /// Time since boot (`CLOCK_BOOTTIME`, the clock of `/proc/<pid>/stat` start times).
    pub since_boot: Duration,
}

impl ScanClock {
    /// The machine's clocks now.
    pub fn now() -> Self {
        ScanClock {
            now: SystemTime::now(),
            since_boot: crate::boot::clock::since_boot()
                .value()
                .copied()
                .unwrap_or_default(),
        }
    }
}

/// Scans the process table and returns the VM processes, with the default time limits.
pub fn scan(host_root: &Path) -> Gathered<Vec<VmProcess>> {
    scan_with(host_root, ScanLimits::default(), ScanClock::now())
}

/// Scans the process table and returns the VM processes.
///
/// Guarantees: returns within `limits.source` (a scan that does not finish is
/// `Unreadable`, naming what it was reading); with a host root other than `/`, the answer
/// is `Unreadable` unless `<host_root>/proc/self` proves vmrecover sees the host's pid
/// namespace; a live VM process is never left out because of `clock` (see the module
/// header).
pub fn scan_with(
    host_root: &Path,
    limits: ScanLimits,
    clock: ScanClock,
) -> Gathered<Vec<VmProcess>> {
    let root = host_root.to_path_buf();
    let task = format!("process table ({PROC})");
    match bounded::run(&task, limits.source, move |progress| {
        scan_now(&root, clock, progress)
    }) {
        Ok(g) => g,
        Err(t) => Gathered::unreadable(PROC, t.to_string()),
    }
}

fn scan_now(
    host_root: &Path,
    clock: ScanClock,
    progress: &bounded::Progress,
) -> Gathered<Vec<VmProcess>> {
    progress.reading(host_root.join("proc/self").display());
    if let Err((source, why)) = check_pid_namespace(host_root) {
        return Gathered::unreadable(source, why);
    }
    progress.reading(PROC);
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
        })
    });
    // sysinfo's view only picks the candidates; each is then read again below.
    let candidates: Vec<VmProcess> = raw.filter_map(|r| classify(&r)).collect();
    drop(sys);
    let ticks = stat::ticks_per_second();
    let mut confirmed: Vec<VmProcess> = candidates
        .into_iter()
        .filter_map(|p| {
            progress.reading(format_args!("{PROC}/{}", p.pid));
            confirm(Path::new(PROC), p, &clock, ticks)
        })
        .collect();
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
        started_at_unix: 0,
        run_time_secs: 0,
    })
}

/// How many times a candidate is re-read when its pid is reused while reading it.
const CONFIRM_ATTEMPTS: usize = 3;

/// Reads a candidate again, between two reads of its start ticks, and returns it as it
/// is now:
/// - `None` when the process is gone (no such pid, or it exited), or the pid now names a
///   process that is not a VM process (the one sysinfo saw has exited);
/// - the re-read process with `start_time` set, when both reads saw the same start ticks
///   (so its command line and its identity belong together);
/// - the candidate with its VMI identity cleared and `start_time` 0 when it cannot be
///   confirmed (an unreadable file, or a pid reused on every attempt): present, never
///   absent.
///
/// `clock` only sets the times shown to people.
pub fn confirm(
    proc_root: &Path,
    candidate: VmProcess,
    clock: &ScanClock,
    ticks: u64,
) -> Option<VmProcess> {
    let pid = candidate.pid;
    for _ in 0..CONFIRM_ATTEMPTS {
        let before = match stat::read(proc_root, pid) {
            Ok(s) => s,
            Err(e) if vanished(&e) => return None,
            Err(e) => return Some(unconfirmed(candidate, &e)),
        };
        if before.exited() {
            return None;
        }
        let raw = match read_raw(proc_root, pid) {
            Ok(r) => r,
            Err(e) if vanished(&e) => return None,
            Err(e) => return Some(unconfirmed(candidate, &e)),
        };
        let after = match stat::read(proc_root, pid) {
            Ok(s) => s,
            Err(e) if vanished(&e) => return None,
            Err(e) => return Some(unconfirmed(candidate, &e)),
        };
        if after.start_ticks != before.start_ticks {
            // The pid was reused while it was read: read the new process again.
            continue;
        }
        if after.exited() {
            return None;
        }
        let mut p = classify(&RawProcess {
            parent_pid: Some(after.ppid),
            ..raw
        })?;
        p.start_time = after.start_ticks;
        let age = clock
            .since_boot
            .saturating_sub(Duration::from_secs(after.start_ticks / ticks.max(1)));
        p.run_time_secs = age.as_secs();
        p.started_at_unix = clock
            .now
            .checked_sub(age)
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        return Some(p);
    }
    let e = io::Error::other(format!(
        "its pid was reused on each of {CONFIRM_ATTEMPTS} reads"
    ));
    Some(unconfirmed(candidate, &e))
}

/// A candidate whose identity could not be confirmed: kept (fail closed), with no VMI
/// identity so it blocks every VMI and is never taken for an orphan, and start time 0 so
/// the orphan killer never signals it.
fn unconfirmed(mut p: VmProcess, why: &io::Error) -> VmProcess {
    tracing::warn!(
        pid = p.pid,
        kind = p.kind.as_str(),
        "VM process identity cannot be confirmed ({why}): counted as present for every VMI"
    );
    p.namespace = None;
    p.name = None;
    p.uid = None;
    p.domain = None;
    p.start_time = 0;
    p.cmdline_readable = false;
    p
}

fn vanished(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(nix::libc::ESRCH)
}

/// Reads a process's `comm`, `exe` and command line from `<proc_root>/<pid>`.
fn read_raw(proc_root: &Path, pid: u32) -> io::Result<RawProcess> {
    let dir = proc_root.join(pid.to_string());
    let comm = std::fs::read(dir.join("comm"))?;
    let comm = comm.strip_suffix(b"\n").unwrap_or(&comm).to_vec();
    // Unreadable for kernel threads and without ptrace rights; sysinfo treats it the same.
    let exe = std::fs::read_link(dir.join("exe")).ok();
    let raw = std::fs::read(dir.join("cmdline"))?;
    let mut cmd: Vec<OsString> = raw
        .split(|&b| b == 0)
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect();
    if raw.last() == Some(&0) || raw.is_empty() {
        cmd.pop();
    }
    Ok(RawProcess {
        pid,
        parent_pid: None,
        comm: OsString::from_vec(comm),
        exe,
        cmd,
    })
}

/// The pid `<host_root>/proc/self` names: proof that `<host_root>/proc` is a procfs.
///
/// Every procfs has `self`; an empty directory, a copied tree or a bind mount of the
/// host's `/` that did not bring `/proc` along does not, and reading processes or open
/// files there would find none ("nothing held") without proving anything. `self` may be a
/// symlink into another procfs (`proc` itself a symlink to `/proc`, or `proc/self` to
/// `/proc/self`): it is resolved.
///
/// The error names the path and why, for `Unreadable` evidence.
pub fn procfs_self(host_root: &Path) -> Result<u32, (String, String)> {
    let link = host_root.join("proc/self");
    let source = link.display().to_string();
    let target = match std::fs::read_link(&link) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err((
                source,
                format!(
                    "missing: {} is not a procfs (mount the host's /proc there, e.g. the host's / \
                     recursively)",
                    host_root.join("proc").display()
                ),
            ))
        }
        Err(e) => return Err((source, format!("cannot read the link: {e}"))),
    };
    if let Some(pid) = target.to_str().and_then(|t| t.parse().ok()) {
        return Ok(pid);
    }
    let resolved = std::fs::canonicalize(&link)
        .map_err(|e| (source.clone(), format!("cannot resolve the link: {e}")))?;
    resolved
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            (
                source,
                format!(
                    "points to {}, not to a process: not a procfs",
                    resolved.display()
                ),
            )
        })
}

/// With a host root other than `/`, the processes sysinfo sees must be the host's:
/// `<host_root>/proc/self` must name vmrecover's own pid, which holds only when the
/// host's procfs shows the pid namespace vmrecover runs in (`hostPID: true`). This needs
/// no privilege (unlike reading `/proc/1/ns/pid`). A host root without a procfs proves
/// nothing and is an error naming the path.
fn check_pid_namespace(host_root: &Path) -> Result<(), (String, String)> {
    if host_root == Path::new("/") {
        return Ok(());
    }
    let seen = procfs_self(host_root)?;
    let own = std::process::id();
    if seen != own {
        return Err((
            host_root.join("proc/self").display().to_string(),
            format!(
                "vmrecover is pid {own} but the host's procfs sees it as {seen}: it runs in \
                 another pid namespace and cannot see the host's processes (run the DaemonSet \
                 with hostPID: true)"
            ),
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
        assert!(confirm(Path::new(PROC), p, &ScanClock::now(), 100).is_none());
    }

    /// A real process that classifies as qemu: `sh` copied under the name `qemu-kvm`,
    /// waiting on a `sleep` (extra arguments are the shell's positional parameters).
    struct FakeQemu {
        child: std::process::Child,
        _dir: tempfile::TempDir,
    }

    impl FakeQemu {
        fn start(args: &[&str]) -> FakeQemu {
            let dir = tempfile::tempdir().expect("tempdir");
            let exe = dir.path().join("qemu-kvm");
            std::fs::copy("/bin/sh", &exe).expect("copy sh");
            let mut cmd = std::process::Command::new(&exe);
            cmd.args(["-c", "sleep 30; exit 0"]).args(args);
            let child = cmd.spawn().expect("spawn qemu-kvm");
            // Wait until the exec has finished: the kernel sets the new comm before the
            // new command line, which reads empty in between.
            let cmdline = format!("{PROC}/{}/cmdline", child.id());
            for _ in 0..1000 {
                if std::fs::read(&cmdline).is_ok_and(|c| c.starts_with(exe.as_os_str().as_bytes()))
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            FakeQemu { child, _dir: dir }
        }
    }

    impl Drop for FakeQemu {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn candidate(pid: u32) -> VmProcess {
        classify(&RawProcess {
            pid,
            ..raw("/usr/libexec/qemu-kvm", &[b"/usr/libexec/qemu-kvm"])
        })
        .expect("classified")
    }

    /// Hole 3: the old identity check compared sysinfo's wall-clock start time with the
    /// boot time read a moment later; a clock step in between (chrony `makestep` after an
    /// outage) dropped every live VM process. The identity now ignores the wall clock.
    #[test]
    fn a_clock_step_does_not_hide_a_live_process() {
        let q = FakeQemu::start(&["-name", "guest=default_vm1,debug-threads=on"]);
        let pid = q.child.id();
        let ticks = stat::read(Path::new(PROC), pid).expect("stat").start_ticks;
        let real = ScanClock::now();
        for (what, clock) in [
            ("no step", real),
            (
                "stepped 1 h forward",
                ScanClock {
                    now: real.now + Duration::from_secs(3600),
                    ..real
                },
            ),
            (
                "stepped 3 days back",
                ScanClock {
                    now: real.now - Duration::from_secs(3 * 86_400),
                    ..real
                },
            ),
        ] {
            let p = confirm(
                Path::new(PROC),
                candidate(pid),
                &clock,
                stat::ticks_per_second(),
            )
            .unwrap_or_else(|| panic!("{what}: live process dropped"));
            assert_eq!(p.start_time, ticks, "{what}");
            assert_eq!(
                p.name.as_deref(),
                Some("vm1"),
                "{what}: re-read identity: {p:?}"
            );
            // Only the shown start time moves with the wall clock.
            let shown = clock
                .now
                .duration_since(SystemTime::UNIX_EPOCH)
                .expect("epoch");
            assert!(p.started_at_unix.abs_diff(shown.as_secs()) <= p.run_time_secs + 1);
        }
    }

    /// A process whose files cannot be read is present with no identity, never absent.
    #[test]
    fn an_unconfirmable_process_counts_as_present_for_every_vmi() {
        let proc_root = tempfile::tempdir().expect("tempdir");
        let dir = proc_root.path().join("4242");
        std::fs::create_dir_all(dir.join("cmdline")).expect("mkdir");
        std::fs::write(dir.join("comm"), "qemu-kvm\n").expect("comm");
        std::fs::write(
            dir.join("stat"),
            "4242 (qemu-kvm) S 1 4242 4242 0 -1 4194560 1 0 0 0 1 1 0 0 20 0 3 0 987654 1 1 1\n",
        )
        .expect("stat");
        let mut c = candidate(4242);
        c.uid = Some("u-1".into());
        // `cmdline` is a directory: reading it fails with something other than "gone".
        let p = confirm(proc_root.path(), c.clone(), &ScanClock::now(), 100)
            .expect("present, not dropped");
        assert!(!p.has_identity(), "{p:?}");
        assert_eq!(p.start_time, 0, "never signalled by the orphan killer");
        // An unparsable stat: the same.
        std::fs::write(dir.join("stat"), "garbage").expect("stat");
        let p = confirm(proc_root.path(), c, &ScanClock::now(), 100).expect("present");
        assert!(!p.has_identity());
        // Gone is gone.
        std::fs::remove_dir_all(&dir).expect("rm");
        assert!(confirm(proc_root.path(), candidate(4242), &ScanClock::now(), 100).is_none());
    }

    #[test]
    fn host_root_slash_skips_namespace_check() {
        assert!(check_pid_namespace(Path::new("/")).is_ok());
    }

    /// Hole 4: a host root without a procfs proved nothing but passed.
    #[test]
    fn a_host_root_without_procfs_is_refused_naming_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (source, why) = check_pid_namespace(dir.path()).expect_err("no procfs");
        assert_eq!(source, dir.path().join("proc/self").display().to_string());
        assert!(why.contains("not a procfs"), "{why}");
        // An empty proc directory: the same.
        std::fs::create_dir(dir.path().join("proc")).expect("mkdir");
        assert!(check_pid_namespace(dir.path()).is_err());
        let g = scan(dir.path());
        let err = g.as_result().expect_err("unreadable").to_string();
        assert!(err.contains("proc/self"), "{err}");
    }

    #[test]
    fn different_namespace_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("proc")).expect("mkdir");
        // Our pid as another namespace would show it.
        let other = (std::process::id() + 1).to_string();
        std::os::unix::fs::symlink(other, dir.path().join("proc/self")).expect("symlink");
        let (_, err) = check_pid_namespace(dir.path()).expect_err("differs");
        assert!(err.contains("hostPID"), "{err}");
        // The machine's own procfs under a host root is the same namespace.
        let same = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink("/proc", same.path().join("proc")).expect("symlink");
        assert!(check_pid_namespace(same.path()).is_ok());
        // So is a tree whose `proc/self` points into it.
        let tree = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(tree.path().join("proc")).expect("mkdir");
        std::os::unix::fs::symlink("/proc/self", tree.path().join("proc/self")).expect("link");
        assert_eq!(procfs_self(tree.path()), Ok(std::process::id()));
        assert!(check_pid_namespace(tree.path()).is_ok());
    }
}
