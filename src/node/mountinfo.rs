//! Parser for `/proc/<pid>/mountinfo` (proc(5)).
//!
//! ```text
//! 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//! (1)(2)(3)   (4)   (5)      (6)      (7)   (8) (9)   (10)         (11)
//! ```
//! Paths are escaped by the kernel: space, tab, newline and backslash appear as
//! `\040`, `\011`, `\012` and `\134`.

use serde::{Deserialize, Serialize};

/// One mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Mount id.
    pub mount_id: u64,
    /// Parent mount id.
    pub parent_id: u64,
    /// Major device number of the filesystem.
    pub major: u32,
    /// Minor device number of the filesystem.
    pub minor: u32,
    /// The directory of the filesystem that forms the root of this mount (a bind mount
    /// of a device node shows that node, e.g. `/longhorn/pvc-…` on devtmpfs).
    pub root: String,
    /// Where it is mounted.
    pub mount_point: String,
    /// Per-mount options.
    pub options: String,
    /// Optional fields (`shared:N`, `master:N`, …).
    pub optional: Vec<String>,
    /// Filesystem type.
    pub fstype: String,
    /// Mount source (`/dev/longhorn/pvc-…`, `tmpfs`, …).
    pub source: String,
    /// Per-superblock options.
    pub super_options: String,
}

/// Why a line could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("mountinfo line {line}: {what}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub what: LineError,
}

/// What is wrong with one mountinfo line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// A field the format requires is not there.
    #[error("missing {0}")]
    Missing(&'static str),
    /// The `major:minor` field has no colon.
    #[error("major:minor without ':'")]
    NoColon,
    /// A numeric field is not a number.
    #[error("{what} is not a number: {got:?}")]
    NotANumber {
        /// Which field.
        what: &'static str,
        /// What it held.
        got: String,
    },
}

/// Parses a whole mountinfo file; blank lines are ignored, any malformed line is an
/// error (a line that cannot be read could be the mount that matters).
pub fn parse(text: &[u8]) -> Result<Vec<Mount>, ParseError> {
    let mut out = Vec::new();
    for (index, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        out.push(parse_line(line).map_err(|what| ParseError {
            line: index + 1,
            what,
        })?);
    }
    Ok(out)
}

/// Parses one line.
pub fn parse_line(line: &[u8]) -> Result<Mount, LineError> {
    let mut fields = line.split(|&b| b == b' ').filter(|f| !f.is_empty());
    let mut next = |what: &'static str| fields.next().ok_or(LineError::Missing(what));
    let mount_id = number(next("mount id")?, "mount id")?;
    let parent_id = number(next("parent id")?, "parent id")?;
    let devno = next("major:minor")?;
    let colon = devno
        .iter()
        .position(|&b| b == b':')
        .ok_or(LineError::NoColon)?;
    let major = number(devno.get(..colon).unwrap_or_default(), "major")?;
    let minor = number(devno.get(colon + 1..).unwrap_or_default(), "minor")?;
    let root = unescape(next("root")?);
    let mount_point = unescape(next("mount point")?);
    let options = text(next("mount options")?);
    let mut optional = Vec::new();
    loop {
        let f = next("separator '-'")?;
        if f == b"-" {
            break;
        }
        optional.push(text(f));
    }
    let fstype = unescape(next("filesystem type")?);
    let source = unescape(next("mount source")?);
    let super_options = next("super options").map(text).unwrap_or_default();
    Ok(Mount {
        mount_id,
        parent_id,
        major,
        minor,
        root,
        mount_point,
        options,
        optional,
        fstype,
        source,
        super_options,
    })
}

fn number<T: std::str::FromStr>(b: &[u8], what: &'static str) -> Result<T, LineError> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| LineError::NotANumber {
            what,
            got: String::from_utf8_lossy(b).into_owned(),
        })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Undoes the kernel's octal escapes (`\040` → space); anything else is kept as is.
