//! Feature contracts: what a model saw in training, per input, and what happens to a request
//! that leaves it.
//!
//! A contract lives in the model card (`contract`) and travels with the model through the
//! registry. Training writes it from the training rows; an upload takes it from its card or
//! profiles the reference sample sent with it; `ml-api contract` profiles any sample.
//!
//! Per input it records the kind, whether nulls were seen, the numeric range seen, the
//! categories seen, and a reference distribution (quantile bins for numbers, frequencies for
//! categories) that the drift monitor (`crate::drift`) compares live traffic against.
//!
//! The card's `fields` rules (min/max/categories with `unknown: reject`) are hard limits and
//! always refuse a request; a contract is what training saw, and its per-model `policy` says
//! whether leaving it refuses the request (`reject`) or serves it and counts it (`warn`).

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, ensure};
use serde::{Deserialize, Serialize};

use super::{
    batch::{Column, FeatureBatch},
    schema::{ElementType, ModelSchema},
};

/// Quantile bins per numeric input (deciles).
pub const NUMERIC_BINS: usize = 10;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    #[serde(default)]
    pub policy: ContractPolicy,
    /// Per graph input (inputs without an entry are not checked).
    pub fields: BTreeMap<String, FieldContract>,
    /// Share of the reference rows whose highest score was each output column: the
    /// reference for prediction drift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictions: Option<Vec<f64>>,
    /// Rows the contract was profiled from.
    #[serde(default)]
    pub samples: u64,
}

/// What leaving the contract does, per kind of departure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContractPolicy {
    /// A category never seen in training.
    pub category: Action,
    /// A number outside the range seen in training.
    pub range: Action,
    /// A null (missing number) where training had none.
    pub null: Action,
}

