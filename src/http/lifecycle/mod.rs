//! Aliases and their challengers: point an alias at a model, give it a challenger scored in
//! the shadow of live traffic, read how the two compare, and promote the challenger
//! (atomically, optionally gated on the comparison).

mod bodies;

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use self::bodies::{valid_alias, AliasChange, ChallengerChange, GateBody};
pub use self::bodies::{AliasTarget, PromoteGate};
use super::{auth::Admin, extract::JsonBody, state::AppState};
use crate::{
    http::error::{ApiError, ErrorBody, ErrorDetail, FieldError},
    registry::{
        shadow::LatencyTally, Challenger, ModelRegistry, ModelStatus, Promotion, RegistryError,
        ShadowKey,
    },
};
use utoipa_axum::{router::OpenApiRouter, routes};

/// What an alias points at now.
#[derive(Debug, Serialize, ToSchema)]
pub struct AliasState {
    pub name: String,
    pub alias: String,
    pub model_id: Uuid,
    pub challenger: Option<Uuid>,
    pub shadow_fraction: Option<f64>,
}
/// A model an alias or challenger may point at: ready, and of the alias's name.
async fn ensure_servable(
    registry: &dyn ModelRegistry,
    name: &str,
    id: Uuid,
) -> Result<(), ApiError> {
    let record = registry.get(id).await?;
    crate::registry::check_alias_target(record.as_ref(), name, id)?;
    match record {
        Some(record) if record.status != ModelStatus::Ready => {
            Err(ApiError::Conflict(format!("model {id} is not ready")))
        }
        _ => Ok(()),
    }
}

/// The alias's champion and challenger, from the registry.
async fn current(
    registry: &dyn ModelRegistry,
    name: &str,
    alias: &str,
) -> Result<(Option<Uuid>, Option<Challenger>), RegistryError> {
    let champion = registry
        .aliases()
        .await?
        .into_iter()
        .find(|(n, a, _)| n == name && a == alias)
        .map(|(_, _, id)| id);
    let challenger = registry
        .challengers()
        .await?
        .into_iter()
        .find(|(n, a, _)| n == name && a == alias)
        .map(|(_, _, challenger)| challenger);
    Ok((champion, challenger))
}

