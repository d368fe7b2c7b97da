//! Process discovery against real processes whose exe, comm and argv look as on a node.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use harvester_sim::node::*;
use vmrecover::node::{self, orphans, NodeOptions, ProcessKind, VmProcess};

const UID_A: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const UID_B: &str = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a";

fn scan() -> Vec<VmProcess> {
    let facts = node::gather(&NodeOptions {
        host_root: "/".into(),
    });
    facts
        .processes
        .value()
        .cloned()
        .unwrap_or_else(|| panic!("process table unreadable: {:?}", facts.processes))
}

fn find(procs: &[VmProcess], pid: u32) -> &VmProcess {
    procs
        .iter()
        .find(|p| p.pid == pid)
        .unwrap_or_else(|| panic!("pid {pid} not found among {procs:#?}"))
}

#[test]
fn discovers_and_maps_launchers_and_qemu() {
    let monitor = FakeProc::spawn(
        MONITOR,
        "/usr/bin/virt-launcher-monitor",
        &launcher_args("default", "vm-web-01", UID_A),
        &FakeOpts::default(),
    );
    let launcher = FakeProc::spawn(
        LAUNCHER,
        "/usr/bin/virt-launcher",
        &launcher_args("default", "vm-web-01", UID_A),
        &FakeOpts::default(),
    );
    let qemu = FakeProc::spawn(
        QEMU,
        "/usr/bin/qemu-system-x86_64",
        &qemu_args("default", "vm-web-01", UID_A),
        &FakeOpts::default(),
    );
    let mut odd_args = qemu_args("team-b", "db_primary", UID_B);
    odd_args.push(non_utf8_arg());
    let qemu_kvm = FakeProc::spawn(
        QEMU_KVM,
        "/usr/libexec/qemu-kvm",
        &odd_args,
        &FakeOpts::default(),
    );

    let procs = scan();

    let m = find(&procs, monitor.pid());
    assert_eq!(m.kind, ProcessKind::LauncherMonitor);
    assert_eq!(m.comm, "virt-launcher-m", "comm is truncated to 15 bytes");
    assert_eq!(
        (m.namespace.as_deref(), m.name.as_deref(), m.uid.as_deref()),
        (Some("default"), Some("vm-web-01"), Some(UID_A))
    );
    assert!(m
        .exe
        .as_deref()
        .is_some_and(|e| e.ends_with("/virt-launcher-monitor")));
    assert_eq!(m.parent_pid, Some(std::process::id()));

    let l = find(&procs, launcher.pid());
    assert_eq!(l.kind, ProcessKind::Launcher);
    assert_eq!(l.uid.as_deref(), Some(UID_A));

    let q = find(&procs, qemu.pid());
    assert_eq!(q.kind, ProcessKind::Qemu);
    assert_eq!(q.comm, "qemu-system-x86");
    assert_eq!(
        (q.namespace.as_deref(), q.name.as_deref(), q.uid.as_deref()),
        (Some("default"), Some("vm-web-01"), Some(UID_A))
    );
    assert_eq!(q.domain.as_deref(), Some("default_vm-web-01"));
    assert!(q
        .cmdline
        .starts_with("/usr/bin/qemu-system-x86_64 -name guest=default_vm-web-01"));
    assert!(!q.cmdline_lossy);

    let k = find(&procs, qemu_kvm.pid());
    assert_eq!(k.kind, ProcessKind::Qemu);
    assert_eq!(
        (k.namespace.as_deref(), k.name.as_deref(), k.uid.as_deref()),
        (Some("team-b"), Some("db_primary"), Some(UID_B)),
        "split at the first underscore"
    );
    assert!(k.cmdline_lossy, "non-UTF-8 argument is flagged");
    assert!(k.cmdline.contains('\u{fffd}'));

    // The identity is the exact start time from /proc/<pid>/stat.
    for p in [&monitor, &launcher, &qemu, &qemu_kvm] {
        let st = node::stat::read(Path::new("/proc"), p.pid()).expect("stat");
        assert_eq!(find(&procs, p.pid()).start_time, st.start_ticks);
    }

    // The planner's questions.
    let facts = node::NodeFacts {
        processes: vmrecover::evidence::Gathered::read(procs.clone()),
        ..node::gather(&NodeOptions {
            host_root: "/".into(),
        })
    };
    let for_a: Vec<u32> = facts
        .processes_for("default", "vm-web-01", UID_A)
        .expect("readable")
        .iter()
        .map(|p| p.pid)
        .collect();
    for pid in [monitor.pid(), launcher.pid(), qemu.pid()] {
        assert!(for_a.contains(&pid), "{pid} belongs to vm-web-01");
    }
    assert!(!for_a.contains(&qemu_kvm.pid()));

    let placed = vec![orphans::VmiRef {
        namespace: "default".into(),
        name: "vm-web-01".into(),
        uid: UID_A.into(),
    }];
    let ours = [monitor.pid(), launcher.pid(), qemu.pid(), qemu_kvm.pid()];
    let orphan_pids: Vec<u32> = orphans::find(&procs, &placed)
        .iter()
        .map(|p| p.pid)
        .filter(|pid| ours.contains(pid))
        .collect();
    assert_eq!(orphan_pids, vec![qemu_kvm.pid()]);
}

