//! Challenger shadow scoring, off the response path.
//!
//! An alias may have a challenger scoring a fraction of its live requests. After the
//! champion has answered, [`Shadow::offer`] draws once; a sampled request's body and the
//! champion's scores go to a bounded queue (`try_send`: a full queue drops the sample and
//! counts it, the request never waits). One task per replica takes samples, scores them with
//! the challenger, compares the answers and adds the counts to a local tally that is flushed
//! to the registry every `--shadow-flush-interval`, so the comparison (and the promotion gate)
//! sees every replica's samples.

pub mod compare;
pub mod metrics;

use std::{
    cell::Cell,
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, RwLock,
    },
    time::Duration,
};

use serde_json::Value;
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tokio_util::sync::CancellationToken;

use self::{compare::compare, metrics::ShadowMetrics};
use crate::{
    config::ShadowConfig,
    model::Scores,
    registry::{Challenger, RegistryError, RegistryEvent, ShadowKey, Tally},
    serving::{
        scorer::{self, ScoreError, ShadowHook},
        Catalog, LoadedModel, ModelRef,
    },
};

/// One sampled request, waiting for the challenger.
struct Job {
    key: ShadowKey,
    body: Value,
    champion: Scores,
    champion_seconds: f64,
}

pub struct Shadow {
    catalog: Arc<Catalog>,
    /// name → [(alias, challenger)]: looked up by `&str`, without allocating.
    challengers: RwLock<HashMap<String, Vec<(String, Challenger)>>>,
    /// Whether any alias has a challenger: requests pay nothing else when none has.
    active: AtomicBool,
    jobs: mpsc::Sender<Job>,
    queue: Mutex<Option<mpsc::Receiver<Job>>>,
    /// Counts not yet flushed to the registry.
    pending: Mutex<HashMap<ShadowKey, Tally>>,
    metrics: ShadowMetrics,
    max_batch_records: usize,
    flush_interval: Duration,
}

/// A uniform draw in [0, 1) from a per-thread xorshift generator (no lock, no syscall).
fn draw() -> f64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed());
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish() | 1
}

impl Shadow {
    pub fn new(
        catalog: Arc<Catalog>,
        metrics: &crate::metrics::Metrics,
        config: &ShadowConfig,
        max_batch_records: usize,
    ) -> anyhow::Result<Arc<Self>> {
        let (jobs, queue) = mpsc::channel(config.shadow_queue.max(1));
        Ok(Arc::new(Self {
            catalog,
            challengers: RwLock::default(),
            active: AtomicBool::new(false),
            jobs,
            queue: Mutex::new(Some(queue)),
            pending: Mutex::default(),
            metrics: ShadowMetrics::register(metrics)?,
            max_batch_records,
            flush_interval: config.shadow_flush_interval,
        }))
    }

    /// The challenger of `name:alias`, as this replica knows it.
    pub fn challenger_of(&self, name: &str, alias: &str) -> Option<Challenger> {
        let challengers = self.challengers.read().ok()?;
        challengers
            .get(name)?
            .iter()
            .find(|(a, _)| a == alias)
            .map(|(_, challenger)| *challenger)
    }

    fn outcome(&self, key: &ShadowKey, outcome: &str) {
        self.metrics
            .requests
            .with_label_values(&[&key.name, &key.alias, outcome])
            .inc();
    }

    fn add(&self, key: ShadowKey, change: impl FnOnce(&mut Tally)) {
        if let Ok(mut pending) = self.pending.lock() {
            change(pending.entry(key).or_default());
        }
    }

    /// Re-reads every challenger from the registry and preloads the ones not loaded yet.
    pub async fn reload(&self) -> Result<(), RegistryError> {
        let all = self.catalog.registry().challengers().await?;
        let mut map: HashMap<String, Vec<(String, Challenger)>> = HashMap::new();
        for (name, alias, challenger) in all {
            if self.catalog.cached_id(challenger.challenger).is_none() {
                let catalog = self.catalog.clone();
                tokio::spawn(async move {
                    if let Err(error) = catalog.get_id(challenger.challenger).await {
                        tracing::warn!(%error, id = %challenger.challenger, "cannot preload a challenger");
                    }
                });
            }
            map.entry(name).or_default().push((alias, challenger));
        }
        self.active.store(!map.is_empty(), Ordering::Relaxed);
        if let Ok(mut challengers) = self.challengers.write() {
            *challengers = map;
        }
        Ok(())
    }

    /// Starts the replica's shadow tasks (challenger sync, scoring, flushing) until `stop`.
    pub fn spawn(self: &Arc<Self>, reconcile_interval: Duration, stop: CancellationToken) {
        let Some(queue) = self.queue.lock().ok().and_then(|mut queue| queue.take()) else {
            return;
        };
        tokio::spawn(self.clone().sync(reconcile_interval, stop.clone()));
        tokio::spawn(self.clone().score_until_stopped(queue, stop.clone()));
        tokio::spawn(self.clone().flush_until_stopped(stop));
    }

