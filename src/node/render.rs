//! The node section of `vmrecover status` as a table: VM processes and the Longhorn
//! volumes held or mounted here.

use std::collections::BTreeSet;
use std::io::{self, Write};

use super::{csi_paths, NodeFacts};

/// Writes the node section of `vmrecover status` as a table.
pub fn render_table(facts: &NodeFacts, out: &mut dyn Write) -> io::Result<()> {
    match facts.identity.as_result() {
        Ok(id) => writeln!(
            out,
            "This machine: machine-id {}, boot {}",
            id.machine_id, id.boot_id
        )?,
        Err(e) => writeln!(out, "This machine: identity could not be read ({e})")?,
    }
    match facts.processes.as_result() {
        Ok(procs) => {
            writeln!(out, "VM processes on this node: {}", procs.len())?;
            if !procs.is_empty() {
                writeln!(
                    out,
                    "  {:<8} {:<22} {:<40} {:<9} {:>8}",
                    "PID", "KIND", "VMI", "UID", "UPTIME"
                )?;
            }
            for p in procs {
                let uid = p
                    .uid
                    .as_deref()
                    .map(|u| u.chars().take(8).collect::<String>())
                    .unwrap_or_else(|| "?".into());
                writeln!(
                    out,
                    "  {:<8} {:<22} {:<40} {:<9} {:>8}",
                    p.pid,
                    p.kind.as_str(),
                    p.vmi_label(),
                    uid,
                    uptime(p.run_time_secs)
                )?;
            }
        }
        Err(e) => writeln!(out, "VM processes on this node: could not read ({e})")?,
    }
    writeln!(out)?;
    render_volumes(facts, out)
}

fn render_volumes(facts: &NodeFacts, out: &mut dyn Write) -> io::Result<()> {
    let d = &facts.disks;
    let mut volumes: BTreeSet<String> = BTreeSet::new();
    if let Some(devs) = d.devices.value() {
        volumes.extend(devs.iter().map(|x| x.volume.clone()));
    }
    if let Some(k) = d.kernel_holders.value() {
        volumes.extend(k.iter().map(|h| h.volume.clone()));
    }
    if let Some(o) = d.open_files.value() {
        volumes.extend(o.holders.iter().map(|h| h.volume.clone()));
    }
    if let Some(m) = d.mounts.value() {
        volumes.extend(
            m.entries
                .iter()
                .flat_map(|e| e.volumes.iter().chain(&e.pv_names).cloned()),
        );
    }
    writeln!(out, "Longhorn volumes on this node: {}", volumes.len())?;
    for (what, err) in [
        ("devices", d.devices.as_result().err()),
        (
            "partitions and stacked devices",
            d.kernel_holders.as_result().err(),
        ),
        ("open files", d.open_files.as_result().err()),
        ("mounts", d.mounts.as_result().err()),
    ] {
        if let Some(e) = err {
            writeln!(out, "  {what}: could not read ({e})")?;
        }
    }
    if let Some(o) = d.open_files.value() {
        if !o.unreadable.is_empty() {
            writeln!(
                out,
                "  open files of {} process(es) could not be read (first: {})",
                o.unreadable.len(),
                o.unreadable
                    .first()
                    .map(|u| format!("pid {} ({}): {}", u.pid, u.comm, u.reason))
                    .unwrap_or_default()
            )?;
        }
    }
    if !volumes.is_empty() {
        writeln!(out, "  {:<44} {:<8} HOW HELD", "VOLUME", "DEVICE")?;
    }
    for v in &volumes {
        let dev = d
            .devices
            .value()
            .and_then(|ds| ds.iter().find(|x| &x.volume == v))
            .map(|x| {
                x.device
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| x.file_type.clone())
            })
            .unwrap_or_else(|| "-".into());
        let how = match facts.volume_holders(v) {
            Ok(h) if h.is_empty() => "not held".to_string(),
            Ok(h) => h.join("; "),
            Err(e) => format!("unknown: {e}"),
        };
        writeln!(out, "  {v:<44} {dev:<8} {how}")?;
    }
    if let Some(m) = d.mounts.value() {
        let hashes: BTreeSet<String> = volumes.iter().map(|v| csi_paths::staging_hash(v)).collect();
        for e in &m.entries {
            if e.volumes.is_empty() && e.staging_hash.as_ref().is_some_and(|h| !hashes.contains(h))
            {
                writeln!(
                    out,
                    "  Longhorn staging mount of an unlisted volume: {} ({} from {})",
                    e.mount_point, e.fstype, e.source
                )?;
            }
        }
    }
    Ok(())
}

/// `3d04h`, `2h03m`, `5m12s`, `42s`.
pub fn uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_formats() {
        assert_eq!(uptime(42), "42s");
        assert_eq!(uptime(312), "5m12s");
        assert_eq!(uptime(7380), "2h03m");
        assert_eq!(uptime(273_600), "3d04h");
    }
}
