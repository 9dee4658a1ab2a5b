//! Budgets and rate limits of a project and of its API keys: reading and
//! changing them ([`crate::quota`] enforces them). Used by
//! `GET/PUT /v1/projects/{id}/limits`, `POST /v1/keys` and
//! `PATCH /v1/keys/{id}`, and by the CLI's `modelyard keys limits` /
//! `modelyard projects limits`, which work on the database directly (a
//! running server reads changes within [`crate::quota::LIMITS_TTL`]).
//!
//! On the wire a limits object is
//! `{maxCostUsd, maxTokens, period, requestsPerMinute, tokensPerMinute,
//! maxConcurrent}` (camelCase like the rest of the API; refusals name the
//! limit the same way): `maxCostUsd` in USD (a number), `maxTokens` in
//! tokens (prompt + completion), both per `period` (`day`, `week`, `month`,
//! `total`; UTC); the rates per UTC minute; `maxConcurrent` requests and
//! turns in flight (per replica). `null` (or absent) is no limit.

use modelyard_core::limits::{nusd_to_usd, usd_to_nusd, Limits, LimitsError, Period};
use modelyard_store::{LimitSubject, ProjectId, Store};
use serde::{Deserialize, Deserializer, Serialize};

use super::error::ServiceError;
use crate::clock::now_ms;

/// A limits object as the API shows it (every field present, `null` for
/// no limit).
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitsView {
    /// Most spent per `period`, USD.
    pub max_cost_usd: Option<f64>,
    /// Most tokens (prompt + completion) per `period`.
    pub max_tokens: Option<i64>,
    /// `day`, `week`, `month` or `total` (UTC).
    pub period: Option<String>,
    /// Most requests per UTC minute.
    pub requests_per_minute: Option<i64>,
    /// Most tokens per UTC minute (reserved before a call, settled after).
    pub tokens_per_minute: Option<i64>,
    /// Most requests and turns in flight at once (per replica).
    pub max_concurrent: Option<i64>,
}

impl From<&Limits> for LimitsView {
    fn from(l: &Limits) -> Self {
        LimitsView {
            max_cost_usd: l.max_cost_nusd.map(nusd_to_usd),
            max_tokens: l.max_tokens,
            period: l.period.map(|p| p.as_str().to_owned()),
            requests_per_minute: l.requests_per_minute,
            tokens_per_minute: l.tokens_per_minute,
            max_concurrent: l.max_concurrent,
        }
    }
}

fn double<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A change of limits: an absent field stays as it is, `null` removes
/// that limit, a value sets it. (`PUT /v1/projects/{id}/limits` replaces:
/// there an absent field is `null`.)
///
/// Only a JSON object reads as one: serde's derive alone would also take an
/// array of the fields in order (`[5.0, null, …]`), which no client means.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, utoipa::ToSchema)]
#[serde(
    try_from = "LimitsObject",
    rename_all = "camelCase",
    deny_unknown_fields
)]
pub struct LimitsPatch {
    /// USD per `period`.
    #[schema(value_type = Option<f64>)]
    pub max_cost_usd: Option<Option<f64>>,
    /// Tokens per `period`.
    #[schema(value_type = Option<i64>)]
    pub max_tokens: Option<Option<i64>>,
    /// `day`, `week`, `month` or `total`.
    #[schema(value_type = Option<String>)]
    pub period: Option<Option<String>>,
    /// Requests per UTC minute.
    #[schema(value_type = Option<i64>)]
    pub requests_per_minute: Option<Option<i64>>,
    /// Tokens per UTC minute.
    #[schema(value_type = Option<i64>)]
    pub tokens_per_minute: Option<Option<i64>>,
    /// Requests and turns in flight at once.
    #[schema(value_type = Option<i64>)]
    pub max_concurrent: Option<Option<i64>>,
}

/// [`LimitsPatch`]'s fields as serde reads them from an object.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LimitsFields {
    /// USD per `period`.
    #[serde(default, deserialize_with = "double")]
    max_cost_usd: Option<Option<f64>>,
    /// Tokens per `period`.
    #[serde(default, deserialize_with = "double")]
    max_tokens: Option<Option<i64>>,
    /// `day`, `week`, `month` or `total`.
    #[serde(default, deserialize_with = "double")]
    period: Option<Option<String>>,
    /// Requests per UTC minute.
    #[serde(default, deserialize_with = "double")]
    requests_per_minute: Option<Option<i64>>,
    /// Tokens per UTC minute.
    #[serde(default, deserialize_with = "double")]
    tokens_per_minute: Option<Option<i64>>,
    /// Requests and turns in flight at once.
    #[serde(default, deserialize_with = "double")]
    max_concurrent: Option<Option<i64>>,
}

/// The JSON object a [`LimitsPatch`] is read from.
#[derive(Deserialize)]
struct LimitsObject(serde_json::Map<String, serde_json::Value>);

impl TryFrom<LimitsObject> for LimitsPatch {
    type Error = serde_json::Error;

    fn try_from(object: LimitsObject) -> Result<Self, Self::Error> {
        let f: LimitsFields = serde_json::from_value(serde_json::Value::Object(object.0))?;
        Ok(LimitsPatch {
            max_cost_usd: f.max_cost_usd,
            max_tokens: f.max_tokens,
            period: f.period,
            requests_per_minute: f.requests_per_minute,
            tokens_per_minute: f.tokens_per_minute,
            max_concurrent: f.max_concurrent,
        })
    }
}

