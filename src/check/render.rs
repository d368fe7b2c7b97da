//! The table `check` prints: one line per check, the fix indented under anything not ok.

use super::Check;

/// Renders the checks for a person.
pub fn table(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!(
            "{:<4}  {:<width$}  {}\n",
            c.status.as_str(),
            c.name,
            c.detail
        ));
        if !c.fix.is_empty() {
            out.push_str(&format!("{:<4}  {:<width$}  fix: {}\n", "", "", c.fix));
        }
    }
    let count = |s| checks.iter().filter(|c| c.status == s).count();
    out.push_str(&format!(
        "{} ok, {} warn, {} fail\n",
        count(super::Status::Ok),
        count(super::Status::Warn),
        count(super::Status::Fail)
    ));
    out
}
