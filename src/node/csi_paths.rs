//! Which volume a host path names: `/dev/longhorn/<volume>` names the Longhorn volume
//! (the CSI volume handle), the kubelet's CSI paths name the PV (or, for filesystem
//! staging, the sha256 of the handle); `/dev/mapper/<name>` (encrypted Longhorn volumes
//! are mapped under the volume's name) is reported separately because most mapper names
//! are not volumes.
//!
//! Matching is by consecutive path components anywhere in the path, so the same rules
//! work for `/dev/longhorn/x` and `/host/dev/longhorn/x`, and for any kubelet root dir.
//!
//! Kubelet paths, as the kubelet builds them (kubernetes/kubernetes, `pkg/volume/csi/`:
//! `csi_block.go` — the directory-structure comment at its top and `GetGlobalMapPath`,
//! `getStagingPath`, `getPublishPath`, `GetPodDeviceMapPath`; `csi_attacher.go` —
//! `makeDeviceMountPath`; `csi_mounter.go` — `GetPath`; the same in v1.30–v1.33). Every
//! `<pv>` is the volume spec name, which for a PV-backed volume is the PV's name:
//! - filesystem staging: `<kubelet>/plugins/kubernetes.io/csi/<driver>/<sha256(volumeHandle)>/globalmount`
//!   (since v1.24, kubernetes PR #107065; before: `<kubelet>/plugins/kubernetes.io/csi/pv/<pv>/globalmount`)
//! - filesystem publish: `<kubelet>/pods/<pod-uid>/volumes/kubernetes.io~csi/<pv>/mount`
//! - block staging: `<kubelet>/plugins/kubernetes.io/csi/volumeDevices/staging/<pv>`
//! - block publish: `<kubelet>/plugins/kubernetes.io/csi/volumeDevices/publish/<pv>/<pod-uid>`
//! - block global map: `<kubelet>/plugins/kubernetes.io/csi/volumeDevices/<pv>/dev/<pod-uid>`
//!   (a bind mount of the publish path; the kubelet's loop device "descriptor lock" is
//!   backed by it)
//! - block pod map: `<kubelet>/pods/<pod-uid>/volumeDevices/kubernetes.io~csi/<pv>`
//!
//! A PV named `publish` or `staging` would make block paths ambiguous; such names are
//! taken as the `publish`/`staging` directories.

use sha2::{Digest, Sha256};

/// The Longhorn CSI driver name.
pub const LONGHORN_DRIVER: &str = "driver.longhorn.io";

/// What a host path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathVolume {
    /// `/dev/longhorn/<volume>`: the Longhorn volume name (the CSI volume handle).
    Device(String),
    /// A kubelet CSI path named after the PV.
    Kubelet(String),
    /// Filesystem staging, `<driver>/<sha256(volume handle)>/globalmount`.
    Staging {
        /// The CSI driver.
        driver: String,
        /// Hex sha256 of the volume handle.
        hash: String,
    },
}

/// What `path` names, if it follows one of the known layouts (files below a staging or
/// publish directory included).
pub fn classify(path: &str) -> Option<PathVolume> {
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for window in parts.windows(3) {
        if let ["dev", "longhorn", vol] = window {
            return Some(PathVolume::Device((*vol).into()));
        }
    }
    for (i, part) in parts.iter().enumerate() {
        let at = |k: usize| parts.get(i + k).copied();
        let after_csi = i > 0 && parts.get(i - 1) == Some(&"csi");
        match *part {
            "volumeDevices" if after_csi => {
                return match at(1) {
                    Some("publish" | "staging") => at(2).map(|p| PathVolume::Kubelet(p.into())),
                    Some(pv) => Some(PathVolume::Kubelet(pv.into())),
                    None => None,
                };
            }
            "kubernetes.io~csi" if i >= 1 => {
                let parent = parts.get(i - 1).copied();
                if parent == Some("volumes") || parent == Some("volumeDevices") {
                    return at(1).map(|p| PathVolume::Kubelet(p.into()));
                }
            }
            "pv" if after_csi => {
                return at(1).map(|p| PathVolume::Kubelet(p.into()));
            }
            driver if after_csi && at(2) == Some("globalmount") => {
                if let Some(hash) = at(1).filter(|h| is_sha256_hex(h)) {
                    return Some(PathVolume::Staging {
                        driver: driver.into(),
                        hash: hash.into(),
                    });
                }
            }
            _ => {}
        }
    }
    None
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The volume a path names: the Longhorn volume for `/dev/longhorn/<volume>`, the PV for
/// kubelet paths (see [`classify`], which says which).
pub fn volume_of(path: &str) -> Option<String> {
    match classify(path)? {
        PathVolume::Device(v) | PathVolume::Kubelet(v) => Some(v),
        PathVolume::Staging { .. } => None,
    }
}

/// The name in a `/dev/mapper/<name>` path.
pub fn mapper_name(path: &str) -> Option<String> {
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    parts.windows(3).find_map(|w| match w {
        ["dev", "mapper", name] => Some((*name).to_string()),
        _ => None,
    })
}

/// The volume a mountinfo `root` names when a device node was bind-mounted from
/// devtmpfs (`/longhorn/<vol>`).
pub fn volume_of_devtmpfs_root(root: &str) -> Option<String> {
    let parts: Vec<&str> = root.split('/').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        ["longhorn", vol] => Some((*vol).to_string()),
        _ => None,
    }
}

