//! In-process drift detection: each replica keeps a sliding-window histogram of the features
//! (and predicted labels) each model serves, in the bins of the model's contract, and reports
//! the population stability index (PSI) of the window against the contract's reference.
//!
//! PSI = Σ (actual − expected) · ln(actual / expected) over the bins, with shares floored at
//! [`PSI_FLOOR`] so an empty bin does not make it infinite. The usual reading: below 0.1 no
//! shift, 0.1–0.2 moderate, above 0.2 a shift worth acting on.
//!
//! The hot path only increments atomic counters (no lock; a request's bins are noted while its
//! contract is checked, in a buffer on the stack up to 32 values): the window is a ring
//! of `slots` time slots; a slot whose epoch has passed is zeroed by the first request that
//! lands in it again. A request racing that reset may lose its counts, which a monitoring
//! statistic can afford. PSI is computed when read (`/metrics`, `GET /models/{name}/drift`).

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;
use smallvec::SmallVec;
use utoipa::ToSchema;

use crate::model::{batch::argmax, contract::CompiledContract, FeatureBatch, Scores};

/// Smallest share used in the PSI sum.
pub const PSI_FLOOR: f64 = 1e-4;

/// Window settings (flags `--drift-window`, `--drift-slots`, `--drift-min-samples`).
#[derive(Debug, Clone, Copy)]
pub struct DriftSettings {
    pub window: Duration,
    pub slots: usize,
    /// Rows a window needs before PSI is reported.
    pub min_samples: u64,
}

/// Where one histogram sits in a slot's counters.
#[derive(Debug)]
struct Histogram {
    name: String,
    offset: usize,
    reference: Vec<f64>,
}

#[derive(Debug)]
pub struct DriftMonitor {
    settings: DriftSettings,
    slot_ms: u64,
    /// Per schema field: its histogram, if the contract has one.
    features: Vec<Option<Histogram>>,
    predictions: Option<Histogram>,
    /// Counters per slot: `[rows, bins of every histogram...]`.
    width: usize,
    counts: Box<[AtomicU64]>,
    epochs: Box<[AtomicU64]>,
}

/// A request's feature bins, gathered while its contract is checked and counted only once
/// it is served ([`DriftMonitor::commit`]): a slot's counter per value.
#[derive(Debug, Default)]
pub struct Tally(SmallVec<[usize; 32]>);

/// Where a request's features were counted.
#[derive(Debug, Clone, Copy)]
pub struct Observed {
    slot: usize,
    epoch: u64,
}

/// What a window shows (`GET /models/{name}/drift`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DriftReport {
    pub window_seconds: f64,
    /// Rows in the window.
    pub samples: u64,
    /// Rows needed before PSI is reported.
    pub min_samples: u64,
    pub features: Vec<FeatureDrift>,
    /// PSI of the predicted label's distribution, when the contract has its reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub predictions_psi: Option<f64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FeatureDrift {
    pub feature: String,
    /// None until the window holds `min_samples` rows.
    pub psi: Option<f64>,
    /// Bin shares in the window and in the reference (last bin: nulls or unseen categories).
    pub actual: Vec<f64>,
    pub expected: Vec<f64>,
}

impl DriftMonitor {
    pub fn new(contract: &CompiledContract, settings: DriftSettings) -> Self {
        let slots = settings.slots.max(1);
        let slot_ms = (settings.window.as_millis() as u64 / slots as u64).max(1);
        let mut width = 1;
        let mut histogram = |name: &str, reference: &[f64]| {
            let h = Histogram {
                name: name.to_owned(),
                offset: width,
                reference: reference.to_vec(),
            };
            width += reference.len();
            h
        };
        let features = contract
            .fields
            .iter()
            .map(|f| f.as_ref().map(|f| histogram(&f.name, &f.reference)))
            .collect();
        let predictions = contract
            .predictions
            .as_ref()
            .map(|reference| histogram("prediction", reference));
        Self {
            settings: DriftSettings { slots, ..settings },
            slot_ms,
            features,
            predictions,
            width,
            counts: (0..slots * width).map(|_| AtomicU64::new(0)).collect(),
            epochs: (0..slots).map(|_| AtomicU64::new(u64::MAX)).collect(),
        }
    }

