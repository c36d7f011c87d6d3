//! What the registry keeps for shadow scoring: an alias's challenger (with the fraction of
//! live requests it scores), and the comparison statistics every replica adds to, keyed by
//! the exact champion/challenger pair so they restart whenever either side changes.
//!
//! Redis keys (prefix `mlapi` by default):
//! - `{p}:challengers`  hash `name/alias` → [`Challenger`] JSON
//! - `{p}:shadow:{name}/{alias}/{champion}/{challenger}`  hash of [`Tally`] fields (expire
//!   after 30 days without samples)

use std::collections::HashMap;

use redis::AsyncCommands;

use crate::redis_link::RedisLink;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{RegistryError, RegistryEvent};

/// A model scored beside an alias's champion on a fraction of its live requests.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Challenger {
    /// The challenger's model id (a ready model of the alias's name).
    pub challenger: Uuid,
    /// Fraction of the alias's requests also scored by the challenger, 0..=1.
    pub shadow_fraction: f64,
}

/// One comparison: an alias, the champion it pointed at and the challenger beside it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShadowKey {
    pub name: String,
    pub alias: String,
    pub champion: Uuid,
    pub challenger: Uuid,
}

/// Latency bucket upper bounds: 100 µs × 2^i (the last bucket is everything above).
pub const LATENCY_BUCKETS: usize = 18;

pub fn bucket_bound(index: usize) -> f64 {
    0.0001 * f64::from(1u32 << index.min(30))
}

/// A latency distribution: sum and fixed buckets, mergeable across replicas.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyTally {
    pub sum_seconds: f64,
    /// `buckets[i]`: observations ≤ `bucket_bound(i)` and above the previous bound; the last
    /// one counts everything above the largest bound.
    pub buckets: [u64; LATENCY_BUCKETS + 1],
}

impl LatencyTally {
    pub fn observe(&mut self, seconds: f64) {
        self.sum_seconds += seconds;
        let index = (0..LATENCY_BUCKETS)
            .find(|&i| seconds <= bucket_bound(i))
            .unwrap_or(LATENCY_BUCKETS);
        self.buckets[index] += 1;
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    pub fn mean(&self) -> Option<f64> {
        let count = self.count();
        (count > 0).then(|| self.sum_seconds / count as f64)
    }

    /// The median, interpolated inside its bucket.
    pub fn p50(&self) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let half = count as f64 / 2.0;
        let mut below = 0u64;
        for (index, &n) in self.buckets.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= half {
                let low = if index == 0 {
                    0.0
                } else {
                    bucket_bound(index - 1)
                };
                if index == LATENCY_BUCKETS {
                    return Some(low);
                }
                let high = bucket_bound(index);
                return Some(low + (high - low) * ((half - below as f64) / n as f64));
            }
            below += n;
        }
        None
    }

    fn merge(&mut self, other: &Self) {
        self.sum_seconds += other.sum_seconds;
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
    }
}

/// Counts of one comparison, summed over replicas.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// Requests scored by both models.
    pub requests: u64,
    /// Records scored by both models (a batch request counts each record).
    pub rows: u64,
    /// Records where both models rank the same label first.
    pub agreements: u64,
    /// Sum over records of the mean absolute difference of their probabilities.
    pub abs_diff_sum: f64,
    /// Sampled requests not scored because the shadow queue was full.
    pub dropped: u64,
    /// Sampled requests the challenger could not score.
    pub failed: u64,
    pub champion: LatencyTally,
    pub challenger: LatencyTally,
}

enum Increment {
    Int(u64),
    Float(f64),
}

impl Tally {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    pub fn merge(&mut self, other: &Self) {
        self.requests += other.requests;
        self.rows += other.rows;
        self.agreements += other.agreements;
        self.abs_diff_sum += other.abs_diff_sum;
        self.dropped += other.dropped;
        self.failed += other.failed;
        self.champion.merge(&other.champion);
        self.challenger.merge(&other.challenger);
    }

