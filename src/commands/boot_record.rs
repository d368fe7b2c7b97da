//! `vmrecover boot-record start|stop`, called by vmrecover-boot.service.

use std::path::Path;

use crate::boot;
use crate::cli::BootRecordAction;
use crate::exit::Outcome;

/// Records this boot as running or cleanly stopped.
pub fn run(action: BootRecordAction, state_dir: &Path, host_root: &Path) -> Outcome {
    let result = match action {
        BootRecordAction::Start => boot::record_start(state_dir, host_root),
        BootRecordAction::Stop => boot::record_stop(state_dir, host_root),
    };
    match result {
        Ok(line) => {
            println!("{line}");
            Outcome::Done
        }
        Err(e) => {
            eprintln!("vmrecover boot-record: {e:#}");
            Outcome::Error
        }
    }
}
