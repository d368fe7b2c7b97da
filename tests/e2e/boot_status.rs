//! `vmrecover status` as a process over real journal files built from the committed
//! fixtures (tests/fixtures/journal/*.export) and fake host roots.

use crate::boot_support::*;
use serde_json::Value;

struct Setup {
    _tmp: tempfile::TempDir,
    state: std::path::PathBuf,
    journal: std::path::PathBuf,
    root: std::path::PathBuf,
}

fn setup(fixture_name: Option<&str>) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let journal = tmp.path().join("journal");
    std::fs::create_dir_all(&journal).unwrap();
    if let Some(name) = fixture_name {
        build_journal(&journal, name);
    }
    let root = host_root(&tmp.path().join("host"), CURRENT_BOOT, MACHINE_ID);
    Setup {
        state: tmp.path().join("state"),
        journal,
        root,
        _tmp: tmp,
    }
}

fn status(s: &Setup) -> Value {
    status_json(&s.state, &s.journal, &s.root, &[])
}

fn progress(boot: &Value) -> &Value {
    &boot["journal"]["finding"]["analysis"]["progress"]
}

#[test]
fn harvester_clean_reboot_with_only_early_markers_is_clean() {
    let s = setup(Some("harvester_clean_reboot.export"));
    let boot = status(&s);
    assert_eq!(boot["verdict"]["verdict"], "clean", "{boot:#}");
    assert_eq!(boot["verdict"]["decided_by"], "journal");
    assert_eq!(progress(&boot), "handed_off");
    assert_eq!(boot["journal"]["finding"]["boot_id"], PREVIOUS_BOOT);
    assert_eq!(boot["boot_id"]["value"], CURRENT_BOOT);
    let j = evidence(&boot, "journal");
    assert_eq!(j["says"], "clean");
    assert!(
        j["finding"]
            .as_str()
            .unwrap()
            .contains("handed the journal to /run"),
        "{j:#}"
    );
    let kinds: Vec<&str> = boot["journal"]["finding"]["analysis"]["markers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["shutdown_requested", "target_stopped", "journal_handed_off"]
    );
    assert!(boot["verdict"]["conflicts"].as_array().unwrap().is_empty());
}

#[test]
fn clean_power_off_with_late_markers_is_clean() {
    let s = setup(Some("clean_poweroff.export"));
    let boot = status(&s);
    assert_eq!(boot["verdict"]["verdict"], "clean", "{boot:#}");
    assert_eq!(progress(&boot), "completed");
    let summary = boot["verdict"]["summary"].as_str().unwrap();
    assert!(summary.contains("reached poweroff.target"), "{summary}");
    assert!(summary.contains("journal stopped"), "{summary}");
}

#[test]
fn power_cut_while_running_is_unclean_with_the_fs_recovery_hint() {
    let s = setup(Some("power_cut_running.export"));
    let boot = status(&s);
    assert_eq!(boot["verdict"]["verdict"], "unclean", "{boot:#}");
    assert_eq!(progress(&boot), "not_started");
    // The last entry of the previous boot is the lower bound of the power-cut time.
    let last = boot["journal"]["finding"]["last_entry"].as_str().unwrap();
    assert!(last.starts_with("2025-03-10T"), "{last}");
    assert!(evidence(&boot, "journal")["detail"]
        .as_str()
        .unwrap()
        .contains("power was lost at or after 2025-03-10T"));
    let hint = evidence(&boot, "kernel_fs_recovery");
    assert_eq!(hint["says"], "hint_unclean");
    assert!(
        hint["detail"]
            .as_str()
            .unwrap()
            .starts_with("EXT4-fs (sda5): "),
        "{hint:#}"
    );
    assert!(boot["verdict"]["summary"]
        .as_str()
        .unwrap()
        .contains("1 hint(s) agree"));
}

#[test]
fn power_cut_during_a_slow_shutdown_is_unclean() {
    let s = setup(Some("power_cut_slow_shutdown.export"));
    let boot = status(&s);
    assert_eq!(boot["verdict"]["verdict"], "unclean", "{boot:#}");
    assert_eq!(progress(&boot), "incomplete");
    let finding = evidence(&boot, "journal")["finding"].as_str().unwrap();
    assert!(finding.contains("began a shutdown"), "{finding}");
    assert!(finding.contains("never finished"), "{finding}");
}

