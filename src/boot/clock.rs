//! The clock side of boot detection: this boot's id, the machine id, uptime and boot time.
//!
//! boot_id comes from `<host_root>/proc/sys/kernel/random/boot_id` (written with dashes by
//! the kernel; the journal writes it as 32 hex digits without them, so both are normalised
//! to the journal's form). Uptime is `CLOCK_BOOTTIME` (which counts suspend; a container
//! shares the host's kernel, so this is the host's clock even when `host_root` is not `/`).
//! Boot time is `now − CLOCK_BOOTTIME`: it shifts when the wall clock is stepped, which is
//! why it is reported, not used to match boots.

use std::path::Path;

use crate::evidence::Gathered;

/// Where the kernel publishes this boot's id, relative to the host root.
pub const BOOT_ID_PATH: &str = "proc/sys/kernel/random/boot_id";
/// Where systemd keeps the machine id, relative to the host root.
pub const MACHINE_ID_PATH: &str = "etc/machine-id";

/// Largest id file we read; real ones are 33–37 bytes.
const MAX_ID_FILE: u64 = 256;

/// Normalises a 128-bit id (boot_id, machine-id) to 32 lowercase hex digits without dashes.
///
/// Accepts the kernel's dashed UUID form and the journal's plain form, with surrounding
/// whitespace. Returns `None` for anything else.
pub fn normalize_id(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    let dashes = trimmed.chars().filter(|c| *c == '-').count();
    if dashes != 0 && dashes != 4 {
        return None;
    }
    let hex: String = trimmed.chars().filter(|c| *c != '-').collect();
    if hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Some(hex.to_ascii_lowercase())
    } else {
        None
    }
}

/// Reads and normalises an id file under `host_root`.
pub fn read_id(host_root: &Path, relative: &str) -> Gathered<String> {
    let path = host_root.join(relative);
    let source = path.display().to_string();
    match read_small(&path) {
        Ok(text) => match normalize_id(&text) {
            Some(id) => Gathered::read(id),
            None => Gathered::unreadable(
                source,
                format!(
                    "not a 128-bit id (32 hex digits, optionally dashed): {:?}",
                    text.chars().take(64).collect::<String>()
                ),
            ),
        },
        Err(e) => Gathered::unreadable(source, e.to_string()),
    }
}

/// This boot's id, normalised.
pub fn boot_id(host_root: &Path) -> Gathered<String> {
    read_id(host_root, BOOT_ID_PATH)
}

/// This machine's id, normalised.
pub fn machine_id(host_root: &Path) -> Gathered<String> {
    read_id(host_root, MACHINE_ID_PATH)
}

/// Why a small id file could not be read (the path is the evidence's source).
#[derive(Debug, thiserror::Error)]
enum SmallFileError {
    /// It could not be opened.
    #[error("cannot open: {0}")]
    Open(std::io::Error),
    /// It could not be read.
    #[error("cannot read: {0}")]
    Read(std::io::Error),
}

fn read_small(path: &Path) -> Result<String, SmallFileError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(SmallFileError::Open)?;
    let mut text = String::new();
    file.take(MAX_ID_FILE)
        .read_to_string(&mut text)
        .map_err(SmallFileError::Read)?;
    Ok(text)
}

/// Time since boot from `CLOCK_BOOTTIME`.
pub fn since_boot() -> Gathered<std::time::Duration> {
    use nix::time::{clock_gettime, ClockId};
    match clock_gettime(ClockId::CLOCK_BOOTTIME) {
        Ok(ts) => {
            let secs = u64::try_from(ts.tv_sec()).unwrap_or(0);
            let nanos = u32::try_from(ts.tv_nsec()).unwrap_or(0).min(999_999_999);
            Gathered::read(std::time::Duration::new(secs, nanos))
        }
        Err(e) => Gathered::unreadable("clock_gettime(CLOCK_BOOTTIME)", e.to_string()),
    }
}

/// Boot time as `now − since_boot`; `None` when the subtraction leaves jiff's range.
pub fn boot_time(now: jiff::Timestamp, since_boot: std::time::Duration) -> Option<jiff::Timestamp> {
    let span = jiff::SignedDuration::try_from(since_boot).ok()?;
    now.checked_sub(span).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_dashed_and_plain_ids() {
        let want = Some("b2ea5ffdb3bb4e0da0baa789cc81443b".to_string());
        assert_eq!(normalize_id("b2ea5ffd-b3bb-4e0d-a0ba-a789cc81443b\n"), want);
        assert_eq!(normalize_id("B2EA5FFDB3BB4E0DA0BAA789CC81443B"), want);
        assert_eq!(normalize_id("  b2ea5ffdb3bb4e0da0baa789cc81443b  "), want);
    }

    #[test]
    fn rejects_non_ids() {
        for bad in [
            "",
            "xyz",
            "b2ea5ffd-b3bb-4e0d-a0ba-a789cc81443",
            "b2ea5ffdb3bb4e0da0baa789cc81443b0",
            "g2ea5ffdb3bb4e0da0baa789cc81443b",
            "b2ea5ffd-b3bb4e0da0baa789cc81443b",
            "b2ea5ffd—b3bb-4e0d-a0ba-a789cc81443b",
        ] {
            assert_eq!(normalize_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reads_ids_under_a_host_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("proc/sys/kernel/random")).unwrap();
        std::fs::write(
            root.path().join(BOOT_ID_PATH),
            "0f0e0d0c-0b0a-0908-0706-050403020100\n",
        )
        .unwrap();
        assert_eq!(
            boot_id(root.path()).value().map(String::as_str),
            Some("0f0e0d0c0b0a09080706050403020100")
        );
        assert!(machine_id(root.path()).value().is_none());
    }

    #[test]
    fn boot_time_is_now_minus_uptime() {
        let now = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        let bt = boot_time(now, std::time::Duration::from_secs(3600)).unwrap();
        assert_eq!(bt.as_second(), 1_700_000_000 - 3600);
        assert!(boot_time(now, std::time::Duration::from_secs(u64::MAX)).is_none());
    }

    proptest::proptest! {
        #[test]
        fn normalize_never_panics_and_is_idempotent(s in ".{0,80}") {
            if let Some(id) = normalize_id(&s) {
                proptest::prop_assert_eq!(normalize_id(&id), Some(id.clone()));
                proptest::prop_assert_eq!(id.len(), 32);
            }
        }
    }
}