fn limits_error(err: LimitsError) -> ServiceError {
    let field: &'static str = match &err {
        LimitsError::Negative { field, .. } => field,
        LimitsError::Period => "period",
        LimitsError::Cost(_) => "maxCostUsd",
    };
    ServiceError::invalid_field(field, err.to_string())
}

impl LimitsPatch {
    /// `base` with this change applied, validated.
    ///
    /// # Errors
    /// `invalid_field` naming the field: a negative value, a cost that is
    /// not a number from 0 to 1e9 USD, an unknown period, a budget without
    /// a period or a period without a budget.
    pub fn apply(&self, base: Limits) -> Result<Limits, ServiceError> {
        let mut limits = base;
        if let Some(cost) = self.max_cost_usd {
            limits.max_cost_nusd = cost.map(usd_to_nusd).transpose().map_err(limits_error)?;
        }
        if let Some(period) = &self.period {
            limits.period = match period {
                None => None,
                Some(text) => Some(Period::parse(text).ok_or_else(|| {
                    ServiceError::invalid_field(
                        "period",
                        format!("`period` must be day, week, month or total; got {text:?}"),
                    )
                })?),
            };
        }
        let set = |slot: &mut Option<i64>, change: Option<Option<i64>>| {
            if let Some(value) = change {
                *slot = value;
            }
        };
        set(&mut limits.max_tokens, self.max_tokens);
        set(&mut limits.requests_per_minute, self.requests_per_minute);
        set(&mut limits.tokens_per_minute, self.tokens_per_minute);
        set(&mut limits.max_concurrent, self.max_concurrent);
        limits.validate().map_err(limits_error)?;
        Ok(limits)
    }
}

async fn current(
    store: &Store,
    project: &ProjectId,
    subject: &LimitSubject,
) -> Result<Limits, ServiceError> {
    let rows = store
        .limits_of(project, std::slice::from_ref(subject))
        .await?;
    Ok(rows.into_iter().next().map(|(_, l)| l).unwrap_or_default())
}

/// The subject of project `id`, which must be the caller's `project`.
///
/// # Errors
/// `project_not_found` (404) for any other id.
pub fn project_subject(project: &ProjectId, id: &str) -> Result<LimitSubject, ServiceError> {
    if id != project.as_str() {
        return Err(ServiceError::not_found(
            "project",
            id,
            format!("no project {id:?} for this key (a key manages its own project's limits)"),
        ));
    }
    Ok(LimitSubject::Project(id.to_owned()))
}

/// The limits of `subject` of `project` (all `None` when unset).
///
/// # Errors
/// The store's errors.
pub async fn get(
    store: &Store,
    project: &ProjectId,
    subject: &LimitSubject,
) -> Result<Limits, ServiceError> {
    current(store, project, subject).await
}

/// Changes the limits of `subject` of `project` by `patch` and returns
/// them; `replace` starts from no limits (PUT) instead of the current ones
/// (PATCH).
///
/// # Errors
/// `invalid_field` (see [`LimitsPatch::apply`]); `key_not_found` (404)
/// for a key not in `project`; the store's errors.
pub async fn change(
    store: &Store,
    project: &ProjectId,
    subject: &LimitSubject,
    patch: &LimitsPatch,
    replace: bool,
) -> Result<Limits, ServiceError> {
    let base = if replace {
        Limits::default()
    } else {
        current(store, project, subject).await?
    };
    let limits = patch.apply(base)?;
    store
        .put_limits(project, subject, &limits, now_ms())
        .await?;
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_only_from_an_object() {
        let patch: LimitsPatch =
            serde_json::from_str(r#"{"maxTokens": 5, "period": null}"#).unwrap();
        assert_eq!(patch.max_tokens, Some(Some(5)));
        assert_eq!(patch.period, Some(None));
        assert_eq!(patch.max_cost_usd, None);
        // An array of the fields in order is not a change of limits
        // (Schemathesis sent `{"limits": [null, null]}` and got 200).
        assert!(serde_json::from_str::<LimitsPatch>("[null, null]").is_err());
        assert!(serde_json::from_str::<LimitsPatch>("[5.0]").is_err());
        assert!(serde_json::from_str::<LimitsPatch>(r#"{"bogus": 1}"#).is_err());
    }

    fn patch(json: &str) -> LimitsPatch {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    #[test]
    fn a_patch_sets_clears_and_keeps() {
        let base = Limits {
            requests_per_minute: Some(10),
            max_concurrent: Some(2),
            ..Limits::default()
        };
        let changed = patch(r#"{"maxCostUsd": 5, "period": "day", "maxConcurrent": null}"#)
            .apply(base)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            changed,
            Limits {
                max_cost_nusd: Some(5_000_000_000),
                period: Some(Period::Day),
                requests_per_minute: Some(10),
                ..Limits::default()
            }
        );
        assert_eq!(
            LimitsView::from(&changed).max_cost_usd,
            Some(5.0),
            "shown in USD"
        );
    }

    #[test]
    fn invalid_limits_name_their_field() {
        let field = |json: &str| match patch(json).apply(Limits::default()) {
            Err(ServiceError::Invalid { field, .. }) => field.unwrap_or_default(),
            other => panic!("{json}: {other:?}"),
        };
        assert_eq!(field(r#"{"requestsPerMinute": -1}"#), "requestsPerMinute");
        assert_eq!(field(r#"{"maxTokens": 10}"#), "period");
        assert_eq!(field(r#"{"maxTokens": 10, "period": "year"}"#), "period");
        assert_eq!(
            field(r#"{"maxCostUsd": -2, "period": "day"}"#),
            "maxCostUsd"
        );
        assert!(serde_json::from_str::<LimitsPatch>(r#"{"rpm": 1}"#).is_err());
    }
}
