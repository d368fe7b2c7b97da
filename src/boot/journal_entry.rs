//! Parsing `journalctl -o json` lines and `--list-boots` output.
//!
//! journalctl writes a field as a JSON string, as an array of byte values when the value
//! is not printable UTF-8, as `null` when it is larger than its JSON threshold (4 KiB
//! without `--all`), and as an array of those when a field occurs more than once in an
//! entry. Every shape is accepted; nothing here panics on any input.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::clock;

/// Longest message text kept for display.
pub const MESSAGE_DISPLAY_CHARS: usize = 300;

/// The fields of one journal entry that boot detection uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// `__REALTIME_TIMESTAMP` in microseconds since the epoch.
    pub realtime_us: Option<i64>,
    /// `_BOOT_ID`, normalised.
    pub boot_id: Option<String>,
    /// `_MACHINE_ID`, normalised.
    pub machine_id: Option<String>,
    /// `MESSAGE_ID`, lowercased.
    pub message_id: Option<String>,
    /// `UNIT` values (PID 1 and journald name the unit a message is about here).
    pub units: Vec<String>,
    /// `USER_UNIT` present: a user manager's message, not PID 1's.
    pub user_unit: bool,
    /// `SYSLOG_IDENTIFIER`.
    pub syslog_identifier: Option<String>,
    /// `_COMM` (set by journald, not by the sender).
    pub comm: Option<String>,
    /// `_PID` (set by journald).
    pub pid: Option<u32>,
    /// `_TRANSPORT`.
    pub transport: Option<String>,
    /// `SHUTDOWN` (logind: reboot, poweroff, halt, kexec).
    pub shutdown: Option<String>,
    /// `JOB_TYPE` (PID 1's job messages: start, stop, …).
    pub job_type: Option<String>,
    /// `MESSAGE`, lossily decoded and cut to [`MESSAGE_DISPLAY_CHARS`].
    pub message: Option<String>,
    /// `MESSAGE` was present but omitted by journalctl (too large).
    pub message_omitted: bool,
}

/// All text values of a field: strings, byte arrays (decoded lossily), numbers; `null`
/// (omitted by journalctl) yields nothing.
pub fn field_texts(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Number(n) => vec![n.to_string()],
        Value::Bool(b) => vec![b.to_string()],
        Value::Array(items) => {
            if let Some(bytes) = as_bytes(items) {
                vec![String::from_utf8_lossy(&bytes).into_owned()]
            } else {
                items
                    .iter()
                    .filter(|v| !v.is_array())
                    .flat_map(field_texts)
                    .chain(
                        items
                            .iter()
                            .filter_map(|v| v.as_array())
                            .filter_map(|a| as_bytes(a))
                            .map(|b| String::from_utf8_lossy(&b).into_owned()),
                    )
                    .collect()
            }
        }
        Value::Null | Value::Object(_) => Vec::new(),
    }
}

/// An array of integers 0–255 as bytes (an empty array is an empty value).
fn as_bytes(items: &[Value]) -> Option<Vec<u8>> {
    items
        .iter()
        .map(|v| v.as_u64().and_then(|n| u8::try_from(n).ok()))
        .collect()
}

fn first(obj: &serde_json::Map<String, Value>, key: &str) -> Option<String> {
    obj.get(key).and_then(|v| field_texts(v).into_iter().next())
}

fn cut(s: &str, chars: usize) -> String {
    let mut it = s.chars();
    let head: String = it.by_ref().take(chars).collect();
    if it.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

/// Why a line of `journalctl -o json` is not a journal entry.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// The line is not JSON at all.
    #[error("not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    /// The line is JSON but not an object.
    #[error("not a JSON object")]
    NotAnObject,
}

/// Why `journalctl --list-boots` output could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BootListError {
    /// It looked like JSON but is not.
    #[error("boot list is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    /// JSON, but not an array.
    #[error("boot list is not a JSON array")]
    NotAnArray,
    /// An item lacks its index or a valid boot id.
    #[error("boot list item {0} has no index or no valid boot_id")]
    BadItem(usize),
    /// A line of the text table is not `IDX BOOT-ID ...` (its first 120 characters).
    #[error("unexpected boot list line: {0:?}")]
    BadLine(String),
}