#[test]
fn a_previous_boot_with_a_reset_clock_is_judged_by_markers_and_flagged() {
    let s = setup(Some("rtc_reset.export"));
    let boot = status(&s);
    assert_eq!(boot["verdict"]["verdict"], "unclean", "{boot:#}");
    let f = &boot["journal"]["finding"];
    assert_eq!(
        f["boot_id"], PREVIOUS_BOOT,
        "picked by order, not wall clock"
    );
    assert!(f["last_entry"].as_str().unwrap().starts_with("2000-01-01"));
    assert!(
        f["clock_suspect"].as_str().unwrap().contains("RTC reset"),
        "{f:#}"
    );
    assert!(evidence(&boot, "journal")["detail"]
        .as_str()
        .unwrap()
        .contains("not trustworthy"));
    let boots = boot["journal"]["boots"].as_array().unwrap();
    assert_eq!(boots.len(), 3);
    assert_eq!(boots[0]["boot_id"], OLDER_BOOT);
}

#[test]
fn renamed_journal_files_are_a_hint() {
    let s = setup(Some("power_cut_running.export"));
    // journald renames a file it finds unclean to *.journal~; this one is a damaged copy.
    let whole = std::fs::read(s.journal.join("system.journal")).unwrap();
    std::fs::write(
        s.journal.join(
            "system@5f1e2b7c9a4d4e3f8b6a1c2d3e4f5a6b-0000000000000001-00062a1b2c3d4e5f.journal~",
        ),
        &whole[..whole.len().min(4096)],
    )
    .unwrap();
    let boot = status(&s);
    assert_eq!(boot["verdict"]["verdict"], "unclean", "{boot:#}");
    let hint = evidence(&boot, "renamed_journal_files");
    assert_eq!(hint["says"], "hint_unclean");
    assert!(hint["detail"].as_str().unwrap().ends_with(".journal~"));
    // journalctl's warning about the damaged file is passed on, not fatal.
    let notes = boot["journal"]["notes"].to_string();
    assert!(notes.contains("journal~"), "{notes}");
}

#[test]
fn an_empty_directory_is_no_evidence_and_unknown() {
    let s = setup(None);
    let boot = status(&s);
    assert_eq!(boot["verdict"]["verdict"], "unknown", "{boot:#}");
    assert_eq!(boot["journal"]["finding"]["state"], "no_evidence");
    assert!(boot["journal"]["finding"]["reason"]
        .as_str()
        .unwrap()
        .contains("no entries"));
    assert_eq!(evidence(&boot, "boot_records")["says"], "no_evidence");
}

#[test]
fn a_journal_with_one_boot_has_no_previous_boot() {
    let s = setup(Some("one_boot.export"));
    let boot = status(&s);
    assert_eq!(boot["verdict"]["verdict"], "unknown", "{boot:#}");
    assert_eq!(boot["journal"]["finding"]["state"], "no_evidence");
    assert!(boot["journal"]["finding"]["reason"]
        .as_str()
        .unwrap()
        .contains("no previous boot"));
    assert_eq!(boot["journal"]["this_boot_listed"], true);
}

#[test]
fn a_corrupt_journal_file_is_unreadable_with_the_reason() {
    let s = setup(None);
    let mut garbage = b"LPKSHHRH".to_vec();
    garbage.extend((0..8000u32).map(|i| (i * 7919 % 251) as u8));
    std::fs::write(s.journal.join("system.journal"), garbage).unwrap();
    let boot = status(&s);
    assert_eq!(boot["verdict"]["verdict"], "unknown", "{boot:#}");
    let j = evidence(&boot, "journal");
    assert_eq!(j["says"], "unreadable");
    assert!(
        j["detail"].as_str().unwrap().contains("system.journal"),
        "{j:#}"
    );
}