/// The `<sha>` of a Longhorn filesystem staging path
/// (`…/csi/driver.longhorn.io/<sha>/globalmount`).
pub fn longhorn_staging_hash(path: &str) -> Option<String> {
    match classify(path)? {
        PathVolume::Staging { driver, hash } if driver == LONGHORN_DRIVER => Some(hash),
        _ => None,
    }
}

/// The staging directory name kubelet derives from a volume handle: hex sha256.
pub fn staging_hash(volume_handle: &str) -> String {
    Sha256::digest(volume_handle.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PV: &str = "pvc-3f1c7e2a-1b2c-4d3e-8f9a-0b1c2d3e4f5a";

    #[test]
    fn known_layouts() {
        for p in [
            format!("/dev/longhorn/{PV}"),
            format!("/host/dev/longhorn/{PV} (deleted)"),
            format!("/var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices/publish/{PV}/5d7c1b2a-3e4f-4a5b-8c6d-7e8f9a0b1c2d"),
            format!("/var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices/staging/{PV}"),
            format!("/var/lib/kubelet/pods/5d7c1b2a-3e4f-4a5b-8c6d-7e8f9a0b1c2d/volumes/kubernetes.io~csi/{PV}/mount"),
            format!("/var/lib/kubelet/pods/5d7c1b2a-3e4f-4a5b-8c6d-7e8f9a0b1c2d/volumes/kubernetes.io~csi/{PV}/mount/disk.img"),
            format!("/var/lib/kubelet/pods/5d7c1b2a-3e4f-4a5b-8c6d-7e8f9a0b1c2d/volumeDevices/kubernetes.io~csi/{PV}"),
            format!("/var/lib/kubelet/plugins/kubernetes.io/csi/pv/{PV}/globalmount"),
        ] {
            assert_eq!(volume_of(&p).as_deref(), Some(PV), "{p}");
        }
        assert_eq!(volume_of("/dev/sda1"), None);
        assert_eq!(volume_of("/dev/mapper/vg-root"), None);
        assert_eq!(
            mapper_name(&format!("/dev/mapper/{PV}")).as_deref(),
            Some(PV)
        );
        assert_eq!(
            volume_of("/var/lib/kubelet/pods/x/volumes/kubernetes.io~empty-dir/private"),
            None
        );
        assert_eq!(
            volume_of_devtmpfs_root(&format!("/longhorn/{PV}")).as_deref(),
            Some(PV)
        );
        assert_eq!(volume_of_devtmpfs_root("/"), None);
    }

    #[test]
    fn paths_say_which_name_they_carry() {
        const HANDLE: &str = "restored-disk-7";
        assert_eq!(
            classify(&format!("/dev/longhorn/{HANDLE}")),
            Some(PathVolume::Device(HANDLE.into()))
        );
        for p in [
            format!("/var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices/staging/{PV}"),
            format!("/var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices/publish/{PV}/5d7c1b2a-3e4f-4a5b-8c6d-7e8f9a0b1c2d"),
            format!("/var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices/{PV}/dev/5d7c1b2a-3e4f-4a5b-8c6d-7e8f9a0b1c2d"),
            format!("/var/lib/kubelet/pods/5d7c1b2a-3e4f-4a5b-8c6d-7e8f9a0b1c2d/volumeDevices/kubernetes.io~csi/{PV}"),
            format!("/var/lib/kubelet/pods/5d7c1b2a-3e4f-4a5b-8c6d-7e8f9a0b1c2d/volumes/kubernetes.io~csi/{PV}/mount"),
        ] {
            assert_eq!(classify(&p), Some(PathVolume::Kubelet(PV.into())), "{p}");
        }
        let h = staging_hash(HANDLE);
        for driver in [LONGHORN_DRIVER, "other.csi.example.com"] {
            let p = format!(
                "/var/lib/kubelet/plugins/kubernetes.io/csi/{driver}/{h}/globalmount/lost+found"
            );
            assert_eq!(
                classify(&p),
                Some(PathVolume::Staging {
                    driver: driver.into(),
                    hash: h.clone()
                }),
                "{p}"
            );
        }
        // Not a sha: not a staging path.
        assert_eq!(
            classify("/var/lib/kubelet/plugins/kubernetes.io/csi/x/abc/globalmount"),
            None
        );
    }

    #[test]
    fn staging_hash_matches_kubelet() {
        // sha256("pvc-test"), as kubelet names the staging directory.
        let h = staging_hash("pvc-test");
        assert_eq!(h.len(), 64);
        let path = format!(
            "/var/lib/kubelet/plugins/kubernetes.io/csi/driver.longhorn.io/{h}/globalmount"
        );
        assert_eq!(longhorn_staging_hash(&path), Some(h));
        assert_eq!(
            staging_hash(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn never_panics(s in "[ -~]{0,120}") {
            let _ = volume_of(&s);
            let _ = volume_of_devtmpfs_root(&s);
            let _ = mapper_name(&s);
            let _ = longhorn_staging_hash(&s);
        }

        #[test]
        fn device_path_round_trip(vol in "[a-z0-9][-a-z0-9]{0,60}") {
            prop_assert_eq!(volume_of(&format!("/dev/longhorn/{vol}")), Some(vol));
        }
    }
}