    fn epoch_now(&self) -> u64 {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        ms / self.slot_ms
    }

    fn counters(&self, slot: usize) -> &[AtomicU64] {
        &self.counts[slot * self.width..(slot + 1) * self.width]
    }

    /// The current slot, zeroed first if it belongs to an older epoch.
    fn current_slot(&self) -> Observed {
        let epoch = self.epoch_now();
        let slot = (epoch % self.settings.slots as u64) as usize;
        let seen = self.epochs[slot].load(Relaxed);
        if seen != epoch
            && self.epochs[slot]
                .compare_exchange(seen, epoch, Relaxed, Relaxed)
                .is_ok()
        {
            self.counters(slot).iter().for_each(|c| c.store(0, Relaxed));
        }
        Observed { slot, epoch }
    }

    /// Counts a validated batch's features; the answer's predictions go to the same slot
    /// ([`Self::observe_predictions`]), so one request reads the clock once.
    pub fn observe(&self, contract: &CompiledContract, batch: &FeatureBatch) -> Observed {
        let mut tally = Tally::default();
        contract.check_binned(batch, 0, |field, bin| self.tally(&mut tally, field, bin));
        self.commit(batch.rows, &tally)
    }

    /// Notes that a value of schema field `field` fell in its bin `bin`
    /// ([`CompiledContract::check_binned`]), to be counted by [`Self::commit`].
    pub fn tally(&self, tally: &mut Tally, field: usize, bin: usize) {
        if let Some(Some(histogram)) = self.features.get(field) {
            let last = histogram.reference.len() - 1;
            tally.0.push(histogram.offset + bin.min(last));
        }
    }

    /// Counts a served request's `rows` and its tallied features in the current slot; its
    /// predictions go to the same slot ([`Self::observe_predictions`]).
    pub fn commit(&self, rows: usize, tally: &Tally) -> Observed {
        let at = self.current_slot();
        let slot = self.counters(at.slot);
        slot[0].fetch_add(rows as u64, Relaxed);
        for &counter in &tally.0 {
            slot[counter].fetch_add(1, Relaxed);
        }
        at
    }

