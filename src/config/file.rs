//! The configuration file: the policy and tuning the chart renders into the ConfigMap
//! `vmrecover-config` (mounted as `/etc/vmrecover/config.yaml`) and the CloudInit writes on
//! the host (`<state-dir>/config.yaml`), with keys named as the chart's values. Every
//! command reads it; flags override it. Unknown keys and bad values are an error naming the
//! line, the key and the expected form.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::ActOn;

/// Where the pod mounts the chart's ConfigMap; also every command's first default.
pub const POD_CONFIG: &str = "/etc/vmrecover/config.yaml";

/// What the file may set; absent keys fall back to the flags' defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileConfig {
    /// `actOn`: when the agent acts by itself.
    pub act_on: Option<ActOn>,
    /// `bootWindow`: how long after boot the agent keeps recovering.
    pub boot_window: Option<FileDuration>,
    /// `stuckAfter`.
    pub stuck_after: Option<FileDuration>,
    /// `controllerGrace`.
    pub controller_grace: Option<FileDuration>,
    /// `maxVms`.
    pub max_vms: Option<MaxVms>,
    /// `alsoFinalizers`.
    pub also_finalizers: Option<Vec<String>>,
    /// `longhornNamespace`: where Longhorn's volumes and attachments are read.
    pub longhorn_namespace: Option<String>,
    /// `followFor`: how long a recovered VM is followed until it is back (or why not).
    pub follow_for: Option<FileDuration>,
}

/// A duration written with its unit (`90s`, `5m`, `1h30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileDuration(pub Duration);

/// A VM count of at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxVms(pub usize);

/// Which file to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigPath {
    /// `--config FILE`: it must exist.
    Explicit(PathBuf),
    /// The defaults, first existing one wins; none existing is no error.
    Defaults(Vec<PathBuf>),
}

impl ConfigPath {
    /// `--config` when given, else the pod's path and then `<state-dir>/config.yaml` (the
    /// host's, where the CloudInit and the init container write it).
    pub fn resolve(given: Option<&Path>, state_dir: &Path) -> Self {
        match given {
            Some(p) => ConfigPath::Explicit(p.to_path_buf()),
            None => ConfigPath::Defaults(vec![
                PathBuf::from(POD_CONFIG),
                state_dir.join("config.yaml"),
            ]),
        }
    }

    /// The file this resolves to now, if any.
    pub fn file(&self) -> Option<&Path> {
        match self {
            ConfigPath::Explicit(p) => Some(p),
            ConfigPath::Defaults(ps) => ps.iter().map(PathBuf::as_path).find(|p| p.exists()),
        }
    }
}

/// A configuration file that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration file {}: {why}", path.display())]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// The reader's or parser's message (line, column, key and expected form).
    pub why: String,
}

/// The file's configuration, its text (to notice a change) and where it came from; `None`
/// when no default file exists.
pub fn load(path: &ConfigPath) -> Result<Option<(PathBuf, String, FileConfig)>, FileError> {
    let Some(file) = path.file() else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(file).map_err(|e| FileError {
        path: file.to_path_buf(),
        why: format!("cannot read it: {e}"),
    })?;
    let cfg = parse(&text).map_err(|e| FileError {
        path: file.to_path_buf(),
        why: e.to_string(),
    })?;
    Ok(Some((file.to_path_buf(), text, cfg)))
}

/// Parses a configuration; an empty or comment-only file sets nothing. The parser's error
/// names the line, column, key and expected form.
pub fn parse(text: &str) -> Result<FileConfig, serde_saphyr::Error> {
    let parsed: Option<FileConfig> = serde_saphyr::from_str(text)?;
    Ok(parsed.unwrap_or_default())
}

