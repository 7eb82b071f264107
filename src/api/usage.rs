//! The organization's metered usage (requests per day and API key), next to its plan's limits.
//! Counts reach the database in batches (`crate::usage`), so the latest seconds may be missing.

use actix_web::{HttpRequest, HttpResponse, get, web};
use chrono::{Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::authz::authorize;
use super::csv;
use super::extract::RequestMeta;
use super::orgs::OrgPath;
use crate::api::ApiError;
use crate::api::problem::Problem;
use crate::auth::Principal;
use crate::db::tenant;
use crate::domain::{FieldError, OrgId, Permission, supported_date};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// First day (UTC), default 30 days ago.
    pub from: Option<NaiveDate>,
    /// Last day (UTC), default today.
    pub to: Option<NaiveDate>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageDay {
    pub day: NaiveDate,
    /// The API key that made the requests; null for members' own requests.
    pub api_key_id: Option<Uuid>,
    pub requests: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageResponse {
    /// The subscribed plan's limits (the free plan's without a subscription).
    #[schema(value_type = Object)]
    pub limits: Value,
    /// Requests today (UTC), all principals.
    pub requests_today: i64,
    pub days: Vec<UsageDay>,
}

/// Requests per day and API key, with the plan's limits (permission `billing:read`).
#[utoipa::path(
    tag = "billing",
    params(OrgPath, UsageQuery),
    responses(
        (status = 200, description = "Usage: JSON, or with `Accept: text/csv` the days as CSV (`day,api_key_id,requests`)",
            content(
                (UsageResponse = "application/json"),
                (String = "text/csv"),
            )),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission billing:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid range", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/usage")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn get_usage(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
    query: web::Query<UsageQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let today = Utc::now().date_naive();
    let to = supported_date("to", query.to.unwrap_or(today))?;
    let from = match query.from {
        Some(from) => supported_date("from", from)?,
        None => to - Duration::days(30),
    };
    if from > to || (to - from).num_days() > 366 {
        return Err(FieldError::new("from", "must be on or before `to`, at most 366 days before it").into());
    }
    let (membership, rows) = tenant::read(
        &state.db,
        principal.actor(),
        Some(OrgId(path.org_id)),
        // Row 0: the limits and today's total; then one row per day and key.
        "select 0 as part, null::date as day, null::uuid as api_key_id, \
           (select coalesce(sum(requests), 0)::bigint from usage_counters where organization_id = $1 and day = $4) \
             as requests, \
           coalesce((select p.limits from subscriptions s join plans p on p.id = s.plan_id \
                     where s.organization_id = $1 and s.status <> 'canceled'), \
                    (select limits from plans where id = 'free')) as limits \
         union all \
         select 1, day, api_key_id, requests, null from usage_counters \
         where organization_id = $1 and day between $2 and $3 \
         order by part, day, api_key_id",
        &[&path.org_id, &from, &to, &today],
    )
    .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::BillingRead, "usage.get").await?;
    let head =
        rows.first().ok_or_else(|| ApiError::Internal(anyhow::anyhow!("usage summary row missing")))?;
    let usage = UsageResponse {
        limits: head.get::<_, Option<Value>>("limits").unwrap_or(Value::Null),
        requests_today: head.get("requests"),
        days: rows
            .iter()
            .skip(1)
            .map(|r| {
                let key: Uuid = r.get("api_key_id");
                UsageDay {
                    day: r.get("day"),
                    api_key_id: (!key.is_nil()).then_some(key),
                    requests: r.get("requests"),
                }
            })
            .collect(),
    };
    // As CSV, the days (one row per day and key); the limits belong to the JSON view.
    if csv::wants_csv(&req) {
        return Ok(csv::response(
            &req,
            csv::render(&["day", "api_key_id", "requests"], &usage.days),
            None,
            None,
        ));
    }
    Ok(HttpResponse::Ok().json(usage))
}