    /// The non-zero fields, as Redis hash increments.
    fn increments(&self) -> Vec<(String, Increment)> {
        let mut fields = vec![
            ("requests".to_owned(), Increment::Int(self.requests)),
            ("rows".to_owned(), Increment::Int(self.rows)),
            ("agreements".to_owned(), Increment::Int(self.agreements)),
            (
                "abs_diff_sum".to_owned(),
                Increment::Float(self.abs_diff_sum),
            ),
            ("dropped".to_owned(), Increment::Int(self.dropped)),
            ("failed".to_owned(), Increment::Int(self.failed)),
        ];
        for (role, latency) in [
            ("champion", &self.champion),
            ("challenger", &self.challenger),
        ] {
            fields.push((format!("{role}_sum"), Increment::Float(latency.sum_seconds)));
            for (index, &n) in latency.buckets.iter().enumerate() {
                fields.push((format!("{role}_b{index}"), Increment::Int(n)));
            }
        }
        fields.retain(|(_, increment)| match increment {
            Increment::Int(n) => *n != 0,
            Increment::Float(x) => *x != 0.0,
        });
        fields
    }

    /// Reads a tally back from its Redis hash (unknown or unparsable fields are ignored).
    fn from_fields(fields: &HashMap<String, String>) -> Self {
        let int = |name: &str| fields.get(name).and_then(|v| v.parse().ok()).unwrap_or(0);
        let float = |name: &str| fields.get(name).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let latency = |role: &str| {
            let mut tally = LatencyTally {
                sum_seconds: float(&format!("{role}_sum")),
                ..LatencyTally::default()
            };
            for (index, bucket) in tally.buckets.iter_mut().enumerate() {
                *bucket = int(&format!("{role}_b{index}"));
            }
            tally
        };
        Self {
            requests: int("requests"),
            rows: int("rows"),
            agreements: int("agreements"),
            abs_diff_sum: float("abs_diff_sum"),
            dropped: int("dropped"),
            failed: int("failed"),
            champion: latency("champion"),
            challenger: latency("challenger"),
        }
    }
}

/// What a promotion expects to find (compare-and-swap): the alias on `champion` and its
/// challenger on `challenger`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promotion {
    pub champion: Uuid,
    pub challenger: Uuid,
}

pub(super) fn field(name: &str, alias: &str) -> String {
    format!("{name}/{alias}")
}

pub(super) fn parse_challengers(all: Vec<(String, String)>) -> Vec<(String, String, Challenger)> {
    all.into_iter()
        .filter_map(|(field, json)| {
            let (name, alias) = field.split_once('/')?;
            let challenger = serde_json::from_str(&json).ok()?;
            Some((name.to_owned(), alias.to_owned(), challenger))
        })
        .collect()
}

/// Swaps an alias and its challenger if both are still what the caller read, publishing the
/// alias move (acknowledged with token ARGV[4]'s) and the challenger change; nothing happens
/// otherwise. Returns `{1, replicas reached}` on success, 0 when the alias moved, -1 when the
/// challenger changed or is gone.
const PROMOTE: &str = r"
local champion = redis.call('HGET', KEYS[1], ARGV[1])
if champion ~= ARGV[2] then return 0 end
local stored = redis.call('HGET', KEYS[2], ARGV[1])
if not stored then return -1 end
local challenger = cjson.decode(stored)
if challenger['challenger'] ~= ARGV[3] then return -1 end
challenger['challenger'] = ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode(challenger))
local receivers = redis.call('PUBLISH', KEYS[3], ARGV[4])
redis.call('PUBLISH', KEYS[3], ARGV[5])
return {1, receivers}
";

/// Redis side of [`super::ModelRegistry::promote`]: `keys` are the aliases hash, the
/// challengers hash and the events channel.
pub(super) async fn redis_promote(
    connection: &mut RedisLink,
    keys: [&str; 3],
    name: &str,
    alias: &str,
    expected: Promotion,
    ack: &str,
) -> Result<u64, RegistryError> {
    let corrupt = |e: serde_json::Error| RegistryError::Corrupt(e.to_string());
    let moved = super::notice(
        &RegistryEvent::AliasMoved {
            name: name.to_owned(),
            alias: alias.to_owned(),
            id: expected.challenger,
        },
        ack,
    )
    .map_err(corrupt)?;
    let changed = serde_json::to_string(&RegistryEvent::ChallengerChanged {
        name: name.to_owned(),
        alias: alias.to_owned(),
    })
    .map_err(corrupt)?;
    let outcome: redis::Value = redis::Script::new(PROMOTE)
        .key(keys[0])
        .key(keys[1])
        .key(keys[2])
        .arg(field(name, alias))
        .arg(expected.champion.to_string())
        .arg(expected.challenger.to_string())
        .arg(moved)
        .arg(changed)
        .invoke_async(connection)
        .await
        .map_err(|e| RegistryError::Unavailable(e.to_string()))?;
    match outcome {
        redis::Value::Array(values) => match values.as_slice() {
            [redis::Value::Int(1), redis::Value::Int(receivers)] => {
                Ok(u64::try_from(*receivers).unwrap_or(0))
            }
            _ => Err(RegistryError::Corrupt("unexpected promotion answer".into())),
        },
        redis::Value::Int(outcome) => promotion_outcome(outcome, name, alias).map(|()| 0),
        _ => Err(RegistryError::Corrupt("unexpected promotion answer".into())),
    }
}