/// Parses one line of `journalctl -o json`.
pub fn parse_entry(line: &str) -> Result<JournalEntry, EntryError> {
    let value: Value = serde_json::from_str(line)?;
    let Value::Object(obj) = value else {
        return Err(EntryError::NotAnObject);
    };
    let message = obj.get("MESSAGE");
    Ok(JournalEntry {
        realtime_us: first(&obj, "__REALTIME_TIMESTAMP").and_then(|s| s.trim().parse().ok()),
        boot_id: first(&obj, "_BOOT_ID").and_then(|s| clock::normalize_id(&s)),
        machine_id: first(&obj, "_MACHINE_ID").and_then(|s| clock::normalize_id(&s)),
        message_id: first(&obj, "MESSAGE_ID").map(|s| s.trim().to_ascii_lowercase()),
        units: obj.get("UNIT").map(field_texts).unwrap_or_default(),
        user_unit: obj.contains_key("USER_UNIT"),
        syslog_identifier: first(&obj, "SYSLOG_IDENTIFIER"),
        comm: first(&obj, "_COMM"),
        pid: first(&obj, "_PID").and_then(|s| s.trim().parse().ok()),
        transport: first(&obj, "_TRANSPORT"),
        shutdown: first(&obj, "SHUTDOWN"),
        job_type: first(&obj, "JOB_TYPE"),
        message: message
            .and_then(|v| field_texts(v).into_iter().next())
            .map(|m| cut(&m, MESSAGE_DISPLAY_CHARS)),
        message_omitted: matches!(message, Some(Value::Null)),
    })
}

/// Parsed entries and how many lines could not be parsed (with the first reason).
#[derive(Debug, Default)]
pub struct ParsedLines {
    /// Entries in output order.
    pub entries: Vec<JournalEntry>,
    /// Lines that were not journal entries.
    pub skipped: usize,
    /// Why the first skipped line was skipped.
    pub first_error: Option<EntryError>,
}

/// Parses journalctl's JSON-lines output; blank lines are ignored.
pub fn parse_lines(stdout: &[u8]) -> ParsedLines {
    let mut parsed = ParsedLines::default();
    for line in stdout.split(|b| *b == b'\n') {
        let text = String::from_utf8_lossy(line);
        if text.trim().is_empty() {
            continue;
        }
        match parse_entry(&text) {
            Ok(e) => parsed.entries.push(e),
            Err(e) => {
                parsed.skipped += 1;
                parsed.first_error.get_or_insert(e);
            }
        }
    }
    parsed
}

/// One boot from `journalctl --list-boots`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedBoot {
    /// Relative index (0 = last boot in the journal, -1 the one before, …).
    pub index: i64,
    /// Normalised boot id.
    pub boot_id: String,
    /// First entry, microseconds since the epoch (JSON form only).
    pub first_entry_us: Option<i64>,
    /// Last entry, microseconds since the epoch (JSON form only).
    pub last_entry_us: Option<i64>,
}

/// Parses `--list-boots` output: the JSON array (systemd ≥ 251) or the text table.
/// Boots come back in journal order, oldest first.
pub fn parse_boot_list(stdout: &[u8]) -> Result<Vec<ListedBoot>, BootListError> {
    let text = String::from_utf8_lossy(stdout);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    if trimmed.starts_with('[') {
        return parse_boot_list_json(trimmed);
    }
    parse_boot_list_text(trimmed)
}

fn parse_boot_list_json(text: &str) -> Result<Vec<ListedBoot>, BootListError> {
    let value: Value = serde_json::from_str(text)?;
    let Value::Array(items) = value else {
        return Err(BootListError::NotAnArray);
    };
    let mut boots = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let index = item.get("index").and_then(Value::as_i64);
        let boot_id = item
            .get("boot_id")
            .and_then(Value::as_str)
            .and_then(clock::normalize_id);
        let (Some(index), Some(boot_id)) = (index, boot_id) else {
            return Err(BootListError::BadItem(i));
        };
        boots.push(ListedBoot {
            index,
            boot_id,
            first_entry_us: item.get("first_entry").and_then(Value::as_i64),
            last_entry_us: item.get("last_entry").and_then(Value::as_i64),
        });
    }
    Ok(boots)
}

