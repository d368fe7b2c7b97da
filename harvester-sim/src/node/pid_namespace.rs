//! A private pid namespace per simulated node, so that one test's fake VM processes are
//! invisible to every other test and to whatever else runs on the machine.
//!
//! `unshare --pid --fork --mount-proc` starts the namespace's first process (it holds the
//! namespace open) with a mount namespace of its own whose `/proc` shows only this pid
//! namespace; every process of the node is started in it with `nsenter --target <that
//! process> --pid --mount`. vmrecover started that way reads the namespace's `/proc` as it
//! reads the host's with `hostPID: true`, and a host root whose `proc/self` links to
//! `/proc/self` names its own pid there. Dropping the namespace kills every process in
//! it (the kernel ends a pid namespace with its first process).
//!
//! Needs root (CAP_SYS_ADMIN) and util-linux's `unshare`/`nsenter`.

use std::ffi::OsStr;
use std::io;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A pid namespace (with its own `/proc`) that the processes of one simulated node run in.
pub struct PidNamespace {
    holder: Child,
    init: u32,
}

impl PidNamespace {
    /// Starts the namespace. Fails (with the reason) when not root or when util-linux's
    /// `unshare` cannot make it.
    pub fn new() -> io::Result<PidNamespace> {
        if !nix::unistd::geteuid().is_root() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "a private pid namespace needs root",
            ));
        }
        // setpriv: the namespace ends with the test process even when it is killed.
        let mut holder = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--", "unshare"])
            .args(["--pid", "--fork", "--mount-proc", "--propagation", "slave"])
            .args(["--kill-child", "--", "sleep", "infinity"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = first_child(holder.id()) {
                // The child is the namespace's pid 1 once it has exec'd `sleep`.
                if std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "sleep")
                {
                    return Ok(PidNamespace { holder, init: pid });
                }
            }
            if let Some(status) = holder.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = holder.stderr.take() {
                    let _ = io::Read::read_to_string(&mut e, &mut err);
                }
                return Err(io::Error::other(format!(
                    "unshare --pid --fork --mount-proc exited ({status}): {}",
                    err.trim()
                )));
            }
            if Instant::now() > deadline {
                let _ = holder.kill();
                return Err(io::Error::other(
                    "unshare did not start its namespace in 10 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A command that runs `program` inside the namespace (its `/proc` included).
    ///
    /// `nsenter` forks to enter a pid namespace and forwards no signal; `setpriv
    /// --pdeathsig KILL` makes the program die with it, so killing the returned command's
    /// child (`kill_on_drop`, `start_kill`) ends the program too. Other signals go to the
    /// program by its pid from [`PidNamespace::started_by`].
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("--target")
            .arg(self.init.to_string())
            .args(["--pid", "--mount", "--"])
            .args(["setpriv", "--pdeathsig", "KILL", "--"])
            .arg(program);
        c
    }

    /// As [`PidNamespace::command`], with `argv0` as the program's `argv[0]` (as KubeVirt's
    /// processes show it), through `exec -a`.
    pub fn command_with_argv0(&self, program: impl AsRef<OsStr>, argv0: &str) -> Command {
        let mut c = self.command("/bin/bash");
        c.args(["-c", "exec -a \"$0\" \"$@\"", argv0]).arg(program);
        c
    }

    /// The process that `nsenter` (pid `outer`) started in the namespace, by its pid
    /// outside the namespace; waits up to 10 s for it to be forked.
    pub fn started_by(outer: u32) -> Option<u32> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = first_child(outer) {
                return Some(pid);
            }
            if Instant::now() > deadline
                || !std::path::Path::new(&format!("/proc/{outer}")).exists()
            {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for PidNamespace {
    fn drop(&mut self) {
        // The namespace ends with its first process: the kernel kills every other one.
        let _ = kill(Pid::from_raw(self.init as i32), Signal::SIGKILL);
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// The first child of `pid` (`/proc/<pid>/task/<pid>/children`).
fn first_child(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
