//! Quota metrics, labelled by key name with bounded cardinality: the first
//! [`MAX_KEY_LABELS`] names a replica sees get their own label, later ones share `other`.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, PoisonError},
};

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

pub const MAX_KEY_LABELS: usize = 100;
/// The `key` label of requests whose key is not one ml-api issued (or was revoked).
pub const UNKNOWN_KEY: &str = "unknown";
pub const OTHER_KEYS: &str = "other";

#[derive(Clone)]
pub struct QuotaMetrics {
    requests: IntCounterVec,
    pub fallback: IntCounter,
    labels: Arc<Mutex<HashSet<String>>>,
}

impl QuotaMetrics {
    pub fn new(registry: &Registry) -> anyhow::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "ml_api_quota_requests_total",
                "Requests carrying an issued API key, by key name and decision (allowed, limited, invalid).",
            ),
            &["key", "decision"],
        )?;
        let fallback = IntCounter::new(
            "ml_api_quota_fallback_total",
            "Quota decisions taken by this replica alone because Redis was unreachable or slow.",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(fallback.clone()))?;
        Ok(Self {
            requests,
            fallback,
            labels: Arc::default(),
        })
    }

    fn label(&self, name: &str) -> String {
        let mut labels = self.labels.lock().unwrap_or_else(PoisonError::into_inner);
        if labels.contains(name) {
            return name.to_owned();
        }
        if labels.len() < MAX_KEY_LABELS {
            labels.insert(name.to_owned());
            return name.to_owned();
        }
        OTHER_KEYS.to_owned()
    }

    pub fn decided(&self, name: &str, allowed: bool) {
        let decision = if allowed { "allowed" } else { "limited" };
        self.requests
            .with_label_values(&[self.label(name).as_str(), decision])
            .inc();
    }

    pub fn invalid(&self) {
        self.requests
            .with_label_values(&[UNKNOWN_KEY, "invalid"])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_labels_are_bounded() {
        let registry = Registry::new();
        let metrics = QuotaMetrics::new(&registry).unwrap();
        for index in 0..MAX_KEY_LABELS + 50 {
            metrics.decided(&format!("key-{index}"), true);
        }
        metrics.decided("key-0", false);
        let families = registry.gather();
        let requests = families
            .iter()
            .find(|family| family.name() == "ml_api_quota_requests_total")
            .unwrap();
        let keys: HashSet<&str> = requests
            .get_metric()
            .iter()
            .flat_map(|metric| metric.get_label())
            .filter(|label| label.name() == "key")
            .map(|label| label.value())
            .collect();
        assert_eq!(keys.len(), MAX_KEY_LABELS + 1);
        assert!(keys.contains(OTHER_KEYS) && keys.contains("key-0"));
        assert!(!keys.contains(format!("key-{MAX_KEY_LABELS}").as_str()));
    }
}