    async fn sync(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        let mut events = self.catalog.registry().subscribe();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let reload = tokio::select! {
                () = stop.cancelled() => break,
                event = events.recv() => match event {
                    Ok(RegistryEvent::ChallengerChanged { .. } | RegistryEvent::Deleted { .. })
                    | Err(RecvError::Lagged(_)) => true,
                    Ok(_) => false,
                    Err(RecvError::Closed) => break,
                },
                _ = tick.tick() => true,
            };
            if reload {
                if let Err(error) = self.reload().await {
                    tracing::debug!(%error, "cannot re-read challengers; keeping the ones known");
                }
            }
        }
    }

    async fn score_until_stopped(
        self: Arc<Self>,
        mut queue: mpsc::Receiver<Job>,
        stop: CancellationToken,
    ) {
        // Per alias: the pair being compared, records and agreements on this replica.
        let mut agreement: HashMap<(String, String), (ShadowKey, u64, u64)> = HashMap::new();
        loop {
            let job = tokio::select! {
                () = stop.cancelled() => break,
                job = queue.recv() => match job {
                    Some(job) => job,
                    None => break,
                },
            };
            self.metrics.queue_depth.dec();
            self.score(job, &mut agreement).await;
        }
    }

    async fn score(
        &self,
        job: Job,
        agreement: &mut HashMap<(String, String), (ShadowKey, u64, u64)>,
    ) {
        let Job {
            key,
            body,
            champion,
            champion_seconds,
        } = job;
        let result = async {
            let model = self
                .catalog
                .get_id(key.challenger)
                .await
                .map_err(|e| e.to_string())?;
            let scored = match scorer::run(&model, &body, self.max_batch_records).await {
                Err(ScoreError::Invalid(_)) => {
                    Err("the request does not fit the challenger's schema".to_owned())
                }
                other => other.map_err(|e| e.to_string()),
            }?;
            let (scores, seconds) = (scored.scores, scored.timings.infer.as_secs_f64());
            Ok::<_, String>((compare(&champion, &scores)?, seconds))
        }
        .await;
        let (comparison, challenger_seconds) = match result {
            Ok(done) => done,
            Err(error) => {
                tracing::debug!(model = %key.name, alias = %key.alias, %error, "shadow scoring failed");
                self.outcome(&key, "failed");
                self.add(key, |tally| tally.failed += 1);
                return;
            }
        };
        let labels = [key.name.as_str(), key.alias.as_str()];
        self.outcome(&key, "scored");
        let m = &self.metrics;
        m.compared_rows
            .with_label_values(&labels)
            .inc_by(comparison.rows());
        m.agreeing_rows
            .with_label_values(&labels)
            .inc_by(comparison.agreements);
        for diff in &comparison.abs_diffs {
            m.abs_diff.with_label_values(&labels).observe(*diff);
        }
        for (role, seconds) in [
            ("champion", champion_seconds),
            ("challenger", challenger_seconds),
        ] {
            m.latency
                .with_label_values(&[labels[0], labels[1], role])
                .observe(seconds);
        }
        let entry = agreement
            .entry((key.name.clone(), key.alias.clone()))
            .or_insert_with(|| (key.clone(), 0, 0));
        if entry.0 != key {
            *entry = (key.clone(), 0, 0);
        }
        entry.1 += comparison.rows();
        entry.2 += comparison.agreements;
        if entry.1 > 0 {
            m.agreement_ratio
                .with_label_values(&labels)
                .set(entry.2 as f64 / entry.1 as f64);
        }
        self.add(key, |tally| {
            tally.requests += 1;
            tally.rows += comparison.rows();
            tally.agreements += comparison.agreements;
            tally.abs_diff_sum += comparison.abs_diff_sum();
            tally.champion.observe(champion_seconds);
            tally.challenger.observe(challenger_seconds);
        });
    }

    async fn flush_until_stopped(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => self.flush().await,
            }
        }
        self.flush().await;
    }

    /// Adds the local counts to the registry's; on failure they are kept for the next flush.
    pub async fn flush(&self) {
        let tallies: Vec<(ShadowKey, Tally)> = match self.pending.lock() {
            Ok(mut pending) => pending.drain().collect(),
            Err(_) => return,
        };
        if tallies.is_empty() {
            return;
        }
        if let Err(error) = self.catalog.registry().add_shadow_stats(&tallies).await {
            tracing::warn!(%error, "cannot flush shadow statistics; keeping them for later");
            if let Ok(mut pending) = self.pending.lock() {
                for (key, tally) in tallies {
                    pending.entry(key).or_default().merge(&tally);
                }
            }
        }
    }
}

impl ShadowHook for Shadow {
    /// Called after the champion answered a request that reached it through `via`: samples it
    /// for the alias's challenger, if any, and queues it without waiting.
    fn offer(
        &self,
        via: Option<&ModelRef>,
        model: &LoadedModel,
        body: &(dyn Fn() -> Value + Sync),
        scores: &Scores,
        champion_latency: Duration,
    ) {
        if !self.active.load(Ordering::Relaxed) {
            return;
        }
        let Some(ModelRef::Alias { name, alias }) = via else {
            return;
        };
        let Some(challenger) = self.challenger_of(name, alias) else {
            return;
        };
        let Some(champion) = model.record.as_ref().map(|record| record.id) else {
            return;
        };
        if challenger.challenger == champion || draw() >= challenger.shadow_fraction {
            return;
        }
        let job = Job {
            key: ShadowKey {
                name: name.clone(),
                alias: alias.clone(),
                champion,
                challenger: challenger.challenger,
            },
            body: body(),
            champion: scores.clone(),
            champion_seconds: champion_latency.as_secs_f64(),
        };
        match self.jobs.try_send(job) {
            Ok(()) => self.metrics.queue_depth.inc(),
            Err(mpsc::error::TrySendError::Full(job)) => {
                self.outcome(&job.key, "dropped");
                self.add(job.key, |tally| tally.dropped += 1);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}
