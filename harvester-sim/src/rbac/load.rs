//! Reading the RBAC objects (ClusterRole, Role, ClusterRoleBinding, RoleBinding,
//! ServiceAccount) out of deployment manifests: multi-document YAML files, or directories of
//! them; kustomization files and every other kind are skipped.

use std::path::Path;

use anyhow::{anyhow, Context};
use serde_json::Value;

/// The kinds taken from manifests.
pub const RBAC_KINDS: [&str; 5] = [
    "ClusterRole",
    "Role",
    "ClusterRoleBinding",
    "RoleBinding",
    "ServiceAccount",
];

const NAMESPACED: [&str; 3] = ["Role", "RoleBinding", "ServiceAccount"];

fn is_kustomization(path: &Path) -> bool {
    matches!(
        path.file_name().and_then(|n| n.to_str()),
        Some("kustomization.yaml" | "kustomization.yml" | "Kustomization")
    )
}

/// The RBAC objects in a YAML text (`origin` names it in errors). Namespaced kinds must
/// carry `metadata.namespace` (kustomize's `namespace:` is not applied here).
pub fn parse(text: &str, origin: &str) -> anyhow::Result<Vec<Value>> {
    let mut opts = serde_saphyr::Options::default();
    opts.budget = None;
    let docs: Vec<Value> = serde_saphyr::from_multiple_with_options(text, opts)
        .map_err(|e| anyhow!("{origin}: invalid YAML: {e}"))?;
    let mut out = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
        if !RBAC_KINDS.contains(&kind) {
            continue;
        }
        let name = doc.pointer("/metadata/name").and_then(Value::as_str);
        let ns = doc.pointer("/metadata/namespace").and_then(Value::as_str);
        if name.is_none_or(str::is_empty) {
            return Err(anyhow!(
                "{origin}: document {}: {kind} without metadata.name",
                i + 1
            ));
        }
        if NAMESPACED.contains(&kind) && ns.is_none_or(str::is_empty) {
            return Err(anyhow!(
                "{origin}: document {}: {kind} {:?} without metadata.namespace",
                i + 1,
                name.unwrap_or_default()
            ));
        }
        out.push(doc);
    }
    Ok(out)
}

/// The RBAC objects of a file, or of every `*.yaml`/`*.yml` file in a directory (sorted).
pub fn load(path: &Path) -> anyhow::Result<Vec<Value>> {
    if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .with_context(|| format!("cannot read RBAC directory {}", path.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                    && !is_kustomization(p)
            })
            .collect();
        files.sort();
        let mut out = Vec::new();
        for f in files {
            out.extend(load(&f)?);
        }
        return Ok(out);
    }
    if is_kustomization(path) {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read RBAC manifest {}", path.display()))?;
    parse(&text, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_rbac_kinds_only() {
        let text = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: d, namespace: ns1}\n---\n\
                    apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: c}\nrules: []\n---\n\
                    apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: s, namespace: ns1}\n";
        let objs = parse(text, "t");
        assert_eq!(objs.as_ref().map(Vec::len).ok(), Some(2), "{objs:?}");
        assert!(parse(
            "kind: Role\napiVersion: rbac.authorization.k8s.io/v1\nmetadata: {name: r}\n",
            "t"
        )
        .is_err());
        assert!(is_kustomization(Path::new("deploy/kustomization.yaml")));
    }
}