/// Point `name:alias` at a model of that name, and/or set its challenger and shadow fraction
/// (every replica follows within a second).
#[utoipa::path(put, path = "/models/{name}/aliases/{alias}", tag = "models",
    params(("name" = String, Path), ("alias" = String, Path)),
    request_body = AliasTarget,
    responses((status = 200, description = "Alias and challenger now", body = AliasState),
              (status = 404, description = "Unknown model, or the alias is not set and no `model_id` was given", body = ErrorBody),
              (status = 409, description = "Model not ready, of another name, or challenger = champion", body = ErrorBody),
              (status = 422, description = "Invalid alias or body (field by field)", body = ErrorBody),
              (status = 400, description = "Malformed JSON", body = ErrorBody),
              (status = 413, description = "Body over the size limit", body = ErrorBody),
              (status = 415, description = "Content-Type is not application/json", body = ErrorBody),
              (status = 429, description = "Rate limit exceeded", body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn set_alias(
    State(state): State<AppState>,
    _admin: Admin,
    Path((name, alias)): Path<(String, String)>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let change = AliasChange::parse(body)?;
    valid_alias(&alias)?;
    let registry = state.catalog.registry().as_ref();
    let (champion, challenger) = current(registry, &name, &alias).await?;
    let champion = change.model_id.or(champion).ok_or_else(|| {
        ApiError::NotFound(format!(
            "alias `{name}:{alias}` is not set: give `model_id`"
        ))
    })?;
    let fraction_without_challenger = || {
        ApiError::validation(vec![FieldError::new(
            "shadow_fraction",
            "unsupported",
            format!("`{name}:{alias}` has no challenger: give `challenger` too"),
        )])
    };
    let next = match change.challenger {
        ChallengerChange::Remove if change.shadow_fraction.is_some() => {
            return Err(fraction_without_challenger())
        }
        ChallengerChange::Remove => None,
        ChallengerChange::Unchanged => match (challenger, change.shadow_fraction) {
            (Some(current), Some(fraction)) => Some(Challenger {
                shadow_fraction: fraction,
                ..current
            }),
            (current, None) => current,
            (None, Some(_)) => return Err(fraction_without_challenger()),
        },
        ChallengerChange::Set(id) => Some(Challenger {
            challenger: id,
            shadow_fraction: change
                .shadow_fraction
                .or(challenger.map(|c| c.shadow_fraction))
                .ok_or_else(|| {
                    ApiError::validation(vec![FieldError::new(
                        "shadow_fraction",
                        "missing",
                        "required with a new challenger (0..=1)",
                    )])
                })?,
        }),
    };
    if let Some(id) = change.model_id {
        ensure_servable(registry, &name, id).await?;
    }
    if let ChallengerChange::Set(id) = change.challenger {
        ensure_servable(registry, &name, id).await?;
    }
    if next.is_some_and(|c| c.challenger == champion) {
        return Err(ApiError::Conflict(format!(
            "model {champion} would be both champion and challenger of `{name}:{alias}`: \
             remove the challenger (`\"challenger\": null`) or promote it"
        )));
    }
    if let Some(id) = change.model_id {
        registry.set_alias(&name, &alias, id).await?;
    }
    if next != challenger {
        registry.set_challenger(&name, &alias, next).await?;
    }
    Ok(Json(AliasState {
        name,
        alias,
        model_id: champion,
        challenger: next.map(|c| c.challenger),
        shadow_fraction: next.map(|c| c.shadow_fraction),
    })
    .into_response())
}

/// One side of a comparison.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Side {
    pub model_id: Uuid,
    /// Registry version (`X-Model-Version` of the answers it gives).
    pub version: Option<u64>,
    /// Requests timed.
    pub requests: u64,
    pub mean_latency_seconds: Option<f64>,
    /// Median, interpolated inside a histogram bucket (100 µs × 2^i bounds).
    pub p50_latency_seconds: Option<f64>,
}

/// How the challenger compares with the champion, summed over every replica (flushed every
/// second or so) since this champion/challenger pair was set.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Comparison {
    pub name: String,
    pub alias: String,
    pub champion: Side,
    pub challenger: Side,
    pub shadow_fraction: f64,
    /// Records scored by both (a batch request counts each record).
    pub samples: u64,
    /// Share of records on which both rank the same label first (null before any sample).
    pub agreement_rate: Option<f64>,
    /// 1 − agreement_rate.
    pub disagreement_rate: Option<f64>,
    /// Mean over records of the mean absolute difference of their probabilities.
    pub mean_abs_diff: Option<f64>,
    /// Sampled requests dropped because a replica's shadow queue was full.
    pub dropped: u64,
    /// Sampled requests the challenger could not score.
    pub failed: u64,
}

fn side(id: Uuid, version: Option<u64>, latency: &LatencyTally) -> Side {
    Side {
        model_id: id,
        version,
        requests: latency.count(),
        mean_latency_seconds: latency.mean(),
        p50_latency_seconds: latency.p50(),
    }
}

async fn version_of(registry: &dyn ModelRegistry, id: Uuid) -> Option<u64> {
    registry.get(id).await.ok().flatten().map(|r| r.version)
}

/// The comparison of `name:alias` now: 404 when the alias is unset or has no challenger.
async fn compare(state: &AppState, name: &str, alias: &str) -> Result<Comparison, ApiError> {
    // This replica's counts first, so they are not a flush behind.
    state.shadow.flush().await;
    let registry = state.catalog.registry().as_ref();
    let (champion, challenger) = current(registry, name, alias).await?;
    let champion =
        champion.ok_or_else(|| ApiError::NotFound(format!("alias `{name}:{alias}` is not set")))?;
    let challenger = challenger
        .ok_or_else(|| ApiError::NotFound(format!("alias `{name}:{alias}` has no challenger")))?;
    let key = ShadowKey {
        name: name.to_owned(),
        alias: alias.to_owned(),
        champion,
        challenger: challenger.challenger,
    };
    let tally = registry.shadow_stats(&key).await?;
    let agreement_rate = (tally.rows > 0).then(|| tally.agreements as f64 / tally.rows as f64);
    Ok(Comparison {
        name: name.to_owned(),
        alias: alias.to_owned(),
        champion: side(
            champion,
            version_of(registry, champion).await,
            &tally.champion,
        ),
        challenger: side(
            challenger.challenger,
            version_of(registry, challenger.challenger).await,
            &tally.challenger,
        ),
        shadow_fraction: challenger.shadow_fraction,
        samples: tally.rows,
        agreement_rate,
        disagreement_rate: agreement_rate.map(|rate| 1.0 - rate),
        mean_abs_diff: (tally.rows > 0).then(|| tally.abs_diff_sum / tally.rows as f64),
        dropped: tally.dropped,
        failed: tally.failed,
    })
}

