//! Runs an external reader (journalctl) with bounded run time and output.
//!
//! The journal can be large and a damaged one can make journalctl slow: every run has a
//! deadline, after which the child is killed, and a cap on bytes (and optionally lines)
//! of stdout, after which reading stops and the child is killed. Stderr is kept up to a
//! small cap for the reason shown to the operator.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bounds for one run.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Kill the child after this long.
    pub timeout: Duration,
    /// Stop reading stdout after this many bytes.
    pub max_bytes: usize,
    /// Stop reading stdout after this many lines, when set.
    pub max_lines: Option<usize>,
}

/// What a bounded run produced.
#[derive(Debug)]
pub struct Output {
    /// Stdout as read (whole lines when a cap was hit).
    pub stdout: Vec<u8>,
    /// The first few KiB of stderr, lossily decoded.
    pub stderr: String,
    /// The exit status; `None` when we killed the child after a cap.
    pub status: Option<ExitStatus>,
    /// Reading stopped at a byte or line cap.
    pub capped: bool,
}

/// Why a run produced nothing usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// The program is not installed (not in `PATH`).
    NotFound(String),
    /// The program could not be started.
    Spawn(String),
    /// The program ran past the deadline and was killed.
    TimedOut(Duration),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::NotFound(p) => write!(f, "{p} is not installed (not found in PATH)"),
            RunError::Spawn(e) => write!(f, "could not be started: {e}"),
            RunError::TimedOut(d) => write!(f, "did not finish within {d:?} and was killed"),
        }
    }
}

const STDERR_CAP: usize = 8 * 1024;

/// Runs `program args…` within `limits`.
pub fn run(program: &str, args: &[OsString], limits: Limits) -> Result<Output, RunError> {
    let mut child = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .env("SYSTEMD_COLORS", "0")
        .env("SYSTEMD_PAGER", "")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RunError::NotFound(program.to_string()),
            _ => RunError::Spawn(e.to_string()),
        })?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let capped_flag = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&capped_flag);
    let out_reader = std::thread::spawn(move || read_stdout(stdout, limits, &flag));
    let err_reader = std::thread::spawn(move || read_stderr(stderr));

    let deadline = Instant::now() + limits.timeout;
    let mut status = None;
    let mut timed_out = false;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => {
                status = Some(s);
                break;
            }
            Ok(None) if capped_flag.load(Ordering::Acquire) => break,
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                break;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => break,
        }
    }
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    let capped = capped_flag.load(Ordering::Acquire);
    if timed_out && !capped {
        return Err(RunError::TimedOut(limits.timeout));
    }
    Ok(Output {
        stdout,
        stderr,
        status,
        capped,
    })
}

fn read_stdout(
    pipe: Option<std::process::ChildStdout>,
    limits: Limits,
    capped: &AtomicBool,
) -> Vec<u8> {
    let Some(pipe) = pipe else {
        return Vec::new();
    };
    let mut reader = BufReader::new(pipe);
    let mut out = Vec::new();
    let mut lines = 0usize;
    loop {
        let room = limits.max_bytes.saturating_sub(out.len());
        if room == 0 || limits.max_lines.is_some_and(|max| lines >= max) {
            capped.store(true, Ordering::Release);
            return out;
        }
        let before = out.len();
        let mut limited = (&mut reader).take(room as u64);
        match limited.read_until(b'\n', &mut out) {
            Ok(0) => return out,
            Ok(_) => {
                if out.last() != Some(&b'\n') && out.len() - before == room {
                    // Hit the byte cap mid-line: drop the partial line.
                    out.truncate(before);
                    capped.store(true, Ordering::Release);
                    return out;
                }
                lines += 1;
            }
            Err(_) => return out,
        }
    }
}

fn read_stderr(pipe: Option<std::process::ChildStderr>) -> String {
    let Some(mut pipe) = pipe else {
        return String::new();
    };
    let mut kept = Vec::new();
    let _ = (&mut pipe).take(STDERR_CAP as u64).read_to_end(&mut kept);
    // Drain the rest so the child never blocks on a full stderr pipe.
    let _ = std::io::copy(&mut pipe, &mut std::io::sink());
    String::from_utf8_lossy(&kept).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(timeout_ms: u64, max_bytes: usize, max_lines: Option<usize>) -> Limits {
        Limits {
            timeout: Duration::from_millis(timeout_ms),
            max_bytes,
            max_lines,
        }
    }

    fn sh(script: &str) -> Vec<OsString> {
        vec!["-c".into(), script.into()]
    }

    #[test]
    fn reads_stdout_stderr_and_status() {
        let out = run(
            "sh",
            &sh("echo one; echo two; echo oops >&2; exit 3"),
            limits(10_000, 1 << 20, None),
        )
        .unwrap();
        assert_eq!(out.stdout, b"one\ntwo\n");
        assert_eq!(out.stderr, "oops\n");
        assert_eq!(out.status.and_then(|s| s.code()), Some(3));
        assert!(!out.capped);
    }

    #[test]
    fn endless_output_is_capped_by_lines_and_bytes() {
        let out = run("yes", &[], limits(10_000, 1 << 20, Some(10))).unwrap();
        assert!(out.capped);
        assert_eq!(out.stdout, b"y\n".repeat(10));
        let out = run("yes", &["abcdefg".into()], limits(10_000, 20, None)).unwrap();
        assert!(out.capped);
        assert_eq!(out.stdout, b"abcdefg\nabcdefg\n");
    }

    #[test]
    fn a_hanging_child_is_killed_at_the_deadline() {
        let err = run("sleep", &["30".into()], limits(200, 1024, None)).unwrap_err();
        assert_eq!(err, RunError::TimedOut(Duration::from_millis(200)));
    }

    #[test]
    fn a_missing_program_is_named() {
        let err = run("vmrecover-no-such-program", &[], limits(1000, 1024, None)).unwrap_err();
        assert!(err
            .to_string()
            .contains("vmrecover-no-such-program is not installed"));
    }
}
