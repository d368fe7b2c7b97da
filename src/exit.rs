//! Process exit codes (docs/architecture.md §8).

/// How a command ended, as the operator's shell sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 0: done, or nothing to do.
    Done,
    /// 1: an error (unreachable API, unreadable evidence, bad flags).
    Error,
    /// 3: some VMs were blocked and are left for a person.
    Blocked,
}

impl Outcome {
    /// The numeric exit code.
    pub fn code(self) -> u8 {
        match self {
            Outcome::Done => 0,
            Outcome::Error => 1,
            Outcome::Blocked => 3,
        }
    }
}

impl From<Outcome> for std::process::ExitCode {
    fn from(o: Outcome) -> Self {
        std::process::ExitCode::from(o.code())
    }
}
