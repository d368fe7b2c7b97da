//! Pure parsing of VM process command lines (design §5): which kind of process it is
//! and which VMI it serves.
//!
//! Works on raw argument bytes (`/proc/<pid>/cmdline` is NUL-separated bytes, not
//! necessarily UTF-8). Nothing here panics on any input.

use super::ProcessKind;

/// The VMI identity a command line names; every part is optional because a command line
/// may be truncated, unusual or only partly readable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// VMI namespace.
    pub namespace: Option<String>,
    /// VMI name.
    pub name: Option<String>,
    /// VMI UID.
    pub uid: Option<String>,
    /// The libvirt domain name (`<namespace>_<name>`), for qemu.
    pub domain: Option<String>,
}

/// The kind of VM process a name denotes: an executable's file name, `argv[0]`'s file
/// name or the kernel's 15-byte `comm`.
pub fn kind_from_name(name: &[u8]) -> Option<ProcessKind> {
    let base = basename(name);
    match base {
        b"virt-launcher-monitor" => Some(ProcessKind::LauncherMonitor),
        // `comm` is truncated to 15 bytes.
        b"virt-launcher-m" => Some(ProcessKind::LauncherMonitor),
        b"virt-launcher" => Some(ProcessKind::Launcher),
        b"qemu-kvm" => Some(ProcessKind::Qemu),
        _ if base.starts_with(b"qemu-system-") => Some(ProcessKind::Qemu),
        _ => None,
    }
}

/// Classifies a process from its executable path, `argv[0]` and `comm`, in that order:
/// the first that names a VM process decides.
pub fn classify(exe: Option<&[u8]>, argv0: Option<&[u8]>, comm: &[u8]) -> Option<ProcessKind> {
    exe.and_then(kind_from_name)
        .or_else(|| argv0.and_then(kind_from_name))
        .or_else(|| kind_from_name(comm))
}

/// Reads the VMI identity from the arguments (`argv[1..]`) of a process of `kind`.
pub fn identity<A: AsRef<[u8]>>(kind: ProcessKind, args: &[A]) -> Identity {
    match kind {
        ProcessKind::LauncherMonitor | ProcessKind::Launcher => launcher_identity(args),
        ProcessKind::Qemu => qemu_identity(args),
    }
}

/// Flags of virt-launcher(-monitor) that take a value (pflag string/int/duration
/// flags), so their value is never mistaken for a flag.
const LAUNCHER_VALUE_FLAGS: &[&[u8]] = &[
    b"qemu-timeout",
    b"name",
    b"uid",
    b"namespace",
    b"kubevirt-share-dir",
    b"ephemeral-disk-dir",
    b"container-disk-dir",
    b"grace-period-seconds",
    b"hook-sidecars",
    b"ovmf-path",
    b"libvirt-log-filters",
    b"readiness-file",
    b"pod-name",
    b"v",
];

/// Parses `--name`, `--uid` and `--namespace` the way Go's pflag does: `--flag value`
/// or `--flag=value`, the last occurrence wins, `--` ends the flags.
pub fn launcher_identity<A: AsRef<[u8]>>(args: &[A]) -> Identity {
    let mut id = Identity::default();
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        let arg = arg.as_ref();
        i += 1;
        if arg == b"--" {
            break;
        }
        let Some(flag) = arg.strip_prefix(b"--") else {
            continue;
        };
        let (key, value) = match flag.iter().position(|&b| b == b'=') {
            Some(eq) => (&flag[..eq], Some(&flag[eq + 1..])),
            None => (flag, None),
        };
        let value = match value {
            Some(v) => Some(v),
            None if LAUNCHER_VALUE_FLAGS.contains(&key) => {
                let v = args.get(i).map(AsRef::as_ref);
                i += 1;
                v
            }
            None => None,
        };
        let value = value.filter(|v| !v.is_empty()).map(lossy);
        match key {
            b"name" => id.name = value.or(id.name),
            b"uid" => id.uid = value.or(id.uid),
            b"namespace" => id.namespace = value.or(id.namespace),
            _ => {}
        }
    }
    id
}

/// Parses qemu's `-name guest=<namespace>_<name>,…` and the VMI UID from
/// `…/kubevirt-private/<UID>/…` paths (the VNC socket first, then any other).
pub fn qemu_identity<A: AsRef<[u8]>>(args: &[A]) -> Identity {
    let mut id = Identity::default();
    let mut vnc_uid = None;
    let mut other_uid = None;
    let mut prev: &[u8] = b"";
    for arg in args {
        let arg = arg.as_ref();
        if prev == b"-name" || prev == b"--name" {
            if let Some(guest) = qemu_guest_name(arg) {
                id.domain = Some(lossy(&guest));
                if let Some(us) = guest.iter().position(|&b| b == b'_') {
                    let (ns, name) = (&guest[..us], &guest[us + 1..]);
                    if !ns.is_empty() && !name.is_empty() {
                        id.namespace = Some(lossy(ns));
                        id.name = Some(lossy(name));
                    }
                }
            }
        }
        if let Some(uid) = kubevirt_private_uid(arg) {
            if prev == b"-vnc" || prev == b"--vnc" {
                vnc_uid.get_or_insert(uid);
            } else {
                other_uid.get_or_insert(uid);
            }
        }
        prev = arg;
    }
    id.uid = vnc_uid.or(other_uid);
    id
}