impl Default for ContractPolicy {
    /// Unseen categories are refused (the model has no weight for them, so its answer would
    /// silently ignore the field); numbers beyond the training range are served and counted
    /// (a linear model extrapolates, which may be fine); nulls never seen are refused.
    fn default() -> Self {
        Self {
            category: Action::Reject,
            range: Action::Warn,
            null: Action::Reject,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Refuse the request with a field-level 422.
    Reject,
    /// Serve it; count it in `ml_api_validation_failures_total{action="warn"}` and log it.
    Warn,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reject => "reject",
            Self::Warn => "warn",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldContract {
    #[serde(rename = "type")]
    pub kind: FeatureKind,
    /// Whether nulls (NaN) were seen.
    #[serde(default)]
    pub nullable: bool,
    /// Numeric: the range seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Categorical: the reference frequency of each category seen (they sum to 1 with
    /// `null_fraction`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<BTreeMap<String, f64>>,
    /// Numeric: inner bin edges (deciles of the reference, or of a sample of
    /// [`EDGE_SAMPLE`] of its values when it has more); bin `i` holds values in
    /// `(edges[i-1], edges[i]]`, the first bin everything up to `edges[0]`, the last
    /// everything above the last edge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edges: Option<Vec<f64>>,
    /// Numeric: the reference share of each bin (`edges.len() + 1` values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fractions: Option<Vec<f64>>,
    /// Share of nulls in the reference.
    #[serde(default)]
    pub null_fraction: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureKind {
    Numeric,
    Categorical,
    Boolean,
}

impl FieldContract {
    /// Profiles numeric values (NaN = null). The range, the nulls and each bin's share are
    /// exact; the bin edges are the deciles of the values, or of [`edge_sample`] of them when
    /// there are more than [`EDGE_SAMPLE`] (the rank of a decile of 16,384 values is within
    /// about a percentage point of the column's own; the bins need not be exact deciles, since
    /// drift compares shares of the same bins on both sides). Two passes over `values` and a
    /// selection over at most 16,384 of them: a training job's profile no longer sorts or
    /// copies its columns.
    pub fn numeric(values: &[f64]) -> Self {
        let Range { nulls, min, max } = Range::of(values);
        let mut sample = if nulls == 0 {
            edge_sample(values)
        } else {
            let present: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
            edge_sample(&present)
        };
        let mut edges = quantiles(&mut sample, NUMERIC_BINS);
        edges.dedup();
        // Bin `i` holds the values above `edges[i - 1]` and not above `edges[i]`: the
        // difference of two counts, each one vectorised pass (NaN is above no edge).
        let present = values.len() - nulls;
        let mut counts = Vec::with_capacity(edges.len() + 1);
        let mut before = present;
        for &edge in &edges {
            let above = values.iter().map(|&v| usize::from(v > edge)).sum::<usize>();
            counts.push(before - above);
            before = above;
        }
        counts.push(before);
        let total = values.len();
        Self {
            kind: FeatureKind::Numeric,
            nullable: nulls > 0,
            min,
            max,
            categories: None,
            fractions: Some(counts.iter().map(|&c| share(c, total)).collect()),
            edges: Some(edges),
            null_fraction: share(nulls, total),
        }
    }

    /// Profiles categorical values.
    pub fn categorical<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let mut total = 0usize;
        for v in values {
            *counts.entry(v.to_owned()).or_default() += 1;
            total += 1;
        }
        Self {
            kind: FeatureKind::Categorical,
            nullable: false,
            min: None,
            max: None,
            categories: Some(
                counts
                    .into_iter()
                    .map(|(k, c)| (k, share(c, total)))
                    .collect(),
            ),
            edges: None,
            fractions: None,
            null_fraction: 0.0,
        }
    }

    fn boolean(values: &[bool]) -> Self {
        let trues = values.iter().filter(|&&b| b).count();
        let mut categories = BTreeMap::new();
        categories.insert(
            "false".to_owned(),
            share(values.len() - trues, values.len()),
        );
        categories.insert("true".to_owned(), share(trues, values.len()));
        Self {
            kind: FeatureKind::Boolean,
            categories: Some(categories),
            ..Self::categorical([])
        }
    }
}

impl Contract {
    /// Profiles a validated batch (e.g. an upload's reference sample), with the scores the
    /// model gave it.
    pub fn profile(schema: &ModelSchema, batch: &FeatureBatch, scores: Option<&[usize]>) -> Self {
        let fields = schema
            .fields
            .iter()
            .zip(&batch.columns)
            .map(|(field, column)| {
                let contract = match column {
                    Column::String(v) => FieldContract::categorical(v.iter().map(String::as_str)),
                    Column::Float64(v) => FieldContract::numeric(v),
                    Column::Float32(_) | Column::Int64(_) | Column::Int32(_) => {
                        let mut values = Vec::with_capacity(batch.rows);
                        for_each_number(column, |_, v| values.push(v));
                        FieldContract::numeric(&values)
                    }
                    Column::Bool(v) => FieldContract::boolean(v),
                };
                (field.name.clone(), contract)
            })
            .collect();
        Self {
            policy: ContractPolicy::default(),
            fields,
            predictions: scores.map(|winners| winner_shares(winners, schema.labels.len())),
            samples: batch.rows as u64,
        }
    }
}

/// Share of rows whose best output column was each column (`width` columns, at least the
/// largest index seen).
pub fn winner_shares(winners: &[usize], width: usize) -> Vec<f64> {
    let width = width.max(winners.iter().max().map_or(0, |m| m + 1));
    let mut counts = vec![0usize; width];
    for &w in winners {
        counts[w] += 1;
    }
    counts.iter().map(|&c| share(c, winners.len())).collect()
}

fn share(count: usize, total: usize) -> f64 {
    if total == 0 {
        0.0
    } else {
        count as f64 / total as f64
    }
}

/// The most values whose deciles are a numeric profile's bin edges (see
/// [`FieldContract::numeric`]).
pub const EDGE_SAMPLE: usize = 16_384;

/// `values` when there are at most [`EDGE_SAMPLE`], else a stratified sample of that many:
/// one value from each of [`EDGE_SAMPLE`] equal runs of positions, at a position drawn by a
/// fixed-seed generator (so the same column gives the same edges, and a periodic column
/// cannot alias with a fixed stride).
fn edge_sample(values: &[f64]) -> Vec<f64> {
    let n = values.len();
    if n <= EDGE_SAMPLE {
        return values.to_vec();
    }
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    (0..EDGE_SAMPLE)
        .filter_map(|s| {
            let (start, end) = (s * n / EDGE_SAMPLE, (s + 1) * n / EDGE_SAMPLE);
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let offset = (state % (end - start).max(1) as u64) as usize;
            values.get(start + offset).copied()
        })
        .collect()
}

/// A numeric column's nulls and range, in one pass (four lanes, so it vectorises).
struct Range {
    nulls: usize,
    min: Option<f64>,
    max: Option<f64>,
}

impl Range {
    fn of(values: &[f64]) -> Self {
        const LANES: usize = 4;
        let mut low = [f64::INFINITY; LANES];
        let mut high = [f64::NEG_INFINITY; LANES];
        let mut nan = [0usize; LANES];
        let chunks = values.chunks_exact(LANES);
        let tail = chunks.remainder();
        for chunk in chunks {
            for (((&v, low), high), nan) in chunk.iter().zip(&mut low).zip(&mut high).zip(&mut nan)
            {
                // NaN compares false, so it moves neither bound.
                *low = if v < *low { v } else { *low };
                *high = if v > *high { v } else { *high };
                *nan += usize::from(v.is_nan());
            }
        }
        let mut nulls: usize = nan.iter().sum();
        let mut min = low.iter().copied().fold(f64::INFINITY, f64::min);
        let mut max = high.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        for &v in tail {
            if v.is_nan() {
                nulls += 1;
            } else {
                min = min.min(v);
                max = max.max(v);
            }
        }
        let any = nulls < values.len();
        Self {
            nulls,
            min: any.then_some(min),
            max: any.then_some(max),
        }
    }
}

/// The `q` quantile of sorted values (nearest rank below, as numpy's `lower`).
/// The inner edges of `bins` equal-count bins: for each `i` in `1..bins`, the value at index
/// `⌊(n − 1)·i/bins⌋` of `values` in sorted order. Found by selection, not a full sort: the
/// middle edge first, then the edges left of it among the values left of it and the others
/// among the values right of it, so each level of the bisection touches every value once
/// (about log₂(bins) passes; a sort of a 10-million-row column took most of a training job's
/// profile phase). Reorders `values`.
fn quantiles(values: &mut [f64], bins: usize) -> Vec<f64> {
    if values.is_empty() {
        return Vec::new();
    }
    let last = values.len() - 1;
    let indices: Vec<usize> = (1..bins)
        .map(|i| ((last as f64) * (i as f64 / bins as f64)).floor() as usize)
        .collect();
    let mut edges = vec![0.0; indices.len()];
    select_sorted(values, 0, &indices, &mut edges);
    edges
}

/// Writes into `out` the values at the sorted positions `indices` (non-decreasing, counted
/// from `offset`, the position of `values[0]` in the whole column).
fn select_sorted(values: &mut [f64], offset: usize, indices: &[usize], out: &mut [f64]) {
    let Some(&middle) = indices.get(indices.len() / 2) else {
        return;
    };
    let Some(k) = middle.checked_sub(offset).filter(|&k| k < values.len()) else {
        return;
    };
    let (left, pivot, right) = values.select_nth_unstable_by(k, f64::total_cmp);
    let pivot = *pivot;
    let below = indices.partition_point(|&i| i < middle);
    let upto = indices.partition_point(|&i| i <= middle);
    if let Some(same) = out.get_mut(below..upto) {
        same.fill(pivot);
    }
    let (out_left, out_rest) = out.split_at_mut(below.min(out.len()));
    let out_right = out_rest.get_mut(upto - below..).unwrap_or_default();
    select_sorted(
        left,
        offset,
        indices.get(..below).unwrap_or_default(),
        out_left,
    );
    select_sorted(
        right,
        offset + k + 1,
        indices.get(upto..).unwrap_or_default(),
        out_right,
    );
}

/// The bin of `v` among inner `edges`: right-closed, as in the doc of [`FieldContract::edges`].
pub fn numeric_bin(edges: &[f64], v: f64) -> usize {
    edges.partition_point(|&edge| edge < v)
}

/// A contract checked against a model's schema, ready for the request path.
#[derive(Debug)]
pub struct CompiledContract {
    pub policy: ContractPolicy,
    /// Aligned with `schema.fields` (None: not checked, no drift).
    pub fields: Vec<Option<CompiledField>>,
    pub predictions: Option<Vec<f64>>,
}

#[derive(Debug)]
pub struct CompiledField {
    pub name: String,
    pub nullable: bool,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub bins: Bins,
    /// Reference share of each bin; the last bin is nulls (numeric) or unseen categories.
    pub reference: Vec<f64>,
}

#[derive(Debug)]
pub enum Bins {
    /// Value bins from the edges, then one bin for nulls.
    Numeric { edges: Vec<f64> },
    /// One bin per known category (in `names` order), then one for unseen categories.
    Categorical {
        index: HashMap<String, usize, foldhash::fast::RandomState>,
        names: Vec<String>,
    },
    /// false, true.
    Boolean,
}

impl CompiledField {
    /// Number of histogram bins.
    pub fn len(&self) -> usize {
        self.reference.len()
    }

    pub fn is_empty(&self) -> bool {
        self.reference.is_empty()
    }
}

/// One departure from the contract.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub row: usize,
    pub field: usize,
    pub reason: &'static str,
    pub action: Action,
    pub message: String,
}

impl Contract {
    /// Checks the contract against the schema and prepares it for the request path.
    pub fn compile(&self, schema: &ModelSchema) -> anyhow::Result<CompiledContract> {
        for name in self.fields.keys() {
            ensure!(
                schema.fields.iter().any(|f| &f.name == name),
                "the contract describes field `{name}`, which is not a graph input"
            );
        }
        let fields = schema
            .fields
            .iter()
            .map(|field| {
                let Some(contract) = self.fields.get(&field.name) else {
                    return Ok(None);
                };
                compile_field(&field.name, field.element, contract).map(Some)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if let (Some(predictions), false) = (&self.predictions, schema.labels.is_empty()) {
            ensure!(
                predictions.len() == schema.labels.len(),
                "the contract has {} prediction shares but the model has {} labels",
                predictions.len(),
                schema.labels.len()
            );
        }
        Ok(CompiledContract {
            policy: self.policy,
            fields,
            predictions: self.predictions.clone(),
        })
    }
}

fn compile_field(
    name: &str,
    element: ElementType,
    contract: &FieldContract,
) -> anyhow::Result<CompiledField> {
    let expected = match element {
        ElementType::String => FeatureKind::Categorical,
        ElementType::Bool => FeatureKind::Boolean,
        _ => FeatureKind::Numeric,
    };
    ensure!(
        contract.kind == expected,
        "contract field `{name}`: type {:?} does not match the graph input {}",
        contract.kind,
        element.onnx_name()
    );
    let (bins, mut reference) = match contract.kind {
        FeatureKind::Numeric => {
            let edges = contract.edges.clone().unwrap_or_default();
            ensure!(
                edges.windows(2).all(|w| w[0] < w[1]),
                "contract field `{name}`: edges must be strictly increasing"
            );
            let fractions = contract
                .fractions
                .clone()
                .unwrap_or_else(|| vec![0.0; edges.len() + 1]);
            ensure!(
                fractions.len() == edges.len() + 1,
                "contract field `{name}`: {} fractions for {} edges (expected edges + 1)",
                fractions.len(),
                edges.len()
            );
            let (edges, fractions) = in_precision(element, &edges, &fractions);
            (Bins::Numeric { edges }, fractions)
        }
        FeatureKind::Categorical | FeatureKind::Boolean => {
            let categories = contract.categories.clone().unwrap_or_default();
            if contract.kind == FeatureKind::Boolean {
                let get = |k: &str| categories.get(k).copied().unwrap_or(0.0);
                (Bins::Boolean, vec![get("false"), get("true")])
            } else {
                if categories.is_empty() {
                    bail!("contract field `{name}`: a categorical field needs its categories");
                }
                let names: Vec<String> = categories.keys().cloned().collect();
                let index = names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| (n.clone(), i))
                    .collect();
                let shares = categories.values().copied().collect();
                (Bins::Categorical { index, names }, shares)
            }
        }
    };
    // Last bin: nulls for numbers, unseen categories for strings (never seen: share 0).
    reference.push(match contract.kind {
        FeatureKind::Numeric => contract.null_fraction,
        _ => 0.0,
    });
    ensure!(
        reference.iter().all(|f| f.is_finite() && *f >= 0.0),
        "contract field `{name}`: shares must be finite and non-negative"
    );
    Ok(CompiledField {
        name: name.to_owned(),
        nullable: contract.nullable,
        min: contract.min.map(|v| round_to(element, v)),
        max: contract.max.map(|v| round_to(element, v)),
        bins,
        reference,
    })
}

/// A bound in the precision the input is served in. A float32 input reaches the check as an
/// f32 widened to f64, so a training value of 2.9 arrives as 2.9000000953674316: comparing it
/// with the f64 2.9 would move it across a bin edge or out of the training range. Rounding
/// is monotonic, so `v <= bound` in f64 still holds after both are rounded.
fn round_to(element: ElementType, v: f64) -> f64 {
    match element {
        ElementType::Float32 => f64::from(v as f32),
        _ => v,
    }
}

/// Bin edges in the input's precision; two edges that round to one value merge their bins
/// (values between them now land in the lower one).
fn in_precision(element: ElementType, edges: &[f64], fractions: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut kept: Vec<f64> = Vec::with_capacity(edges.len());
    let mut shares = vec![fractions[0]];
    for (edge, &share) in edges.iter().zip(&fractions[1..]) {
        let edge = round_to(element, *edge);
        match (kept.last(), shares.last_mut()) {
            (Some(&last), Some(previous)) if last == edge => *previous += share,
            _ => {
                kept.push(edge);
                shares.push(share);
            }
        }
    }
    (kept, shares)
}

impl CompiledContract {
    /// Every departure of `batch` from the contract (at most `limit`).
    pub fn check(&self, batch: &FeatureBatch, limit: usize) -> Vec<Violation> {
        self.check_binned(batch, limit, |_, _| {})
    }

    /// [`Self::check`], also telling `bin(field, bin)` which histogram bin of the field each
    /// value falls in (the last bin: nulls, unseen categories), so drift counts a request in
    /// the same pass, each category looked up once. The receiver bounds the index where it
    /// uses it (the drift monitor's `tally`).
    pub fn check_binned(
        &self,
        batch: &FeatureBatch,
        limit: usize,
        mut bin: impl FnMut(usize, usize),
    ) -> Vec<Violation> {
        let mut out = Vec::new();
        for (index, (field, column)) in self.fields.iter().zip(&batch.columns).enumerate() {
            let Some(field) = field else { continue };
            let last = field.len().saturating_sub(1);
            let mut push = |row: usize, reason: &'static str, action: Action, message: String| {
                if out.len() < limit {
                    out.push(Violation {
                        row,
                        field: index,
                        reason,
                        action,
                        message,
                    });
                }
            };
            match (column, &field.bins) {
                (Column::String(values), Bins::Categorical { index: known, .. }) => {
                    for (row, v) in values.iter().enumerate() {
                        if let Some(&category) = known.get(v.as_str()) {
                            bin(index, category);
                            continue;
                        }
                        bin(index, last);
                        push(
                            row,
                            "category",
                            self.policy.category,
                            format!(
                                "`{v}` was never seen in training ({} known categories)",
                                known.len()
                            ),
                        );
                    }
                }
                (Column::Bool(values), Bins::Boolean) => {
                    for &v in values {
                        bin(index, usize::from(v));
                    }
                }
                (Column::Bool(_), _) | (Column::String(_), _) => {}
                (numeric, bins) => {
                    let edges = match bins {
                        Bins::Numeric { edges } => Some(edges),
                        _ => None,
                    };
                    for_each_number(numeric, |row, v| {
                        if let Some(edges) = edges {
                            let at = if v.is_nan() {
                                last
                            } else {
                                numeric_bin(edges, v)
                            };
                            bin(index, at);
                        }
                        if v.is_nan() {
                            if !field.nullable {
                                push(
                                    row,
                                    "null",
                                    self.policy.null,
                                    "null, but training had no nulls in this field".to_owned(),
                                );
                            }
                            return;
                        }
                        let below = field.min.is_some_and(|min| v < min);
                        let above = field.max.is_some_and(|max| v > max);
                        if below || above {
                            push(
                                row,
                                "range",
                                self.policy.range,
                                format!(
                                    "{v} is outside the range seen in training [{}, {}]",
                                    field.min.map_or("-inf".to_owned(), |m| m.to_string()),
                                    field.max.map_or("inf".to_owned(), |m| m.to_string()),
                                ),
                            );
                        }
                    });
                }
            }
        }
        out
    }
}

/// Calls `f(row, value)` for each value of a numeric column (as f64; NaN for nulls).
pub fn for_each_number(column: &Column, mut f: impl FnMut(usize, f64)) {
    match column {
        Column::Float32(v) => v.iter().enumerate().for_each(|(i, &x)| f(i, f64::from(x))),
        Column::Float64(v) => v.iter().enumerate().for_each(|(i, &x)| f(i, x)),
        Column::Int64(v) => v.iter().enumerate().for_each(|(i, &x)| f(i, x as f64)),
        Column::Int32(v) => v.iter().enumerate().for_each(|(i, &x)| f(i, f64::from(x))),
        Column::String(_) | Column::Bool(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_selection_equal_the_values_at_the_same_indices_of_the_sorted_column() {
        // Duplicates, negatives, both zeros and a short column, against a full sort.
        let mut state = 7_u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % 2001) as f64 / 8.0 - 125.0
        };
        for n in [1_usize, 2, 9, 10, 11, 1000, 4097] {
            let mut values: Vec<f64> = (0..n).map(|_| next()).chain([0.0, -0.0]).collect();
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let want: Vec<f64> = (1..NUMERIC_BINS)
                .map(|i| {
                    sorted[((sorted.len() - 1) as f64 * (i as f64 / NUMERIC_BINS as f64)).floor()
                        as usize]
                })
                .collect();
            let got = quantiles(&mut values, NUMERIC_BINS);
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "n = {n}"
            );
        }
        assert!(quantiles(&mut [], NUMERIC_BINS).is_empty());
    }

    #[test]
    fn numeric_profile_bins_its_own_values_by_decile() {
        let values: Vec<f64> = (0..1000).map(f64::from).collect();
        let field = FieldContract::numeric(&[values, vec![f64::NAN]].concat());
        let edges = field.edges.clone().unwrap();
        assert_eq!(edges.len(), NUMERIC_BINS - 1);
        let fractions = field.fractions.clone().unwrap();
        assert_eq!(fractions.len(), NUMERIC_BINS);
        for f in &fractions {
            assert!((f - 0.0999).abs() < 0.002, "{fractions:?}");
        }
        assert!(field.nullable);
        assert_eq!((field.min, field.max), (Some(0.0), Some(999.0)));
        let total: f64 = fractions.iter().sum::<f64>() + field.null_fraction;
        assert!((total - 1.0).abs() < 1e-9);
    }

    #[test]
    fn a_long_column_takes_its_edges_from_a_sample_and_its_range_and_shares_from_every_value() {
        // 200,000 values (one in 97 missing), uniform on [0, 1) in a shuffled order.
        let mut state = 11_u64;
        let values: Vec<f64> = (0..200_000)
            .map(|i| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                if i % 97 == 0 {
                    f64::NAN
                } else {
                    (state >> 11) as f64 / (1u64 << 53) as f64
                }
            })
            .collect();
        let field = FieldContract::numeric(&values);
        let present: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
        let nulls = values.len() - present.len();
        assert!(field.nullable);
        assert_eq!(field.null_fraction, nulls as f64 / values.len() as f64);
        let min = present.iter().copied().fold(f64::INFINITY, f64::min);
        let max = present.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert_eq!((field.min, field.max), (Some(min), Some(max)));
        // Sampled deciles: near the exact ones (the standard error of a sampled decile's rank
        // is 0.4 percentage points; the data and the sample are fixed, so this cannot flake).
        let edges = field.edges.clone().unwrap();
        assert_eq!(edges.len(), NUMERIC_BINS - 1);
        for (i, edge) in edges.iter().enumerate() {
            let want = (i + 1) as f64 / NUMERIC_BINS as f64;
            assert!((edge - want).abs() < 0.02, "edge {i}: {edge}");
        }
        // Shares: exactly the values in each right-closed bin, nulls apart.
        let fractions = field.fractions.clone().unwrap();
        let mut counts = vec![0usize; edges.len() + 1];
        for &v in &present {
            counts[numeric_bin(&edges, v)] += 1;
        }
        let want: Vec<f64> = counts
            .iter()
            .map(|&c| c as f64 / values.len() as f64)
            .collect();
        assert_eq!(fractions, want);
        // The same column gives the same edges.
        assert_eq!(FieldContract::numeric(&values).edges, Some(edges));
    }

