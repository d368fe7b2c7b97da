//! Re-reading the configuration file while the agent runs: a changed valid file replaces the
//! policy, `actOn` and `followFor` (the next follow's bound; flags given at start still win); a bad one is logged, shown in the
//! status file and in `vmrecover_config_last_reload_successful`, and the configuration in
//! force stays. An agent that started with a bad file reports only until a valid one appears.

use super::status::ConfigStatus;
use super::Agent;
use crate::boot::Verdict;
use crate::config::{ActOn, Layers};

/// Whether the agent acts by itself under `act_on` after a boot judged `verdict`.
pub fn acting(act_on: ActOn, verdict: Verdict) -> bool {
    match act_on {
        ActOn::Always => true,
        ActOn::Never => false,
        ActOn::Unclean => verdict == Verdict::Unclean,
    }
}

impl Agent {
    /// The configuration file in force at start (or why it was refused).
    pub fn config_loaded(&mut self, layers: &Layers) {
        let refused = layers.refused.as_ref().map(|e| e.to_string());
        if let Some(why) = &refused {
            tracing::warn!("{why}; reporting only until the file is fixed");
        }
        self.metrics.set_config_ok(refused.is_none());
        self.status.config = Some(ConfigStatus {
            file: layers.file.as_ref().map(|(p, _)| p.clone()),
            loaded: jiff::Timestamp::now(),
            refused,
        });
        self.save_status();
    }

    /// Re-reads the file behind `layers`; true when the policy changed (a pass is due).
    pub fn reload_config(&mut self, layers: &mut Layers) -> bool {
        match layers.reload() {
            Ok(None) => false,
            Ok(Some((next, m))) => {
                self.policy.stuck_after = m.stuck_after;
                self.policy.controller_grace = m.controller_grace;
                self.policy.max_vms = m.max_vms;
                self.policy.also_finalizers = m.also_finalizers;
                self.status.act_on = m.act_on;
                if let Ok(mut f) = self.follow_for.lock() {
                    *f = m.follow_for;
                }
                self.status.acting = acting(m.act_on, self.status.verdict);
                tracing::info!(
                    file = ?next.file.as_ref().map(|(p, _)| p),
                    "configuration re-read: actOn {:?}, stuckAfter {}, controllerGrace {}, \
                     maxVms {}, alsoFinalizers {:?}, followFor {} (bootWindow and \
                     longhornNamespace take effect at the next start)",
                    m.act_on,
                    humantime::format_duration(self.policy.stuck_after),
                    humantime::format_duration(self.policy.controller_grace),
                    self.policy.max_vms,
                    self.policy.also_finalizers,
                    humantime::format_duration(m.follow_for),
                );
                *layers = next;
                self.config_loaded(layers);
                true
            }
            Err(e) => {
                let why = e.to_string();
                let cs = self.status.config.get_or_insert(ConfigStatus {
                    file: None,
                    loaded: jiff::Timestamp::now(),
                    refused: None,
                });
                if cs.refused.as_deref() != Some(why.as_str()) {
                    tracing::warn!("{why}; the configuration in force stays");
                    cs.refused = Some(why);
                    self.metrics.set_config_ok(false);
                    self.save_status();
                }
                false
            }
        }
    }
}