/// The `guest` value of a qemu `-name` option (QemuOpts syntax: `,,` is a literal comma;
/// a first part without `=` is the implied `guest`).
pub fn qemu_guest_name(value: &[u8]) -> Option<Vec<u8>> {
    for (index, part) in split_qemu_opts(value).into_iter().enumerate() {
        if let Some(rest) = part.strip_prefix(b"guest=") {
            return Some(rest.to_vec());
        }
        if index == 0 && !part.contains(&b'=') && !part.is_empty() {
            return Some(part);
        }
    }
    None
}

/// Splits QemuOpts at single commas, turning `,,` into a literal comma.
fn split_qemu_opts(value: &[u8]) -> Vec<Vec<u8>> {
    let mut parts = Vec::new();
    let mut cur = Vec::new();
    let mut i = 0;
    while let Some(&b) = value.get(i) {
        if b == b',' {
            if value.get(i + 1) == Some(&b',') {
                cur.push(b',');
                i += 2;
                continue;
            }
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(b);
        }
        i += 1;
    }
    parts.push(cur);
    parts
}

/// The UUID in the first `kubevirt-private/<UUID>/` of an argument.
pub fn kubevirt_private_uid(arg: &[u8]) -> Option<String> {
    const MARK: &[u8] = b"kubevirt-private/";
    let mut rest = arg;
    while let Some(pos) = find(rest, MARK) {
        let after = &rest[pos + MARK.len()..];
        if let Some(candidate) = after.get(..36) {
            if is_uuid(candidate) && matches!(after.get(36), None | Some(b'/') | Some(b',')) {
                return Some(lossy(candidate));
            }
        }
        rest = after;
    }
    None
}

