//! Versions: Kubernetes (`/version`), KubeVirt (the KubeVirt CR's
//! `status.observedKubeVirtVersion`), Harvester (setting `server-version`) and Longhorn
//! (setting `current-longhorn-version`), each inside the tested matrix
//! (docs/architecture.md §4) or a warning naming the nearest tested release. A version that
//! cannot be read or parsed is `fail`.

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client};
use serde_json::Value;

use super::Check;
use crate::cluster::{describe, RequestFailed, HARVESTER_NAMESPACE};

/// One component's tested minor releases, oldest to newest.
struct Matrix {
    name: &'static str,
    tested: &'static [(u64, u64)],
}

const KUBERNETES: Matrix = Matrix {
    name: "Kubernetes",
    tested: &[
        (1, 29),
        (1, 30),
        (1, 31),
        (1, 32),
        (1, 33),
        (1, 34),
        (1, 35),
    ],
};
const KUBEVIRT: Matrix = Matrix {
    name: "KubeVirt",
    tested: &[(1, 3), (1, 4), (1, 5), (1, 6), (1, 7)],
};
const HARVESTER: Matrix = Matrix {
    name: "Harvester",
    tested: &[(1, 4), (1, 5), (1, 6), (1, 7), (1, 8)],
};
const LONGHORN: Matrix = Matrix {
    name: "Longhorn",
    tested: &[(1, 7), (1, 8), (1, 9), (1, 10)],
};

/// `major.minor` of `v1.33.5+rke2r1`, `1.3.1-150600.5.9.1`, `v1.10.0`.
fn minor(version: &str) -> Option<(u64, u64)> {
    let v = version.trim().trim_start_matches('v');
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The verdict for `version` read from `source`.
fn judge(m: &Matrix, version: &str, source: &str) -> Check {
    let name = format!("version.{}", m.name.to_lowercase());
    let Some(v) = minor(version) else {
        return Check::fail(
            name,
            format!("{source} reports {version:?}, not a version"),
            "see what the cluster reports there; vmrecover cannot tell whether it was tested",
        );
    };
    let (first, last) = (m.tested[0], m.tested[m.tested.len() - 1]);
    if m.tested.contains(&v) {
        return Check::ok(name, format!("{} {version} ({source}): tested", m.name));
    }
    let nearest = if v < first { first } else { last };
    Check::warn(
        name,
        format!(
            "{} {version} ({source}) is outside the tested {}.{}-{}.{}; nearest tested: {}.{}",
            m.name, first.0, first.1, last.0, last.1, nearest.0, nearest.1
        ),
        format!(
            "rehearse a recovery on a test cluster of this version first; vmrecover was built for {} {}.{}-{}.{}",
            m.name, first.0, first.1, last.0, last.1
        ),
    )
}

fn unreadable(m: &Matrix, what: String, source: &str) -> Check {
    Check::fail(
        format!("version.{}", m.name.to_lowercase()),
        format!("{source}: {what}"),
        "grant the read (the chart's RBAC does) or see the message",
    )
}

async fn get_field(
    client: &Client,
    gvk: (&str, &str, &str, &str),
    ns: Option<&str>,
    name: &str,
    pointer: &[&str],
) -> Result<String, FieldError> {
    let (g, v, k, plural) = gvk;
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), plural);
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let what = match ns {
        Some(ns) => format!("{plural}.{g} {ns}/{name}"),
        None => format!("{plural}.{g} {name}"),
    };
    let obj = api
        .get_opt(name)
        .await
        .map_err(|e| FieldError::Request(RequestFailed::new("get", what.clone(), e)))?
        .ok_or_else(|| FieldError::NotFound(what.clone()))?;
    pointer
        .iter()
        .filter_map(|p| obj.data.pointer(p).and_then(Value::as_str))
        .find(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| FieldError::NoField {
            what,
            fields: pointer.join(" or "),
        })
}

/// Why a version field could not be read.
#[derive(Debug, thiserror::Error)]
enum FieldError {
    /// The object could not be read.
    #[error(transparent)]
    Request(RequestFailed),
    /// There is no such object.
    #[error("{0} not found")]
    NotFound(String),
    /// The object has none of the fields.
    #[error("{what} has no {fields}")]
    NoField {
        /// The object.
        what: String,
        /// The fields looked at, `a or b`.
        fields: String,
    },
}

/// The four version checks.
pub async fn checks(client: &Client) -> Vec<Check> {
    let mut out = Vec::new();
    out.push(match client.apiserver_version().await {
        Ok(info) => judge(&KUBERNETES, &info.git_version, "/version"),
        Err(e) => unreadable(&KUBERNETES, describe(&e, "get", "/version"), "/version"),
    });
    let kv_src = "KubeVirt CR harvester-system/kubevirt status.observedKubeVirtVersion";
    out.push(
        match get_field(
            client,
            ("kubevirt.io", "v1", "KubeVirt", "kubevirts"),
            Some(HARVESTER_NAMESPACE),
            "kubevirt",
            &["/status/observedKubeVirtVersion"],
        )
        .await
        {
            Ok(v) => judge(&KUBEVIRT, &v, kv_src),
            Err(e) => unreadable(&KUBEVIRT, e.to_string(), kv_src),
        },
    );
    let hv_src = "Harvester setting server-version";
    out.push(
        match get_field(
            client,
            ("harvesterhci.io", "v1beta1", "Setting", "settings"),
            None,
            "server-version",
            &["/value", "/default"],
        )
        .await
        {
            Ok(v) => judge(&HARVESTER, &v, hv_src),
            Err(e) => unreadable(&HARVESTER, e.to_string(), hv_src),
        },
    );
    let lh_src = "Longhorn setting current-longhorn-version";
    out.push(
        match get_field(
            client,
            ("longhorn.io", "v1beta2", "Setting", "settings"),
            Some(crate::cluster::longhorn_namespace()),
            "current-longhorn-version",
            &["/value"],
        )
        .await
        {
            Ok(v) => judge(&LONGHORN, &v, lh_src),
            Err(e) => unreadable(&LONGHORN, e.to_string(), lh_src),
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Status;

    #[test]
    fn versions_inside_the_matrix_are_ok_outside_warn_unparsable_fail() {
        assert_eq!(judge(&KUBERNETES, "v1.33.5+rke2r1", "x").status, Status::Ok);
        assert_eq!(
            judge(&KUBEVIRT, "1.3.1-150600.5.9.1", "x").status,
            Status::Ok
        );
        let old = judge(&KUBEVIRT, "v1.1.0", "x");
        assert_eq!(old.status, Status::Warn);
        assert!(old.detail.contains("nearest tested: 1.3"), "{old:?}");
        let new = judge(&LONGHORN, "v1.11.0", "x");
        assert!(new.detail.contains("nearest tested: 1.10"), "{new:?}");
        assert_eq!(judge(&HARVESTER, "dev", "x").status, Status::Fail);
        assert_eq!(minor("v1.10.0"), Some((1, 10)));
    }
}