    /// Counts each row's highest-scoring output column, in the slot its features went to
    /// (skipped in the rare case that slot was recycled while the model ran).
    pub fn observe_predictions(&self, at: Observed, scores: &Scores) {
        let Some(histogram) = &self.predictions else {
            return;
        };
        if self.epochs[at.slot].load(Relaxed) != at.epoch {
            return;
        }
        let slot = self.counters(at.slot);
        let bins = &slot[histogram.offset..histogram.offset + histogram.reference.len()];
        for row in scores.iter_rows() {
            if let Some(best) = argmax(row) {
                if let Some(bin) = bins.get(best) {
                    bin.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// Sums the slots of the window and computes PSI per histogram.
    pub fn report(&self) -> DriftReport {
        let now = self.epoch_now();
        let oldest = now.saturating_sub(self.settings.slots as u64 - 1);
        let mut totals = vec![0u64; self.width];
        for (slot, epoch) in self.epochs.iter().enumerate() {
            let epoch = epoch.load(Relaxed);
            if epoch == u64::MAX || epoch < oldest || epoch > now {
                continue;
            }
            let counters = &self.counts[slot * self.width..(slot + 1) * self.width];
            for (total, c) in totals.iter_mut().zip(counters) {
                *total += c.load(Relaxed);
            }
        }
        let samples = totals[0];
        let enough = samples >= self.settings.min_samples && samples > 0;
        let drift = |h: &Histogram| {
            let counts = &totals[h.offset..h.offset + h.reference.len()];
            let n: u64 = counts.iter().sum();
            let actual: Vec<f64> = counts
                .iter()
                .map(|&c| if n == 0 { 0.0 } else { c as f64 / n as f64 })
                .collect();
            let psi = (enough && n > 0).then(|| psi(&actual, &h.reference));
            FeatureDrift {
                feature: h.name.clone(),
                psi,
                actual,
                expected: h.reference.clone(),
            }
        };
        DriftReport {
            window_seconds: (self.slot_ms * self.settings.slots as u64) as f64 / 1000.0,
            samples,
            min_samples: self.settings.min_samples,
            features: self.features.iter().flatten().map(drift).collect(),
            predictions_psi: self.predictions.as_ref().and_then(|h| drift(h).psi),
        }
    }
}

/// Population stability index of `actual` against `expected` shares.
pub fn psi(actual: &[f64], expected: &[f64]) -> f64 {
    actual
        .iter()
        .zip(expected)
        .map(|(&a, &e)| {
            let (a, e) = (a.max(PSI_FLOOR), e.max(PSI_FLOOR));
            (a - e) * (a / e).ln()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        contract::{Contract, FieldContract},
        schema::{ElementType, InputSpec, ModelSchema, OutputSpec},
        Column, ModelCard,
    };

    fn setup(window_ms: u64) -> (CompiledContract, DriftMonitor, ModelSchema) {
        let schema = ModelSchema::build(
            &[
                InputSpec {
                    name: "x".into(),
                    element: ElementType::Float32,
                    rank: 2,
                },
                InputSpec {
                    name: "c".into(),
                    element: ElementType::String,
                    rank: 2,
                },
            ],
            &[OutputSpec {
                name: "p".into(),
                width: Some(2),
            }],
            &ModelCard::default(),
        )
        .unwrap();
        let mut contract = Contract::default();
        contract.fields.insert(
            "x".into(),
            FieldContract::numeric(&(0..1000).map(|i| f64::from(i) / 1000.0).collect::<Vec<_>>()),
        );
        contract.fields.insert(
            "c".into(),
            FieldContract::categorical((0..1000).map(|i| if i % 2 == 0 { "a" } else { "b" })),
        );
        let compiled = contract.compile(&schema).unwrap();
        let monitor = DriftMonitor::new(
            &compiled,
            DriftSettings {
                window: Duration::from_millis(window_ms),
                slots: 4,
                min_samples: 100,
            },
        );
        (compiled, monitor, schema)
    }

    fn batch(xs: Vec<f32>, cs: Vec<&str>) -> FeatureBatch {
        FeatureBatch {
            rows: xs.len(),
            columns: vec![
                Column::Float32(xs),
                Column::String(cs.into_iter().map(str::to_owned).collect()),
            ],
        }
    }

    #[test]
    fn same_distribution_is_stable_and_a_shift_is_seen_on_its_feature_only() {
        let (contract, monitor, _) = setup(60_000);
        let xs = (0..1000).map(|i| i as f32 / 1000.0).collect();
        let cs = (0..1000)
            .map(|i| if i % 2 == 0 { "a" } else { "b" })
            .collect();
        monitor.observe(&contract, &batch(xs, cs));
        let report = monitor.report();
        assert_eq!(report.samples, 1000);
        for f in &report.features {
            assert!(f.psi.unwrap() < 0.01, "{f:?}");
        }

        let (contract, monitor, _) = setup(60_000);
        let xs = (0..1000).map(|i| 0.5 + i as f32 / 2000.0).collect();
        let cs = (0..1000)
            .map(|i| if i % 2 == 0 { "a" } else { "b" })
            .collect();
        monitor.observe(&contract, &batch(xs, cs));
        let report = monitor.report();
        let x = report.features.iter().find(|f| f.feature == "x").unwrap();
        let c = report.features.iter().find(|f| f.feature == "c").unwrap();
        assert!(x.psi.unwrap() > 0.2, "{x:?}");
        assert!(c.psi.unwrap() < 0.01, "{c:?}");
    }

    #[test]
    fn psi_waits_for_min_samples_and_unseen_categories_count_in_the_last_bin() {
        let (contract, monitor, _) = setup(60_000);
        monitor.observe(&contract, &batch(vec![0.5; 10], vec!["zzz"; 10]));
        let report = monitor.report();
        assert_eq!(report.samples, 10);
        assert!(report.features.iter().all(|f| f.psi.is_none()));
        let c = report.features.iter().find(|f| f.feature == "c").unwrap();
        assert_eq!(c.actual, vec![0.0, 0.0, 1.0]);
    }

    #[test]
    fn old_slots_leave_the_window() {
        let (contract, monitor, _) = setup(400);
        monitor.observe(&contract, &batch(vec![0.5; 200], vec!["a"; 200]));
        assert_eq!(monitor.report().samples, 200);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(monitor.report().samples, 0);
    }
}