/// Whether `b` is a textual UUID (8-4-4-4-12 hex digits).
pub fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The part after the last `/`.
fn basename(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Joins arguments into one line for display, replacing invalid UTF-8 with U+FFFD;
/// returns the line and whether anything was replaced.
pub fn display_line<A: AsRef<[u8]>>(args: &[A]) -> (String, bool) {
    let mut lossy_seen = false;
    let parts: Vec<String> = args
        .iter()
        .map(|a| {
            let a = a.as_ref();
            if std::str::from_utf8(a).is_err() {
                lossy_seen = true;
            }
            lossy(a)
        })
        .collect();
    (parts.join(" "), lossy_seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UID: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

    fn launcher_args(uid: &str) -> Vec<String> {
        [
            "--qemu-timeout",
            "288s",
            "--name",
            "vm-web-01",
            "--uid",
            uid,
            "--namespace",
            "default",
            "--kubevirt-share-dir",
            "/var/run/kubevirt",
            "--ephemeral-disk-dir",
            "/var/run/kubevirt-ephemeral-disks",
            "--container-disk-dir",
            "/var/run/kubevirt/container-disks",
            "--grace-period-seconds",
            "45",
            "--hook-sidecars",
            "0",
            "--ovmf-path",
            "/usr/share/OVMF",
            "--run-as-nonroot",
            "--keep-after-failure",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    #[test]
    fn launcher_real_format() {
        let id = launcher_identity(&launcher_args(UID));
        assert_eq!(id.namespace.as_deref(), Some("default"));
        assert_eq!(id.name.as_deref(), Some("vm-web-01"));
        assert_eq!(id.uid.as_deref(), Some(UID));
    }

    #[test]
    fn launcher_equals_form_last_wins_and_double_dash() {
        let id = launcher_identity(&[
            "--name=a",
            "--name=b",
            "--namespace=ns1",
            "--uid",
            UID,
            "--",
            "--name",
            "c",
        ]);
        assert_eq!(id.name.as_deref(), Some("b"));
        assert_eq!(id.namespace.as_deref(), Some("ns1"));
        assert_eq!(id.uid.as_deref(), Some(UID));
    }

    #[test]
    fn launcher_value_that_looks_like_flag_is_skipped() {
        // `--libvirt-log-filters` takes a value; that value is not a flag.
        let id = launcher_identity(&["--libvirt-log-filters", "--name", "--name", "real"]);
        assert_eq!(id.name.as_deref(), Some("real"));
    }

    #[test]
    fn launcher_missing_value_is_none() {
        let id = launcher_identity(&["--name"]);
        assert_eq!(id, Identity::default());
        let id = launcher_identity(&["--name="]);
        assert_eq!(id, Identity::default());
    }

    #[test]
    fn qemu_real_format() {
        let vnc = format!("vnc=unix:/var/run/kubevirt-private/{UID}/virt-vnc,audiodev=audio1");
        let args = [
            "-name",
            "guest=default_vm-web-01,debug-threads=on",
            "-S",
            "-object",
            r#"{"qom-type":"secret","id":"masterKey0","format":"raw","file":"/var/run/kubevirt-private/libvirt/qemu/lib/domain-1-default_vm-web-01/master-key.aes"}"#,
            "-vnc",
            &vnc,
        ];
        let id = qemu_identity(&args);
        assert_eq!(id.namespace.as_deref(), Some("default"));
        assert_eq!(id.name.as_deref(), Some("vm-web-01"));
        assert_eq!(id.domain.as_deref(), Some("default_vm-web-01"));
        assert_eq!(id.uid.as_deref(), Some(UID));
    }

    #[test]
    fn qemu_name_split_at_first_underscore() {
        let id = qemu_identity(&["-name", "guest=my-ns_vm_with_underscores,debug-threads=on"]);
        assert_eq!(id.namespace.as_deref(), Some("my-ns"));
        assert_eq!(id.name.as_deref(), Some("vm_with_underscores"));
    }

    #[test]
    fn qemu_implied_guest_and_escaped_comma() {
        assert_eq!(
            qemu_guest_name(b"ns_a,,b,debug-threads=on"),
            Some(b"ns_a,b".to_vec())
        );
        assert_eq!(qemu_guest_name(b"debug-threads=on"), None);
    }

    #[test]
    fn qemu_uid_from_serial_when_no_vnc() {
        let chardev = format!(
            "socket,id=charserial0,path=/var/run/kubevirt-private/{UID}/virt-serial0,server=on"
        );
        let id = qemu_identity(&["-chardev", &chardev]);
        assert_eq!(id.uid.as_deref(), Some(UID));
    }

    #[test]
    fn qemu_vmi_disks_dir_is_not_a_uid() {
        assert_eq!(
            kubevirt_private_uid(b"/var/run/kubevirt-private/vmi-disks/disk0/disk.img"),
            None
        );
    }

    #[test]
    fn classify_by_exe_argv0_comm() {
        assert_eq!(
            classify(Some(b"/usr/bin/virt-launcher-monitor"), None, b"x"),
            Some(ProcessKind::LauncherMonitor)
        );
        assert_eq!(
            classify(None, None, b"virt-launcher-m"),
            Some(ProcessKind::LauncherMonitor)
        );
        assert_eq!(
            classify(
                Some(b"/usr/bin/bash"),
                Some(b"/usr/bin/virt-launcher"),
                b"bash"
            ),
            Some(ProcessKind::Launcher)
        );
        assert_eq!(
            classify(None, None, b"qemu-system-x86"),
            Some(ProcessKind::Qemu)
        );
        assert_eq!(
            classify(Some(b"/usr/libexec/qemu-kvm"), None, b"qemu-kvm"),
            Some(ProcessKind::Qemu)
        );
        assert_eq!(
            classify(Some(b"/usr/sbin/virtqemud"), None, b"virtqemud"),
            None
        );
        assert_eq!(
            classify(Some(b"/usr/bin/grep"), Some(b"grep"), b"grep"),
            None
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn parsers_never_panic(args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..24)) {
            let _ = launcher_identity(&args);
            let _ = qemu_identity(&args);
            for a in &args {
                let _ = classify(Some(a), Some(a), a);
                let _ = qemu_guest_name(a);
                let _ = kubevirt_private_uid(a);
            }
            let _ = display_line(&args);
        }

        #[test]
        fn launcher_round_trip(
            ns in "[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?",
            name in "[a-z0-9]([-a-z0-9.]{0,30}[a-z0-9])?",
            uid in "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            equals in any::<bool>(),
            noise in proptest::collection::vec("--x-[a-z-]{1,12}", 0..6),
        ) {
            // Unknown flags are boolean; known value flags consume their value.
            let mut args: Vec<String> = noise.clone();
            args.extend(["--qemu-timeout".to_string(), "--name".to_string()]);
            for (k, v) in [("name", &name), ("uid", &uid), ("namespace", &ns)] {
                if equals { args.push(format!("--{k}={v}")); } else { args.push(format!("--{k}")); args.push(v.clone()); }
            }
            let id = launcher_identity(&args);
            prop_assert_eq!(id.name, Some(name));
            prop_assert_eq!(id.namespace, Some(ns));
            prop_assert_eq!(id.uid, Some(uid));
        }

        #[test]
        fn qemu_round_trip(
            ns in "[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?",
            name in "[a-z0-9]([-a-z0-9._]{0,30}[a-z0-9])?",
            uid in "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        ) {
            let guest = format!("guest={ns}_{name},debug-threads=on");
            let vnc = format!("vnc=unix:/var/run/kubevirt-private/{uid}/virt-vnc,audiodev=audio1");
            let args = ["-name", guest.as_str(), "-S", "-vnc", vnc.as_str()];
            let id = qemu_identity(&args);
            prop_assert_eq!(id.namespace, Some(ns));
            prop_assert_eq!(id.name, Some(name));
            prop_assert_eq!(id.uid, Some(uid));
        }
    }
}
