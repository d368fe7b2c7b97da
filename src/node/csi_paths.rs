//! Which Longhorn volume (PV name) a host path belongs to: `/dev/longhorn/<vol>` and the
//! kubelet CSI paths; `/dev/mapper/<name>` (encrypted Longhorn volumes are mapped under
//! the volume's name) is reported separately because most mapper names are not volumes.
//!
//! Matching is by consecutive path components anywhere in the path, so the same rules
//! work for `/dev/longhorn/x` and `/host/dev/longhorn/x`, and for any kubelet root dir.
//! Kubelet paths (Kubernetes ≥ 1.24):
//! - filesystem staging: `<kubelet>/plugins/kubernetes.io/csi/driver.longhorn.io/<sha256(volumeHandle)>/globalmount`
//!   (before 1.24: `<kubelet>/plugins/kubernetes.io/csi/pv/<pv>/globalmount`)
//! - filesystem publish: `<kubelet>/pods/<pod-uid>/volumes/kubernetes.io~csi/<pv>/mount`
//! - block staging: `<kubelet>/plugins/kubernetes.io/csi/volumeDevices/staging/<pv>`
//! - block publish: `<kubelet>/plugins/kubernetes.io/csi/volumeDevices/publish/<pv>/<pod-uid>`
//! - block pod map: `<kubelet>/pods/<pod-uid>/volumeDevices/kubernetes.io~csi/<pv>`

use sha2::{Digest, Sha256};

/// The Longhorn CSI driver name.
pub const LONGHORN_DRIVER: &str = "driver.longhorn.io";

/// The volume a path names, if it follows one of the known layouts.
pub fn volume_of(path: &str) -> Option<String> {
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for window in parts.windows(3) {
        if let ["dev", "longhorn", vol] = window {
            return Some((*vol).into());
        }
    }
    for (i, part) in parts.iter().enumerate() {
        let at = |k: usize| parts.get(i + k).copied();
        match *part {
            "volumeDevices"
                if (at(1) == Some("publish") || at(1) == Some("staging"))
                    && i > 0
                    && parts.get(i - 1) == Some(&"csi") =>
            {
                return at(2).map(Into::into);
            }
            "kubernetes.io~csi" if i >= 1 => {
                let parent = parts.get(i - 1).copied();
                if parent == Some("volumes") || parent == Some("volumeDevices") {
                    return at(1).map(Into::into);
                }
            }
            "pv" if i >= 1 && parts.get(i - 1) == Some(&"csi") => {
                return at(1).map(Into::into);
            }
            _ => {}
        }
    }
    None
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
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    parts.windows(3).find_map(|w| match w {
        [driver, sha, "globalmount"] if *driver == LONGHORN_DRIVER => Some((*sha).to_string()),
        _ => None,
    })
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
