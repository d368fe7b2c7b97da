//! State files carry a format version (issue 25, "Upgrade, rollback"): the files the
//! previous format wrote (`tests/fixtures/state/v1`) are read by this binary, and a file a
//! newer vmrecover wrote is refused clearly — the message names the file, the version
//! found, the versions this binary reads and what to do — while the file stays as it is
//! and nothing changes, as for a corrupt intents file.

use crate::e2e_support::Env;

/// The golden files of the previous format, copied into `env`'s state directory.
fn previous_format_state(env: &Env) {
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/state/v1");
    for file in [
        "recovery-intents.json",
        "boot-records.json",
        "last-run.json",
        "agent-status.json",
    ] {
        std::fs::copy(golden.join(file), env.state_path(file)).expect("copy golden file");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_files_of_the_previous_format_are_read_by_this_binary() {
    let env = Env::power_loss().await;
    previous_format_state(&env);
    let status = env.run(&["status", "--output", "json"]).await;
    let all = status.all();
    assert!(!all.contains("format version"), "{all}");
    assert!(!all.contains("not a vmrecover"), "{all}");
    let json = status.json();
    // The run report and the agent status of the previous format are shown.
    assert_eq!(json["last_run"]["value"]["mode"], "agent", "{json:#}");
    assert_eq!(json["agent"]["value"]["pid"], 4711, "{json:#}");
    // The intents of format 1 are read: the plan is not refused for them.
    let run = env
        .run(&[
            "run",
            "--dry-run",
            "--stuck-after",
            "0s",
            "--output",
            "json",
        ])
        .await;
    let plan = run.json();
    assert!(plan["refused"].is_null(), "{}", run.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intents_file_of_a_newer_format_stops_every_change_and_is_kept() {
    let env = Env::power_loss().await;
    let newer = br#"{"version": 3, "intents": {"by_vm": {}}, "journal": []}"#;
    let path = env.state_path("recovery-intents.json");
    std::fs::write(&path, newer).expect("write");
    let run = env
        .run(&["run", "--yes", "--stuck-after", "0s", "--output", "json"])
        .await;
    assert_eq!(run.code, 1, "{}", run.all());
    let all = run.all();
    for part in [
        path.display().to_string(),
        "format version 3".to_string(),
        "version 1 to 2".to_string(),
        "newer vmrecover".to_string(),
        "docs/install.md#rollback".to_string(),
    ] {
        assert!(all.contains(&part), "{part} in {all}");
    }
    let writes: Vec<_> = env
        .sim
        .mutating_requests()
        .into_iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    assert_eq!(std::fs::read(&path).expect("read"), newer);
}
