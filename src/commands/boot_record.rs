//! `vmrecover boot-record start|stop`, called by vmrecover-boot.service.

use crate::boot;
use crate::cli::{BootRecordAction, BootRecordArgs, GlobalArgs};
use crate::exit::Outcome;

/// Records this boot as running or cleanly stopped.
pub fn run(global: &GlobalArgs, args: &BootRecordArgs) -> Outcome {
    let result = match args.action {
        BootRecordAction::Start => boot::record_start(&global.state_dir, &global.host_root),
        BootRecordAction::Stop => boot::record_stop(&global.state_dir, &global.host_root),
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
