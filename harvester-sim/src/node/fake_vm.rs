//! Fake VM processes: real processes (a tiny C program compiled with `cc` and copied
//! under the real executable names) with the command lines KubeVirt and libvirt give
//! virt-launcher and qemu. Started on the machine, or inside a [`PidNamespace`] so that
//! only the node that owns them sees them.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use super::pid_namespace::PidNamespace;

/// The executable names a node shows.
pub const MONITOR: &str = "virt-launcher-monitor";
/// virt-launcher.
pub const LAUNCHER: &str = "virt-launcher";
/// Harvester's qemu.
pub const QEMU: &str = "qemu-system-x86_64";
/// RHEL-style qemu.
pub const QEMU_KVM: &str = "qemu-kvm";

/// The fake process: prints `ready`, optionally holds a file open, exits on SIGTERM
/// unless told to ignore it (see the source's header).
const FAKE_VM_SOURCE: &str = include_str!("fake_vm_process.c");

/// Compiles the fake process once per test binary and copies it under every name.
/// Returns the directory holding the copies.
pub fn fake_bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("harvester-sim-fake-vm-{}", nix::unistd::geteuid()));
        std::fs::create_dir_all(&dir).expect("create fake binary dir");
        let me = std::process::id();
        let src = dir.join(format!("fake_vm_process.{me}.c"));
        std::fs::write(&src, FAKE_VM_SOURCE).expect("write the fake process's source");
        let built = dir.join(format!("fake_vm_process.{me}.tmp"));
        let status = Command::new("cc")
            .arg("-O2")
            .arg("-o")
            .arg(&built)
            .arg(&src)
            .status()
            .expect("run cc (the node tests need a C compiler: apt-get install gcc)");
        assert!(status.success(), "cc failed to build {}", src.display());
        for name in [MONITOR, LAUNCHER, QEMU, QEMU_KVM] {
            let tmp = dir.join(format!("{name}.{me}.tmp"));
            std::fs::copy(&built, &tmp).expect("copy fake binary");
            // rename is atomic: another test binary may be running the old copy.
            std::fs::rename(&tmp, dir.join(name)).expect("install fake binary");
        }
        let _ = std::fs::remove_file(&built);
        let _ = std::fs::remove_file(&src);
        dir
    })
}

/// Options for a fake process.
#[derive(Default, Clone)]
pub struct FakeOpts {
    /// Keep this path open.
    pub open: Option<PathBuf>,
    /// Ignore SIGTERM.
    pub ignore_term: bool,
    /// Exit right after starting.
    pub exit: bool,
    /// Exit this many microseconds after starting.
    pub exit_after_us: Option<u32>,
}

/// A running fake VM process; killed and reaped when dropped.
pub struct FakeProc {
    /// The child (`nsenter` when started in a [`PidNamespace`]).
    pub child: Child,
    /// The fake process's own pid on the machine (the child's, or the process `nsenter`
    /// started in the namespace).
    pid: u32,
}

impl FakeProc {
    /// Starts `exe_name` (one of the names above) with `argv0` and `args`, and waits
    /// until it reports ready.
    pub fn spawn(exe_name: &str, argv0: &str, args: &[OsString], opts: &FakeOpts) -> FakeProc {
        Self::spawn_in(None, exe_name, argv0, args, opts)
    }

