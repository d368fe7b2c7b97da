//! The `vmrecover agent` command line the benchmarks start: one node's agent, acting at
//! once inside `boot_window`, its log on stderr.

use std::path::Path;
use std::process::Stdio;

/// Where one agent's inputs live.
pub struct AgentPaths<'a> {
    /// Its kubeconfig.
    pub kubeconfig: &'a Path,
    /// Its state directory.
    pub state: &'a Path,
    /// Its host root (machine-id, boot id, /proc, /dev, /sys).
    pub host: &'a Path,
    /// Its journal directory.
    pub journal: &'a Path,
}

/// The command of an agent for `node` (`metrics`: `ADDR:PORT` or `off`), stdin and stdout
/// closed, stderr to `log`, killed when dropped.
pub fn command(
    bin: &str,
    node: &str,
    paths: &AgentPaths<'_>,
    boot_window: &str,
    metrics: &str,
    log: Stdio,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin);
    if bin != env!("CARGO_BIN_EXE_vmrecover") {
        // A wrapper (`BENCH_AGENT_WRAPPER`): it runs vmrecover with the arguments below.
        cmd.arg(env!("CARGO_BIN_EXE_vmrecover"));
    }
    cmd.arg("--kubeconfig")
        .arg(paths.kubeconfig)
        .args(["--node", node, "--log-target", "stderr", "--state-dir"])
        .arg(paths.state)
        .arg("--host-root")
        .arg(paths.host)
        .arg("--journal-dir")
        .arg(paths.journal)
        .args([
            "agent",
            "--act-on",
            "always",
            "--boot-window",
            boot_window,
            "--metrics-addr",
            metrics,
            "--stuck-after",
            "0s",
            "--controller-grace",
            "0s",
            "--max-vms",
            "1000",
            // Following recovered VMs is the operator's view, off in the benchmarks (issue 28).
            "--follow-for",
            "0s",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    cmd
}