#[test]
fn a_missing_directory_and_a_missing_journalctl_are_unreadable() {
    let s = setup(None);
    let gone = s.journal.join("nope");
    let boot = status_json(&s.state, &gone, &s.root, &[]);
    let j = evidence(&boot, "journal");
    assert_eq!(j["says"], "unreadable");
    assert!(
        j["detail"].as_str().unwrap().contains("No such file"),
        "{j:#}"
    );

    let empty_path = tempfile::tempdir().unwrap();
    let out = vmrecover_with_path(
        &[
            "status",
            "--output",
            "json",
            "--state-dir",
            s.state.to_str().unwrap(),
            "--journal-dir",
            s.journal.to_str().unwrap(),
            "--host-root",
            s.root.to_str().unwrap(),
        ],
        Some(empty_path.path()),
    );
    let boot = parse_status(&out);
    let j = evidence(&boot, "journal");
    assert_eq!(j["says"], "unreadable");
    assert!(
        j["detail"]
            .as_str()
            .unwrap()
            .contains("journalctl is not installed"),
        "{j:#}"
    );
    assert_eq!(boot["verdict"]["verdict"], "unknown");
}

#[test]
fn odd_json_values_are_read_without_harm() {
    let s = setup(None);
    // Previous-boot entries with a binary MESSAGE (printed as a byte array), a 70 KB
    // MESSAGE (printed as null), a multi-line one and a repeated UNIT field, written in
    // the binary-safe export form, ahead of the power-cut fixture.
    let mut export = Vec::new();
    let head = |t: u64| {
        format!(
            "__REALTIME_TIMESTAMP={t}\n__MONOTONIC_TIMESTAMP=1000\n_BOOT_ID={PREVIOUS_BOOT}\n\
             _MACHINE_ID={MACHINE_ID}\n_PID=4242\n_COMM=odd\nSYSLOG_IDENTIFIER=odd\n"
        )
        .into_bytes()
    };
    let binary = |key: &str, value: &[u8]| {
        let mut v = format!("{key}\n").into_bytes();
        v.extend((value.len() as u64).to_le_bytes());
        v.extend(value);
        v.push(b'\n');
        v
    };
    for (i, field) in [
        binary("MESSAGE", b"bin\x01ary\xff"),
        format!("MESSAGE={}\n", "x".repeat(70_000)).into_bytes(),
        binary("MESSAGE", b"multi\nline"),
        b"UNIT=a.service\nUNIT=b.service\nMESSAGE=dup\n".to_vec(),
    ]
    .into_iter()
    .enumerate()
    {
        export.extend(head(1_741_500_000_000_000 + i as u64));
        export.extend(field);
        export.push(b'\n');
    }
    let fixture_text = fixture("power_cut_running.export");
    let expected = 4 + count_entries(&fixture_text);
    let previous_in_fixture = String::from_utf8_lossy(&fixture_text)
        .matches(&format!("_BOOT_ID={PREVIOUS_BOOT}\n"))
        .count();
    export.extend(fixture_text);
    build_journal_file(&s.journal, "system.journal", &export, expected);
    let boot = status_json(&s.state, &s.journal, &s.root, &["--journal-tail", "1000"]);
    assert_eq!(boot["verdict"]["verdict"], "unclean", "{boot:#}");
    assert_eq!(boot["journal"]["finding"]["entries_skipped"], 0);
    assert_eq!(
        boot["journal"]["finding"]["entries_read"],
        4 + previous_in_fixture,
        "every previous-boot entry parsed"
    );
}

#[test]
fn the_tail_size_is_honoured() {
    let s = setup(Some("harvester_clean_reboot.export"));
    let boot = status_json(&s.state, &s.journal, &s.root, &["--journal-tail", "3"]);
    assert_eq!(boot["journal"]["finding"]["entries_read"], 3);
    assert_eq!(boot["journal"]["finding"]["tail_limit"], 3);
    // Only the last three entries: the hand-off is there but not the shutdown request.
    assert_eq!(progress(&boot), "not_started");
}

#[test]
fn the_table_reads_well() {
    let s = setup(Some("power_cut_slow_shutdown.export"));
    boot_record("start", &s.state, &s.root);
    let table = status_table(&s.state, &s.journal, &s.root);
    for want in [
        "  Verdict:    UNCLEAN — ",
        "  Decided by: journal",
        "[unclean]     journal",
        "[hint]        kernel log",
        &format!("  This boot:  {CURRENT_BOOT}"),
        "  Started:    ",
        "  Uptime:     ",
        "  Recent boots (newest first):",
        "2c3d4e5f ",
        "running (this boot)",
    ] {
        assert!(table.contains(want), "missing {want:?} in:\n{table}");
    }
}
