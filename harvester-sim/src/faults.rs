//! Fault injection: rules that match a method and a path pattern and answer with an error
//! status, add latency, or drop the connection.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a fault does when it fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum FaultAction {
    /// Answer with this HTTP status and a `Status` body (`Retry-After` for 429 and 503).
    #[serde(rename_all = "camelCase")]
    Status {
        /// HTTP status code.
        code: u16,
        /// Message in the `Status` body (a default per code when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// `Retry-After` seconds (default 1 for 429).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<u32>,
    },
    /// Delay the request, then serve it normally.
    #[serde(rename_all = "camelCase")]
    Latency {
        /// Milliseconds to wait.
        ms: u64,
    },
    /// Close the connection without answering.
    Drop,
}

/// One fault rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultRule {
    /// HTTP method to match (`None` or `*`: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Path pattern: a glob when it contains `*`, `?` or `[`, else a substring of the path.
    pub path: String,
    /// What to do.
    #[serde(flatten)]
    pub action: FaultAction,
    /// Fire at most this many times (`None`: every time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
    /// Let this many matching requests through before the rule starts firing.
    #[serde(default)]
    pub after: u32,
    /// Matching requests seen so far (maintained by the simulator).
    #[serde(default)]
    pub matched: u32,
    /// Times fired so far (maintained by the simulator).
    #[serde(default)]
    pub fired: u32,
}

impl FaultRule {
    /// A rule answering `code` on every request whose path matches `path`.
    pub fn status(method: Option<&str>, path: &str, code: u16) -> Self {
        FaultRule {
            method: method.map(str::to_string),
            path: path.to_string(),
            action: FaultAction::Status {
                code,
                message: None,
                retry_after: None,
            },
            times: None,
            after: 0,
            matched: 0,
            fired: 0,
        }
    }

    /// A rule adding `ms` of latency.
    pub fn latency(method: Option<&str>, path: &str, ms: u64) -> Self {
        FaultRule {
            action: FaultAction::Latency { ms },
            ..Self::status(method, path, 0)
        }
    }

    /// A rule dropping the connection.
    pub fn drop_connection(method: Option<&str>, path: &str) -> Self {
        FaultRule {
            action: FaultAction::Drop,
            ..Self::status(method, path, 0)
        }
    }

    /// Limits the rule to `n` firings.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    /// Lets the first `n` matching requests through.
    pub fn after(mut self, n: u32) -> Self {
        self.after = n;
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        let method_ok = match self.method.as_deref() {
            None | Some("*") | Some("") => true,
            Some(m) => m.eq_ignore_ascii_case(method),
        };
        if !method_ok {
            return false;
        }
        if self.path.contains(['*', '?', '[']) {
            glob::Pattern::new(&self.path).is_ok_and(|p| p.matches(path))
        } else {
            path.contains(&self.path)
        }
    }
}

/// The outcome of checking a request against the rules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultDecision {
    /// Total latency to add before answering.
    pub delay: Duration,
    /// A status or drop action to take instead of serving (the first firing one).
    pub action: Option<FaultAction>,
}

/// The set of fault rules.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<Vec<FaultRule>>,
}

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<FaultRule>> {
        self.rules.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a rule (evaluated after the existing ones).
    pub fn add(&self, rule: FaultRule) {
        self.lock().push(rule);
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// The rules with their counters.
    pub fn list(&self) -> Vec<FaultRule> {
        self.lock().clone()
    }

    /// Counts the request against every matching rule and says what to do.
    pub fn check(&self, method: &str, path: &str) -> FaultDecision {
        let mut d = FaultDecision::default();
        for r in self.lock().iter_mut() {
            if !r.matches(method, path) {
                continue;
            }
            r.matched += 1;
            if r.matched <= r.after || r.times.is_some_and(|t| r.fired >= t) {
                continue;
            }
            match &r.action {
                FaultAction::Latency { ms } => {
                    r.fired += 1;
                    d.delay += Duration::from_millis(*ms);
                }
                other => {
                    if d.action.is_none() {
                        r.fired += 1;
                        d.action = Some(other.clone());
                    }
                }
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_after_and_patterns() {
        let f = Faults::default();
        f.add(
            FaultRule::status(Some("PATCH"), "/apis/kubevirt.io/*", 503)
                .times(2)
                .after(1),
        );
        let hit = |m: &str, p: &str| f.check(m, p).action.is_some();
        let p = "/apis/kubevirt.io/v1/namespaces/a/virtualmachineinstances/x";
        assert!(!hit("GET", p), "method must match");
        assert!(!hit("PATCH", p), "first match is let through");
        assert!(hit("PATCH", p));
        assert!(hit("PATCH", p));
        assert!(!hit("PATCH", p), "times exhausted");
        let r = f.list();
        assert_eq!((r[0].matched, r[0].fired), (4, 2));
        f.clear();
        f.add(FaultRule::latency(None, "pods", 5));
        f.add(FaultRule::drop_connection(None, "pods"));
        let d = f.check("GET", "/api/v1/pods");
        assert_eq!(d.delay, Duration::from_millis(5));
        assert_eq!(d.action, Some(FaultAction::Drop));
    }

    #[test]
    fn json_form() {
        let r: Result<FaultRule, _> = serde_json::from_str(
            r#"{"method":"GET","path":"/api/v1/pods","action":"status","code":429,"retryAfter":2,"times":1}"#,
        );
        assert!(matches!(
            r.map(|r| r.action),
            Ok(FaultAction::Status {
                code: 429,
                retry_after: Some(2),
                ..
            })
        ));
    }
}