    /// As [`FakeProc::spawn`], inside `node`'s pid namespace when there is one: then only
    /// processes of that namespace (the node's vmrecover runs) see it.
    pub fn spawn_in(
        node: Option<&PidNamespace>,
        exe_name: &str,
        argv0: &str,
        args: &[OsString],
        opts: &FakeOpts,
    ) -> FakeProc {
        let exe = fake_bin_dir().join(exe_name);
        let mut cmd = match node {
            Some(ns) => ns.command_with_argv0(&exe, argv0),
            None => {
                let mut c = Command::new(&exe);
                use std::os::unix::process::CommandExt;
                c.arg0(argv0);
                c
            }
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env_remove("FAKE_VM_OPEN")
            .env_remove("FAKE_VM_IGNORE_TERM")
            .env_remove("FAKE_VM_EXIT")
            .env_remove("FAKE_VM_EXIT_AFTER_US");
        if let Some(p) = &opts.open {
            cmd.env("FAKE_VM_OPEN", p);
        }
        if opts.ignore_term {
            cmd.env("FAKE_VM_IGNORE_TERM", "1");
        }
        if opts.exit {
            cmd.env("FAKE_VM_EXIT", "1");
        }
        if let Some(us) = opts.exit_after_us {
            cmd.env("FAKE_VM_EXIT_AFTER_US", us.to_string());
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", exe.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read ready line");
        let pid = match node {
            Some(_) => PidNamespace::started_by(child.id()).expect("nsenter started the fake"),
            None => child.id(),
        };
        let proc = FakeProc { child, pid };
        assert_eq!(line, "ready\n", "fake process did not start");
        proc
    }

    /// The fake process's pid on the machine (outside any namespace).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The pid the node sees it by: inside its pid namespace (`NSpid` in
    /// `/proc/<pid>/status`, innermost last), else [`FakeProc::pid`].
    pub fn node_pid(&self) -> u32 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("NSpid:"))
                    .and_then(|v| v.split_whitespace().last())
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(self.pid)
    }

    /// Whether the fake process has ended (reaped by its parent, or gone).
    pub fn has_exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }
}

impl Drop for FakeProc {
    fn drop(&mut self) {
        if self.pid != self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// virt-launcher(-monitor)'s arguments as virt-controller renders them.
pub fn launcher_args(namespace: &str, name: &str, uid: &str) -> Vec<OsString> {
    [
        "--qemu-timeout",
        "288s",
        "--name",
        name,
        "--uid",
        uid,
        "--namespace",
        namespace,
        "--kubevirt-share-dir",
        "/var/run/kubevirt",
        "--ephemeral-disk-dir",
        "/var/run/kubevirt-ephemeral-disks",
        "--container-disk-dir",
        "/var/run/kubevirt/container-disks",
        "--grace-period-seconds",
        "45",
        "--hook-sidecars",
        "0",
        "--ovmf-path",
        "/usr/share/OVMF",
        "--run-as-nonroot",
    ]
    .iter()
    .map(OsString::from)
    .collect()
}

/// qemu's arguments as libvirt renders them for a KubeVirt domain (abridged).
pub fn qemu_args(namespace: &str, name: &str, uid: &str) -> Vec<OsString> {
    let secret = format!(
        r#"{{"qom-type":"secret","id":"masterKey0","format":"raw","file":"/var/run/kubevirt-private/libvirt/qemu/lib/domain-1-{namespace}_{name}/master-key.aes"}}"#
    );
    let vnc = format!("vnc=unix:/var/run/kubevirt-private/{uid}/virt-vnc,audiodev=audio1");
    [
        "-name",
        &format!("guest={namespace}_{name},debug-threads=on"),
        "-S",
        "-object",
        &secret,
        "-machine",
        "pc-q35-rhel9.4.0,usb=off,dump-guest-core=off,memory-backend=pc.ram,acpi=on",
        "-accel",
        "kvm",
        "-m",
        "size=2097152k",
        "-uuid",
        "5a9fc181-957e-5c32-9e5a-2de5e9673531",
        "-no-user-config",
        "-nodefaults",
        "-chardev",
        "socket,id=charmonitor,fd=20,server=on,wait=off",
        "-audiodev",
        r#"{"id":"audio1","driver":"none"}"#,
        "-vnc",
        &vnc,
        "-sandbox",
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        "-msg",
        "timestamp=on",
    ]
    .iter()
    .map(OsString::from)
    .collect()
}

/// An argument with bytes that are not UTF-8.
pub fn non_utf8_arg() -> OsString {
    OsStr::from_bytes(b"-device-note=\xff\xfe\xfd").to_os_string()
}
