//! Scenario files: multi-document YAML of Kubernetes objects as `kubectl get -o yaml` prints
//! them, with an optional `kind: SimulatorSettings` document (`apiVersion: sim.vmrecover.dev/v1`).

use std::path::Path;

use anyhow::{anyhow, Context};
use serde_json::Value;

use crate::settings::SettingsPatch;

/// `apiVersion` of the settings document.
pub const SETTINGS_API_VERSION: &str = "sim.vmrecover.dev/v1";

/// A parsed scenario.
#[derive(Debug, Clone, Default)]
pub struct Scenario {
    /// Settings from `SimulatorSettings` documents (later documents win field by field).
    pub settings: SettingsPatch,
    /// Objects, in file order (`kind: List` documents are flattened).
    pub objects: Vec<Value>,
}

impl Scenario {
    /// Parses scenario text; `origin` names the source in errors.
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Scenario> {
        let mut opts = serde_saphyr::Options::default();
        opts.budget = None;
        let docs: Vec<Value> = serde_saphyr::from_multiple_with_options(text, opts)
            .map_err(|e| anyhow!("{origin}: invalid YAML: {e}"))?;
        let mut sc = Scenario::default();
        for (i, doc) in docs.into_iter().enumerate() {
            sc.add_doc(doc, &format!("{origin}: document {}", i + 1))?;
        }
        Ok(sc)
    }

    /// Reads and parses a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Scenario> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read scenario {}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Merges another scenario into this one (its settings win where set).
    pub fn merge(&mut self, other: Scenario) {
        self.settings.merge(other.settings);
        self.objects.extend(other.objects);
    }

    fn add_doc(&mut self, doc: Value, where_: &str) -> anyhow::Result<()> {
        if doc.is_null() {
            return Ok(());
        }
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
        let av = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        match kind {
            "" => Err(anyhow!("{where_}: object without kind")),
            "SimulatorSettings" => {
                if av != SETTINGS_API_VERSION {
                    return Err(anyhow!(
                        "{where_}: SimulatorSettings must have apiVersion {SETTINGS_API_VERSION}, not {av:?}"
                    ));
                }
                let mut body = doc.clone();
                if let Some(o) = body.as_object_mut() {
                    o.remove("kind");
                    o.remove("apiVersion");
                    o.remove("metadata");
                }
                let p: SettingsPatch = serde_json::from_value(body)
                    .map_err(|e| anyhow!("{where_}: bad SimulatorSettings: {e}"))?;
                p.check()
                    .map_err(|e| anyhow!("{where_}: bad SimulatorSettings: {e}"))?;
                self.merge(Scenario {
                    settings: p,
                    objects: Vec::new(),
                });
                Ok(())
            }
            k if k == "List" || k.ends_with("List") => {
                let items = doc
                    .get("items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let item_kind = k.strip_suffix("List").unwrap_or("");
                for (j, mut item) in items.into_iter().enumerate() {
                    if let Some(o) = item.as_object_mut() {
                        if !item_kind.is_empty() && !o.contains_key("kind") {
                            o.insert("kind".into(), Value::String(item_kind.into()));
                            o.insert("apiVersion".into(), Value::String(av.into()));
                        }
                    }
                    self.add_doc(item, &format!("{where_} item {}", j + 1))?;
                }
                Ok(())
            }
            _ => {
                if av.is_empty() {
                    return Err(anyhow!("{where_}: {kind} without apiVersion"));
                }
                self.objects.push(doc);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_objects_and_lists() {
        let text = r#"
apiVersion: sim.vmrecover.dev/v1
kind: SimulatorSettings
downNodes: [n1]
virtController: false
---
apiVersion: v1
kind: Namespace
metadata: {name: a}
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Node
  metadata: {name: n1}
---
"#;
        let sc = Scenario::parse(text, "t");
        assert!(sc.is_ok(), "{sc:?}");
        let sc = sc.unwrap_or_default();
        assert_eq!(sc.settings.virt_controller, Some(false));
        assert_eq!(sc.objects.len(), 2);
        assert!(Scenario::parse("kind: Pod\n", "t").is_err());
        assert!(Scenario::parse("a: [", "t").is_err());
    }
}