#[test]
fn command_line_alone_does_not_make_a_vm_process() {
    // A shell whose command line mentions a VMI, but whose exe, argv[0] and comm are not
    // a launcher's or qemu's (like `grep virt-launcher` or an operator's script).
    const UID_X: &str = "11111111-2222-4333-8444-555555555555";
    let script = format!(
        "sleep 30 # --name vm-x --uid {UID_X} -vnc vnc=unix:/var/run/kubevirt-private/{UID_X}/virt-vnc"
    );
    let mut child = std::process::Command::new("sh")
        .args(["-c", &script])
        .spawn()
        .expect("spawn sh");
    let procs = scan();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        procs.iter().all(|p| p.uid.as_deref() != Some(UID_X)),
        "{procs:#?}"
    );
}

#[test]
fn processes_exiting_mid_scan_do_not_matter() {
    let stable = FakeProc::spawn(
        QEMU,
        "/usr/bin/qemu-system-x86_64",
        &qemu_args("default", "steady", UID_A),
        &FakeOpts::default(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let spawned = Arc::new(AtomicUsize::new(0));
    let churn = {
        let stop = Arc::clone(&stop);
        let spawned = Arc::clone(&spawned);
        std::thread::spawn(move || {
            let mut round: u32 = 0;
            let mut alive = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                // Processes that live 0–8 ms: they start and vanish while scans run.
                round = round.wrapping_add(1);
                let p = FakeProc::spawn(
                    QEMU,
                    "/usr/bin/qemu-system-x86_64",
                    &qemu_args("default", "flicker", UID_B),
                    &FakeOpts {
                        exit_after_us: Some(round % 9 * 1000),
                        ..FakeOpts::default()
                    },
                );
                alive.push(p);
                if alive.len() > 8 {
                    // Reaps the oldest (it has exited by now or is killed).
                    alive.remove(0);
                }
                spawned.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut seen_flicker = 0;
    for _ in 0..40 {
        let procs = scan();
        assert!(
            procs.iter().any(|p| p.pid == stable.pid()),
            "stable process always found"
        );
        for p in procs
            .iter()
            .filter(|p| p.name.as_deref() == Some("flicker"))
        {
            seen_flicker += 1;
            // Anything reported is what its command line said, never another VMI's: a
            // process caught while it exits may show its name without the UID part of its
            // command line, which still blocks its VMI by namespace/name (never less).
            assert!(p.uid.is_none() || p.uid.as_deref() == Some(UID_B), "{p:?}");
            assert_eq!(p.namespace.as_deref(), Some("default"));
            assert!(p.start_time > 0);
        }
    }
    stop.store(true, Ordering::Relaxed);
    churn.join().expect("churn thread");
    assert!(
        spawned.load(Ordering::Relaxed) > 0,
        "processes were started and exited during the scans"
    );
    eprintln!(
        "{} short-lived processes ran during 40 scans; {seen_flicker} were caught alive",
        spawned.load(Ordering::Relaxed)
    );
}

/// Hole 3: a clock step during the scan (chrony `makestep` right after an outage) must
/// not make live VM processes disappear. The wall clock the scan sees is injected: an hour
/// ahead and three days behind the machine's. (The old scan compared sysinfo's wall-clock
/// start time with a boot time read a moment later and dropped every process when they
/// disagreed by more than 2 s.)
#[test]
fn a_clock_step_during_the_scan_hides_no_vm_process() {
    use std::time::Duration;
    use vmrecover::node::bounded::ScanLimits;
    use vmrecover::node::processes::{self, ScanClock};

    let qemu = FakeProc::spawn(
        QEMU,
        "/usr/bin/qemu-system-x86_64",
        &qemu_args("default", "vm-clock", UID_A),
        &FakeOpts::default(),
    );
    let ticks = node::stat::read(Path::new("/proc"), qemu.pid())
        .expect("stat")
        .start_ticks;
    let real = ScanClock::now();
    for (what, clock) in [
        (
            "+1 h",
            ScanClock {
                now: real.now + Duration::from_secs(3600),
                ..real
            },
        ),
        (
            "-3 days",
            ScanClock {
                now: real.now - Duration::from_secs(3 * 86_400),
                ..real
            },
        ),
    ] {
        let procs = processes::scan_with(Path::new("/"), ScanLimits::default(), clock);
        let procs = procs.value().unwrap_or_else(|| panic!("{what}: {procs:?}"));
        let q = find(procs, qemu.pid());
        assert_eq!(q.start_time, ticks, "{what}: identity is the start ticks");
        assert_eq!(q.uid.as_deref(), Some(UID_A), "{what}");
    }
}

/// Hole 4: a host root without a procfs (`proc/self` missing) used to pass the hostPID
/// check; it is now could-not-read, naming the path.
#[test]
fn a_host_root_without_procfs_makes_processes_unreadable() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("proc/1")).expect("mkdir");
    let facts = node::gather(&NodeOptions {
        host_root: dir.path().to_path_buf(),
    });
    let err = facts
        .processes
        .as_result()
        .expect_err("unreadable")
        .to_string();
    assert!(
        err.contains(&dir.path().join("proc/self").display().to_string()),
        "{err}"
    );
    let err = facts
        .processes_for("default", "vm", UID_A)
        .expect_err("cannot prove")
        .to_string();
    assert!(err.contains("not a procfs"), "{err}");
}
