//! `/proc/<pid>/stat`: the process state and its start time, which with the pid is the
//! process identity (a reused pid has a different start time).

use std::io;
use std::path::Path;

/// The fields of `/proc/<pid>/stat` vmrecover needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// State letter (`R`, `S`, `D`, `Z`, `X`, …).
    pub state: char,
    /// Parent pid.
    pub ppid: u32,
    /// Start time in clock ticks since boot (field 22).
    pub start_ticks: u64,
}

impl ProcStat {
    /// Whether the process has exited (zombie or dead) but may not have been reaped.
    pub fn exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Reads `<proc_root>/<pid>/stat`. `NotFound` means the process is gone.
pub fn read(proc_root: &Path, pid: u32) -> io::Result<ProcStat> {
    let path = proc_root.join(pid.to_string()).join("stat");
    let data = std::fs::read(&path)?;
    parse(&data).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: unexpected format", path.display()),
        )
    })
}

/// Parses the contents of a stat file. The command name (field 2) is in parentheses
/// and may itself contain spaces and parentheses, so fields are counted from the last
/// `)`.
pub fn parse(data: &[u8]) -> Option<ProcStat> {
    let close = data.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(data.get(close + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    // Field 3 is the state; field 22 is the start time.
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let start_ticks = fields.nth(17)?.parse().ok()?;
    Some(ProcStat {
        state,
        ppid,
        start_ticks,
    })
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), for converting start times.
pub fn ticks_per_second() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t.unsigned_abs(),
        // USER_HZ is 100 on every Linux architecture vmrecover runs on.
        _ => 100,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_real_line_with_odd_comm() {
        let line = b"4242 (qemu) (x 1) S 1 4242 4242 0 -1 4194560 1234 0 0 0 10 5 0 0 20 0 3 0 987654 123456 789 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n";
        let s = parse(line).expect("parses");
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.start_ticks, 987654);
    }

    #[test]
    fn reads_own_stat() {
        let me = std::process::id();
        let s = read(Path::new("/proc"), me).expect("own stat");
        assert!(!s.exited());
        assert!(s.start_ticks > 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&data);
        }
    }
}