    #[test]
    fn a_constant_column_gets_one_edge() {
        let field = FieldContract::numeric(&[5.0; 50]);
        assert_eq!(field.edges.as_deref(), Some(&[5.0][..]));
        assert_eq!(field.fractions.as_deref(), Some(&[1.0, 0.0][..]));
    }

    #[test]
    fn bins_are_right_closed() {
        let edges = [1.0, 2.0];
        assert_eq!(numeric_bin(&edges, 0.5), 0);
        assert_eq!(numeric_bin(&edges, 1.0), 0);
        assert_eq!(numeric_bin(&edges, 1.5), 1);
        assert_eq!(numeric_bin(&edges, 2.0), 1);
        assert_eq!(numeric_bin(&edges, 9.0), 2);
    }

    #[test]
    fn float32_inputs_are_binned_and_ranged_in_their_own_precision() {
        use crate::model::schema::{InputSpec, OutputSpec};
        let training = [2.9, 3.0, 3.1, 2.9, 3.0, 3.1, 2.9, 3.0, 3.1, 3.3];
        let mut contract = Contract::default();
        contract
            .fields
            .insert("w".into(), FieldContract::numeric(&training));
        let schema = ModelSchema::build(
            &[InputSpec {
                name: "w".into(),
                element: ElementType::Float32,
                rank: 2,
            }],
            &[OutputSpec {
                name: "p".into(),
                width: Some(2),
            }],
            &crate::model::ModelCard::default(),
        )
        .unwrap();
        let compiled = contract.compile(&schema).unwrap();
        // The training rows, served as float32, are inside the range and in their own bins.
        let served = FeatureBatch {
            rows: training.len(),
            columns: vec![Column::Float32(
                training.iter().map(|&v| v as f32).collect(),
            )],
        };
        assert_eq!(compiled.check(&served, 100), vec![]);
        let Some(field) = &compiled.fields[0] else {
            panic!("no field")
        };
        let Bins::Numeric { edges } = &field.bins else {
            panic!("not numeric")
        };
        let mut counts = vec![0.0; field.len()];
        for v in &training {
            counts[numeric_bin(edges, f64::from(*v as f32))] += 0.1;
        }
        for (count, expected) in counts.iter().zip(&field.reference) {
            assert!(
                (count - expected).abs() < 1e-9,
                "{counts:?} vs {:?}",
                field.reference
            );
        }
    }

    #[test]
    fn categorical_profile_and_winner_shares() {
        let field = FieldContract::categorical(["a", "b", "a", "a"]);
        let cats = field.categories.unwrap();
        assert_eq!(cats["a"], 0.75);
        assert_eq!(cats["b"], 0.25);
        assert_eq!(winner_shares(&[0, 2, 2, 2], 3), vec![0.25, 0.0, 0.75]);
    }
}