impl<'de> Deserialize<'de> for FileDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = FileDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration with its unit, e.g. 90s, 5m, 1h30m")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<FileDuration, E> {
                humantime::parse_duration(s).map(FileDuration).map_err(|e| {
                    E::custom(format!(
                        "{s:?} is not a duration ({e}): expected a duration with its unit, e.g. 90s, 5m, 1h30m"
                    ))
                })
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<FileDuration, E> {
                Err(E::custom(format!(
                    "{n} has no unit: expected a duration with its unit, e.g. {n}s or {n}m"
                )))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<FileDuration, E> {
                self.visit_u64(n.unsigned_abs())
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for MaxVms {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = MaxVms;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a whole number of VMs, at least 1")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<MaxVms, E> {
                match usize::try_from(n) {
                    Ok(n) if n >= 1 => Ok(MaxVms(n)),
                    _ => Err(E::custom(format!(
                        "{n}: expected a whole number of VMs, at least 1 (0 would refuse every plan)"
                    ))),
                }
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<MaxVms, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!(
                        "{n}: expected a whole number of VMs, at least 1"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_charts_keys_are_read() {
        let c = parse(
            "# rendered by the chart\nactOn: always\nbootWindow: 1h\nstuckAfter: 10m\n\
             controllerGrace: 90s\nmaxVms: 7\nalsoFinalizers: [example.com/x]\n\
             longhornNamespace: storage\nfollowFor: 3m\n",
        )
        .unwrap();
        assert_eq!(c.act_on, Some(ActOn::Always));
        assert_eq!(c.boot_window, Some(FileDuration(Duration::from_secs(3600))));
        assert_eq!(c.stuck_after, Some(FileDuration(Duration::from_secs(600))));
        assert_eq!(
            c.controller_grace,
            Some(FileDuration(Duration::from_secs(90)))
        );
        assert_eq!(c.max_vms, Some(MaxVms(7)));
        assert_eq!(c.also_finalizers, Some(vec!["example.com/x".to_string()]));
        assert_eq!(c.longhorn_namespace.as_deref(), Some("storage"));
        assert_eq!(c.follow_for, Some(FileDuration(Duration::from_secs(180))));
        assert_eq!(parse("").unwrap(), FileConfig::default());
        assert_eq!(parse("# nothing\n").unwrap(), FileConfig::default());
    }

    #[test]
    fn a_bad_file_names_the_line_the_key_and_the_expected_form() {
        for (text, says) in [
            (
                "stuckAfter: 5m\nmaxVmz: 3\n",
                &["line 2", "unknown field `maxVmz`", "maxVms"][..],
            ),
            ("stuckAfter: 5\n", &["line 1", "has no unit", "5m"]),
            (
                "stuckAfter: five minutes\n",
                &["line 1", "not a duration", "with its unit"],
            ),
            (
                "maxVms: fifty\n",
                &["line 1", "whole number of VMs, at least 1"],
            ),
            ("maxVms: 0\n", &["line 1", "at least 1"]),
            ("actOn: Unclean\n", &["line 1", "unclean, always, never"]),
            ("alsoFinalizers: x\n", &["line 1"]),
            (
                "stuck_after: 5m\n",
                &["line 1", "unknown field `stuck_after`", "stuckAfter"],
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            for s in says {
                assert!(e.contains(s), "{text:?}: {e:?} does not say {s:?}");
            }
        }
    }

    #[test]
    fn a_missing_default_file_is_no_error_and_a_missing_explicit_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let defaults = ConfigPath::Defaults(vec![dir.path().join("a.yaml")]);
        assert_eq!(load(&defaults).unwrap(), None);
        let explicit = ConfigPath::Explicit(dir.path().join("a.yaml"));
        let e = load(&explicit).unwrap_err();
        assert!(e.to_string().contains("a.yaml: cannot read it"), "{e}");
        // The first default that exists wins.
        std::fs::write(dir.path().join("b.yaml"), "maxVms: 3\n").unwrap();
        let defaults =
            ConfigPath::Defaults(vec![dir.path().join("a.yaml"), dir.path().join("b.yaml")]);
        let (path, _, cfg) = load(&defaults).unwrap().unwrap();
        assert_eq!(path, dir.path().join("b.yaml"));
        assert_eq!(cfg.max_vms, Some(MaxVms(3)));
    }
}