pub(super) fn promotion_outcome(
    outcome: i64,
    name: &str,
    alias: &str,
) -> Result<(), RegistryError> {
    match outcome {
        1 => Ok(()),
        0 => Err(RegistryError::Conflict(format!(
            "`{name}:{alias}` moved while promoting: read the comparison again"
        ))),
        _ => Err(RegistryError::Conflict(format!(
            "the challenger of `{name}:{alias}` changed while promoting: read the comparison again"
        ))),
    }
}

/// Keeps shared statistics for 30 days after their last sample.
const STATS_TTL_SECONDS: i64 = 30 * 24 * 3600;

pub(super) fn stats_key(prefix: &str, key: &ShadowKey) -> String {
    format!(
        "{prefix}:shadow:{}/{}/{}/{}",
        key.name, key.alias, key.champion, key.challenger
    )
}

/// Adds every tally to its hash, in one MULTI/EXEC.
pub(super) async fn redis_add_stats(
    connection: &mut RedisLink,
    prefix: &str,
    tallies: &[(ShadowKey, Tally)],
) -> Result<(), RegistryError> {
    let mut pipe = redis::pipe();
    pipe.atomic();
    let mut any = false;
    for (key, tally) in tallies {
        let redis_key = stats_key(prefix, key);
        for (field, increment) in tally.increments() {
            any = true;
            match increment {
                Increment::Int(n) => pipe.hincr(&redis_key, field, n).ignore(),
                Increment::Float(x) => pipe.hincr(&redis_key, field, x).ignore(),
            };
        }
        pipe.expire(&redis_key, STATS_TTL_SECONDS).ignore();
    }
    if !any {
        return Ok(());
    }
    pipe.query_async::<()>(connection)
        .await
        .map_err(|e| RegistryError::Unavailable(e.to_string()))
}

pub(super) async fn redis_stats(
    connection: &mut RedisLink,
    prefix: &str,
    key: &ShadowKey,
) -> Result<Tally, RegistryError> {
    let fields: HashMap<String, String> = connection
        .hgetall(stats_key(prefix, key))
        .await
        .map_err(|e| RegistryError::Unavailable(e.to_string()))?;
    Ok(Tally::from_fields(&fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_survives_its_redis_fields() {
        let mut tally = Tally {
            requests: 3,
            rows: 5,
            agreements: 4,
            abs_diff_sum: 0.25,
            dropped: 1,
            failed: 0,
            ..Tally::default()
        };
        tally.champion.observe(0.0003);
        tally.challenger.observe(0.002);
        tally.challenger.observe(100.0);
        let fields: HashMap<String, String> = tally
            .increments()
            .into_iter()
            .map(|(field, increment)| {
                let value = match increment {
                    Increment::Int(n) => n.to_string(),
                    Increment::Float(x) => x.to_string(),
                };
                (field, value)
            })
            .collect();
        assert!(!fields.contains_key("failed"), "zero fields are not sent");
        assert_eq!(Tally::from_fields(&fields), tally);
    }

    #[test]
    fn latency_median_falls_in_the_middle_bucket() {
        let mut latency = LatencyTally::default();
        assert_eq!(latency.p50(), None);
        for _ in 0..10 {
            latency.observe(0.00015); // (0.0001, 0.0002]
        }
        let p50 = latency.p50().unwrap();
        assert!((0.0001..=0.0002).contains(&p50), "{p50}");
        assert!((latency.mean().unwrap() - 0.00015).abs() < 1e-12);
    }
}
