//! Boot records through the binary: `vmrecover boot-record start|stop` over several
//! (simulated) boots, then `vmrecover status`, as the service and an operator run them.

use crate::boot_support::*;
use serde_json::Value;

const BOOT_1: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const BOOT_2: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";
const BOOT_3: &str = "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3";
const BOOT_4: &str = "d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4";

struct Node {
    tmp: tempfile::TempDir,
    state: std::path::PathBuf,
    root: std::path::PathBuf,
    journal: std::path::PathBuf,
}

/// A node with no journal (an empty journal directory): only the records can decide.
fn node() -> Node {
    let tmp = tempfile::tempdir().unwrap();
    let root = host_root(&tmp.path().join("host"), BOOT_1, MACHINE_ID);
    let journal = tmp.path().join("journal");
    std::fs::create_dir_all(&journal).unwrap();
    Node {
        state: tmp.path().join("state"),
        root,
        journal,
        tmp,
    }
}

fn status(n: &Node) -> Value {
    status_json(&n.state, &n.journal, &n.root, &[])
}

fn ends(boot: &Value) -> Vec<(String, String)> {
    boot["history"]["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["boot_id"].as_str().unwrap().to_string(),
                h["ended"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn clean_and_unclean_sequences_over_several_boots() {
    let n = node();
    // Boot 1 starts and shuts down cleanly.
    let said = boot_record("start", &n.state, &n.root);
    assert!(said.contains("recorded boot a1a1a1a1 as running"), "{said}");
    assert_eq!(
        status(&n)["verdict"]["verdict"],
        "unknown",
        "first boot: nothing before it"
    );
    let said = boot_record("stop", &n.state, &n.root);
    assert!(
        said.contains("marked boot a1a1a1a1 as cleanly stopped"),
        "{said}"
    );

    // Boot 2 starts: the previous boot ended cleanly.
    reboot(&n.root, BOOT_2);
    boot_record("start", &n.state, &n.root);
    let boot = status(&n);
    assert_eq!(boot["verdict"]["verdict"], "clean", "{boot:#}");
    assert_eq!(boot["verdict"]["decided_by"], "boot_records");

    // Boot 2 loses power (no stop); boot 3 starts: unclean.
    reboot(&n.root, BOOT_3);
    boot_record("start", &n.state, &n.root);
    let boot = status(&n);
    assert_eq!(boot["verdict"]["verdict"], "unclean", "{boot:#}");
    assert!(boot["verdict"]["summary"]
        .as_str()
        .unwrap()
        .contains("b2b2b2b2 was recorded running"));
    assert_eq!(
        ends(&boot),
        [
            (BOOT_3.into(), "running".into()),
            (BOOT_2.into(), "unclean".into()),
            (BOOT_1.into(), "clean".into())
        ]
    );

    // Boot 3 stops cleanly; boot 4 sees a clean previous boot and the whole history.
    boot_record("stop", &n.state, &n.root);
    reboot(&n.root, BOOT_4);
    boot_record("start", &n.state, &n.root);
    let boot = status(&n);
    assert_eq!(boot["verdict"]["verdict"], "clean", "{boot:#}");
    assert_eq!(ends(&boot).len(), 4);
    let table = status_table(&n.state, &n.journal, &n.root);
    assert!(table.contains("b2b2b2b2 "), "{table}");
    assert!(
        table.contains("UNCLEANLY (never marked stopped)"),
        "{table}"
    );
}

#[test]
fn a_missing_state_directory_is_created_private() {
    let n = node();
    let deep = n.tmp.path().join("not/yet/there");
    boot_record("start", &deep, &n.root);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&deep).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert!(deep.join("boot-records.json").is_file());
    // status on a state dir that does not exist says so and does not create it.
    let other = n.tmp.path().join("elsewhere");
    let boot = status_json(&other, &n.journal, &n.root, &[]);
    assert!(evidence(&boot, "boot_records")["finding"]
        .as_str()
        .unwrap()
        .contains("does not exist"));
    assert!(!other.exists());
}

#[test]
fn a_torn_records_file_is_reported_then_set_aside() {
    let n = node();
    boot_record("start", &n.state, &n.root);
    let file = n.state.join("boot-records.json");
    let whole = std::fs::read(&file).unwrap();
    std::fs::write(&file, &whole[..whole.len() / 2]).unwrap();

    let boot = status(&n);
    let rec = evidence(&boot, "boot_records");
    assert_eq!(rec["says"], "unreadable");
    let detail = rec["detail"].as_str().unwrap();
    assert!(detail.contains(file.to_str().unwrap()), "{detail}");
    assert!(detail.contains("not a boot-records file"), "{detail}");
    assert_eq!(boot["history"]["state"], "unreadable");

    reboot(&n.root, BOOT_2);
    let said = boot_record("start", &n.state, &n.root);
    assert!(said.contains("was unreadable"), "{said}");
    assert!(said.contains("boot-records.json.corrupt-"), "{said}");
    let kept: Vec<String> = std::fs::read_dir(&n.state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("boot-records.json.corrupt-"))
        .collect();
    assert_eq!(kept.len(), 1, "the unreadable history is kept");
    let aside = std::fs::read(n.state.join(&kept[0])).unwrap();
    assert_eq!(aside, &whole[..whole.len() / 2]);
    assert_eq!(ends(&status(&n)), [(BOOT_2.into(), "running".into())]);
}

#[test]
fn a_write_interrupted_before_the_rename_leaves_the_old_records() {
    let n = node();
    boot_record("start", &n.state, &n.root);
    // A power cut mid-write leaves a partial temp file beside the intact old file.
    std::fs::write(
        n.state.join(".boot-records.json.tmp-4242"),
        b"{\"format\":\"vmreco",
    )
    .unwrap();
    reboot(&n.root, BOOT_2);
    let boot = status(&n);
    assert_eq!(boot["verdict"]["verdict"], "unclean", "{boot:#}");
    assert_eq!(evidence(&boot, "boot_records")["says"], "unclean");
    boot_record("start", &n.state, &n.root);
    assert_eq!(ends(&status(&n)).len(), 2);
    assert!(
        !n.state.join(".boot-records.json.tmp-4242").exists(),
        "the next write removes the stale temp file"
    );
}

#[test]
fn records_from_another_machine_are_ignored_and_flagged() {
    let n = node();
    let other = host_root(
        &n.tmp.path().join("other"),
        BOOT_1,
        "99999999999999999999999999999999",
    );
    boot_record("start", &n.state, &other);
    reboot(&n.root, BOOT_2);
    let boot = status(&n);
    assert_eq!(boot["verdict"]["verdict"], "unknown", "{boot:#}");
    let notes = boot["records"]["notes"].to_string();
    assert!(notes.contains("another machine"), "{notes}");
    assert!(
        notes.contains("99999999999999999999999999999999"),
        "{notes}"
    );
    assert!(ends(&boot).is_empty());
}

#[test]
fn stop_without_start_is_recorded_and_said() {
    let n = node();
    let said = boot_record("stop", &n.state, &n.root);
    assert!(said.contains("no start record"), "{said}");
    reboot(&n.root, BOOT_2);
    assert_eq!(status(&n)["verdict"]["verdict"], "clean");
}

#[test]
fn boot_record_without_a_readable_boot_id_fails_with_the_path() {
    let n = node();
    std::fs::write(n.root.join("proc/sys/kernel/random/boot_id"), "garbage\n").unwrap();
    let out = vmrecover(&[
        "boot-record",
        "start",
        "--state-dir",
        n.state.to_str().unwrap(),
        "--host-root",
        n.root.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("boot_id"), "{err}");
    assert!(!n.state.exists(), "nothing written");
}

#[test]
fn records_take_precedence_over_the_journal_and_the_conflict_is_reported() {
    let n = node();
    build_journal(&n.journal, "power_cut_running.export");
    // Records say the previous boot stopped cleanly; its journal says it was cut.
    host_root(&n.root, PREVIOUS_BOOT, MACHINE_ID);
    boot_record("start", &n.state, &n.root);
    boot_record("stop", &n.state, &n.root);
    host_root(&n.root, CURRENT_BOOT, MACHINE_ID);
    let boot = status(&n);
    assert_eq!(boot["verdict"]["verdict"], "clean", "{boot:#}");
    assert_eq!(boot["verdict"]["decided_by"], "boot_records");
    let conflicts = boot["verdict"]["conflicts"].to_string();
    assert!(
        conflicts.contains("boot records say clean but the journal says unclean"),
        "{conflicts}"
    );
    assert!(
        conflicts.contains("kernel log"),
        "the fs-recovery hint disagrees too: {conflicts}"
    );
    assert!(boot["verdict"]["summary"]
        .as_str()
        .unwrap()
        .contains("journal disagrees"));
}

#[test]
fn records_of_an_older_boot_defer_to_the_journal() {
    let n = node();
    build_journal(&n.journal, "power_cut_running.export");
    // Only an older boot was recorded (cleanly); the journal's previous boot has no record.
    host_root(&n.root, OLDER_BOOT, MACHINE_ID);
    boot_record("start", &n.state, &n.root);
    boot_record("stop", &n.state, &n.root);
    host_root(&n.root, CURRENT_BOOT, MACHINE_ID);
    let boot = status(&n);
    assert_eq!(boot["verdict"]["verdict"], "unclean", "{boot:#}");
    assert_eq!(boot["verdict"]["decided_by"], "journal");
    assert!(evidence(&boot, "boot_records")["finding"]
        .as_str()
        .unwrap()
        .contains("has no record"));
}
