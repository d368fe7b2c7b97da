//! Where flags, the configuration file and the defaults meet: [`Layers::merge`] is the one
//! place, called at start and again by the agent when the file changes.

use std::path::PathBuf;
use std::time::Duration;

use super::file::{self, ConfigPath, FileConfig, FileError};
use super::{ActOn, Policy};
use crate::cli::PolicyArgs;
use crate::cluster::DEFAULT_LONGHORN_NAMESPACE;

/// The flags and the configuration file, kept so that a changed file can be merged again
/// under the same flags.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    /// Which file.
    pub path: Option<ConfigPath>,
    /// The file read, and its text when read.
    pub file: Option<(PathBuf, String)>,
    /// The policy flags given.
    pub flags: PolicyArgs,
    /// `--act-on`, when given.
    pub act_on: Option<ActOn>,
    /// `--boot-window`, when given.
    pub boot_window: Option<Duration>,
    /// `--longhorn-namespace`, when given.
    pub longhorn_namespace: Option<String>,
    /// Why the file was refused when the agent started (it then reports only until a
    /// valid file appears: fail closed, no crash loop).
    pub refused: Option<FileError>,
}

/// How long a recovered VM is followed by default: long enough for a VM to be scheduled,
/// its Longhorn volumes attached and its guest started on a node that is busy after a
/// site-wide power cut.
pub const DEFAULT_FOLLOW_FOR: Duration = Duration::from_secs(5 * 60);

/// Flags over the file over the defaults: the values every command decides with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// stuckAfter, controllerGrace, maxVms, alsoFinalizers (the rest of `Policy` is per run).
    pub stuck_after: Duration,
    /// controllerGrace.
    pub controller_grace: Duration,
    /// maxVms.
    pub max_vms: usize,
    /// alsoFinalizers.
    pub also_finalizers: Vec<String>,
    /// actOn.
    pub act_on: ActOn,
    /// bootWindow.
    pub boot_window: Duration,
    /// longhornNamespace.
    pub longhorn_namespace: String,
    /// followFor.
    pub follow_for: Duration,
}

impl Layers {
    /// The one place where flags, file and defaults meet.
    pub fn merge(&self, file: &FileConfig) -> Merged {
        let d = Policy::default();
        let f = &self.flags;
        Merged {
            stuck_after: f
                .stuck_after
                .or(file.stuck_after.map(|x| x.0))
                .unwrap_or(d.stuck_after),
            controller_grace: f
                .controller_grace
                .or(file.controller_grace.map(|x| x.0))
                .unwrap_or(d.controller_grace),
            max_vms: f.max_vms.or(file.max_vms.map(|x| x.0)).unwrap_or(d.max_vms),
            also_finalizers: if f.also_finalizer.is_empty() {
                file.also_finalizers.clone().unwrap_or_default()
            } else {
                f.also_finalizer.clone()
            },
            act_on: self.act_on.or(file.act_on).unwrap_or(ActOn::Unclean),
            boot_window: self
                .boot_window
                .or(file.boot_window.map(|x| x.0))
                .unwrap_or(Duration::from_secs(30 * 60)),
            longhorn_namespace: self
                .longhorn_namespace
                .clone()
                .or_else(|| file.longhorn_namespace.clone())
                .unwrap_or_else(|| DEFAULT_LONGHORN_NAMESPACE.to_string()),
            follow_for: f
                .follow_for
                .or(file.follow_for.map(|x| x.0))
                .unwrap_or(DEFAULT_FOLLOW_FOR),
        }
    }

    /// The configuration of the file read (already validated when it was read).
    pub fn file_config(&self) -> FileConfig {
        self.file
            .as_ref()
            .and_then(|(_, text)| file::parse(text).ok())
            .unwrap_or_default()
    }

    /// Reads the file again: `Ok(None)` when its text did not change, else the merged
    /// values (and the layers that now hold the new text). A bad file is an error and
    /// leaves `self` as it was.
    pub fn reload(&self) -> Result<Option<(Layers, Merged)>, FileError> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        let loaded = file::load(path)?;
        let now = loaded.as_ref().map(|(p, t, _)| (p.clone(), t.clone()));
        if now == self.file {
            return Ok(None);
        }
        let cfg = loaded.map(|(_, _, c)| c).unwrap_or_default();
        let next = Layers {
            file: now,
            refused: None,
            ..self.clone()
        };
        let merged = next.merge(&cfg);
        Ok(Some((next, merged)))
    }
}