/// The text table: `IDX BOOT ID FIRST ENTRY LAST ENTRY` (header optional, older systemd
/// prints none), one boot a line starting with the index and the boot id.
fn parse_boot_list_text(text: &str) -> Result<Vec<ListedBoot>, BootListError> {
    let mut boots = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(idx), Some(id)) = (words.next(), words.next()) else {
            continue;
        };
        if idx == "IDX" {
            continue;
        }
        let (Ok(index), Some(boot_id)) = (idx.parse::<i64>(), clock::normalize_id(id)) else {
            return Err(BootListError::BadLine(line.chars().take(120).collect()));
        };
        boots.push(ListedBoot {
            index,
            boot_id,
            first_entry_us: None,
            last_entry_us: None,
        });
    }
    Ok(boots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_value_shapes_journalctl_writes() {
        let line = r#"{"MESSAGE":[98,105,110,1,97,114,121,255],"_BOOT_ID":"11111111-1111-1111-1111-111111111111","__REALTIME_TIMESTAMP":"1700000000000000","UNIT":["a.service","b.service"],"_PID":"1","MESSAGE_ID":"9D1AAA27D60140BD96365438AAD20286"}"#;
        let e = parse_entry(line).unwrap();
        assert_eq!(e.message.as_deref(), Some("bin\u{1}ary\u{fffd}"));
        assert_eq!(
            e.boot_id.as_deref(),
            Some("11111111111111111111111111111111")
        );
        assert_eq!(e.realtime_us, Some(1_700_000_000_000_000));
        assert_eq!(e.units, ["a.service", "b.service"]);
        assert_eq!(e.pid, Some(1));
        assert_eq!(
            e.message_id.as_deref(),
            Some("9d1aaa27d60140bd96365438aad20286")
        );

        let e = parse_entry(r#"{"MESSAGE":null,"_PID":"x","UNIT":[[104,105],"b"]}"#).unwrap();
        assert!(e.message_omitted);
        assert_eq!(e.message, None);
        assert_eq!(e.pid, None);
        assert_eq!(e.units, ["b", "hi"]);
    }

    #[test]
    fn long_messages_are_cut_for_display() {
        let long = "é".repeat(5000);
        let e = parse_entry(&format!(r#"{{"MESSAGE":"{long}"}}"#)).unwrap();
        let m = e.message.unwrap();
        assert_eq!(m.chars().count(), MESSAGE_DISPLAY_CHARS + 1);
        assert!(m.ends_with('…'));
    }

    #[test]
    fn bad_lines_are_counted_not_fatal() {
        let parsed = parse_lines(b"{\"MESSAGE\":\"a\"}\n\nnot json\n[1]\n{\"MESSAGE\":\"b\"}\n");
        assert_eq!(parsed.entries.len(), 2);
        assert_eq!(parsed.skipped, 2);
        assert!(parsed.first_error.unwrap().to_string().contains("not JSON"));
    }

    #[test]
    fn parses_both_boot_list_forms() {
        let json = br#"[{"index":-1,"boot_id":"11111111111111111111111111111111","first_entry":1,"last_entry":2},{"index":0,"boot_id":"22222222222222222222222222222222","first_entry":3,"last_entry":4}]"#;
        let boots = parse_boot_list(json).unwrap();
        assert_eq!(boots.len(), 2);
        assert_eq!(boots[0].last_entry_us, Some(2));
        let text = b"IDX BOOT ID                          FIRST ENTRY                 LAST ENTRY\n \
             -1 11111111111111111111111111111111 Tue 2023-11-14 22:13:20 UTC Tue 2023-11-14 22:15:00 UTC\n  \
             0 22222222222222222222222222222222 Tue 2023-11-14 22:16:40 UTC Tue 2023-11-14 22:16:40 UTC\n";
        let boots = parse_boot_list(text).unwrap();
        assert_eq!(boots.iter().map(|b| b.index).collect::<Vec<_>>(), [-1, 0]);
        assert_eq!(boots[1].boot_id, "2".repeat(32));
        assert_eq!(parse_boot_list(b"").unwrap(), []);
        assert!(parse_boot_list(b"garbage here\n").is_err());
        assert!(parse_boot_list(b"[{\"index\":0}]").is_err());
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u8>().prop_map(Value::from),
            ".{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("MESSAGE".to_string()),
                        Just("UNIT".to_string()),
                        Just("_PID".to_string()),
                        Just("_BOOT_ID".to_string()),
                        Just("__REALTIME_TIMESTAMP".to_string()),
                        Just("MESSAGE_ID".to_string()),
                        "[A-Z_]{1,12}",
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn entry_parser_never_panics_on_json(v in json_value()) {
            let _ = parse_entry(&v.to_string());
            let _ = parse_boot_list(v.to_string().as_bytes());
        }

        #[test]
        fn parsers_never_panic_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_lines(&bytes);
            let _ = parse_boot_list(&bytes);
        }
    }
}