pub fn unescape(b: &[u8]) -> String {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'\\' {
            if let Some(oct) = b.get(i + 1..i + 4) {
                if oct.iter().all(|d| (b'0'..=b'7').contains(d)) {
                    let v = oct
                        .iter()
                        .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                    if let Ok(byte) = u8::try_from(v) {
                        out.push(byte);
                        i += 4;
                        continue;
                    }
                }
            }
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Escapes a path the way the kernel does in mountinfo.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

/// Formats a mount as a mountinfo line (the inverse of [`parse_line`]).
pub fn format_line(m: &Mount) -> String {
    let mut line = format!(
        "{} {} {}:{} {} {} {}",
        m.mount_id,
        m.parent_id,
        m.major,
        m.minor,
        escape(&m.root),
        escape(&m.mount_point),
        m.options
    );
    for o in &m.optional {
        line.push(' ');
        line.push_str(o);
    }
    line.push_str(&format!(
        " - {} {} {}",
        escape(&m.fstype),
        escape(&m.source),
        m.super_options
    ));
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const REAL: &str = "\
25 1 0:23 / / rw,relatime shared:1 - overlay overlay rw,lowerdir=/run/k3s/containerd/l1,upperdir=/u,workdir=/w
26 25 0:5 / /dev rw,nosuid shared:2 - devtmpfs devtmpfs rw,size=65892928k,nr_inodes=16473232,mode=755
1201 25 8:32 / /var/lib/kubelet/plugins/kubernetes.io/csi/driver.longhorn.io/3d2c1c5b2c0e4f7c9b0d4f7e4b3b7e6f1a1d9c2b8e7f6a5b4c3d2e1f0a9b8c7d/globalmount rw,relatime shared:610 - ext4 /dev/longhorn/pvc-3f1c7e2a-1b2c-4d3e-8f9a-0b1c2d3e4f5a rw
1305 25 0:5 /longhorn/pvc-9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d /var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices/publish/pvc-9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d/5d7c1b2a-3e4f-4a5b-8c6d-7e8f9a0b1c2d rw,nosuid shared:2 - devtmpfs devtmpfs rw,size=65892928k,nr_inodes=16473232,mode=755
1400 25 0:61 / /mnt/with\\040space rw shared:700 master:3 - tmpfs tmp\\134fs rw
";

    #[test]
    fn parses_real_lines() {
        let m = parse(REAL.as_bytes()).expect("parses");
        assert_eq!(m.len(), 5);
        assert_eq!(
            m[2].source,
            "/dev/longhorn/pvc-3f1c7e2a-1b2c-4d3e-8f9a-0b1c2d3e4f5a"
        );
        assert_eq!((m[2].major, m[2].minor), (8, 32));
        assert_eq!(
            m[3].root,
            "/longhorn/pvc-9a8b7c6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"
        );
        assert_eq!(m[4].mount_point, "/mnt/with space");
        assert_eq!(m[4].source, "tmp\\fs");
        assert_eq!(m[4].optional, vec!["shared:700", "master:3"]);
    }

    #[test]
    fn malformed_line_is_an_error_with_its_number() {
        let err = parse(b"25 1 0:23 / / rw shared:1 - overlay overlay rw\nbroken line\n")
            .expect_err("malformed");
        assert_eq!(err.line, 2);
    }

    fn mount_strategy() -> impl Strategy<Value = Mount> {
        let path = "(/[ -~\t\n]{0,12}){1,4}";
        (
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            path,
            path,
            "[a-z,=0-9]{1,20}",
            proptest::collection::vec("(shared|master|propagate_from):[0-9]{1,4}", 0..3),
            "[a-z0-9.]{1,10}",
            "[!-~]{1,30}",
            "[a-z,=0-9]{0,20}",
        )
            .prop_map(
                |(
                    mount_id,
                    parent_id,
                    major,
                    minor,
                    root,
                    mount_point,
                    options,
                    optional,
                    fstype,
                    source,
                    super_options,
                )| Mount {
                    mount_id,
                    parent_id,
                    major,
                    minor,
                    root,
                    mount_point,
                    options,
                    optional,
                    fstype,
                    source,
                    super_options,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn round_trip(m in mount_strategy()) {
            let line = format_line(&m);
            prop_assert_eq!(parse_line(line.as_bytes()), Ok(m));
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse(&data);
        }

        #[test]
        fn unescape_inverts_escape(s in "[ -~\t\n]{0,40}") {
            prop_assert_eq!(unescape(escape(&s).as_bytes()), s);
        }
    }
}