/// Agreement, probability difference and latencies of an alias's challenger against its
/// champion, from every replica's shadow samples.
#[utoipa::path(get, path = "/models/{name}/aliases/{alias}/comparison", tag = "models",
    params(("name" = String, Path), ("alias" = String, Path)),
    responses((status = 200, body = Comparison),
              (status = 404, description = "Alias not set, or no challenger", body = ErrorBody),
              (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn comparison(
    State(state): State<AppState>,
    Path((name, alias)): Path<(String, String)>,
) -> Result<Json<Comparison>, ApiError> {
    Ok(Json(compare(&state, &name, &alias).await?))
}
/// A promotion refused by its gate: the usual error shape (`code` `gate_failed`, one detail
/// per failed condition) plus the comparison it was judged on.
#[derive(Debug, Serialize, ToSchema)]
pub struct GateRefusal {
    pub error: ErrorDetail,
    pub comparison: Comparison,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Promoted {
    /// The alias and its challenger after the swap: the old champion is now the challenger,
    /// at the same fraction.
    #[serde(flatten)]
    pub alias: AliasState,
    /// The comparison the promotion was judged on.
    pub comparison: Comparison,
}

fn gate_failures(gate: &PromoteGate, comparison: &Comparison) -> Vec<FieldError> {
    let mut failures = Vec::new();
    if let Some(min) = gate.min_samples {
        if comparison.samples < min {
            failures.push(FieldError::new(
                "min_samples",
                "gate",
                format!("{} records compared, {min} required", comparison.samples),
            ));
        }
    }
    if let Some(max) = gate.max_disagreement {
        match comparison.disagreement_rate {
            None => failures.push(FieldError::new(
                "max_disagreement",
                "gate",
                "no records compared yet",
            )),
            Some(rate) if rate > max => failures.push(FieldError::new(
                "max_disagreement",
                "gate",
                format!("disagreement {rate:.4} is above {max}"),
            )),
            Some(_) => {}
        }
    }
    failures
}
/// Swap champion and challenger of `name:alias` atomically (every replica serves the new
/// champion within a second). An optional JSON body gates it on the comparison:
/// `{"min_samples": 1000, "max_disagreement": 0.05}`.
#[utoipa::path(post, path = "/models/{name}/aliases/{alias}/promote", tag = "models",
    params(("name" = String, Path), ("alias" = String, Path)),
    request_body(content = PromoteGate, description = "Optional gate; an empty body promotes unconditionally", content_type = "application/json"),
    responses((status = 200, description = "Promoted", body = Promoted),
              (status = 404, description = "Alias not set, or no challenger", body = ErrorBody),
              (status = 409, description = "Refused by the gate (`gate_failed`, with the comparison), or the alias changed meanwhile (`conflict`)", body = GateRefusal),
              (status = 400, description = "Malformed JSON", body = ErrorBody),
              (status = 413, description = "Body over the size limit", body = ErrorBody),
              (status = 415, description = "A body that is not `application/json`", body = ErrorBody),
              (status = 422, description = "Invalid gate (field by field)", body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn promote(
    State(state): State<AppState>,
    _admin: Admin,
    Path((name, alias)): Path<(String, String)>,
    GateBody(gate): GateBody,
) -> Result<Response, ApiError> {
    let comparison = compare(&state, &name, &alias).await?;
    let failures = gate_failures(&gate, &comparison);
    if !failures.is_empty() {
        let message = failures
            .iter()
            .map(|f| format!("{}: {}", f.field, f.message))
            .collect::<Vec<_>>()
            .join("; ");
        let refusal = GateRefusal {
            error: ErrorDetail {
                code: "gate_failed",
                message: format!("promotion refused by its gate ({message})"),
                details: failures,
            },
            comparison,
        };
        return Ok((StatusCode::CONFLICT, Json(refusal)).into_response());
    }
    let expected = Promotion {
        champion: comparison.champion.model_id,
        challenger: comparison.challenger.model_id,
    };
    state
        .catalog
        .registry()
        .promote(&name, &alias, expected)
        .await?;
    tracing::info!(model = %name, %alias, champion = %expected.challenger, challenger = %expected.champion, "challenger promoted");
    let alias_state = AliasState {
        name,
        alias,
        model_id: expected.challenger,
        challenger: Some(expected.champion),
        shadow_fraction: Some(comparison.shadow_fraction),
    };
    Ok(Json(Promoted {
        alias: alias_state,
        comparison,
    })
    .into_response())
}

/// Aliases: set, compare, promote.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(set_alias))
        .routes(routes!(comparison))
        .routes(routes!(promote))
}
