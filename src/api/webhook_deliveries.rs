//! An endpoint's delivery log (permission `webhooks:manage`): each delivery of an event to the
//! endpoint, its state, and every attempt at it (status, duration, response code, and in `full`
//! mode the first KiB of the response). Deliveries are created by the database with their event;
//! the dispatcher moves them on.

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::audit::{AuditEntry, record};
use super::authz::{authorize, authorize_in};
use super::extract::RequestMeta;
use super::pagination::{COUNT_FETCH, Key, Keyset, Page, PageQuery, total};
use super::webhook_endpoints::WebhookEndpointPath;
use crate::api::ApiError;
use crate::api::problem::Problem;
use crate::auth::Principal;
use crate::db::{TenantTx, tenant};
use crate::domain::{FieldError, OrgId, Permission};
use crate::{keyset, sorts};

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDeliveryResponse {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    /// The event delivered (its id is the `webhook-id` header).
    pub event_id: Uuid,
    #[schema(example = "run.failed")]
    pub event_type: String,
    /// `pending` (waiting for its next attempt), `delivering`, `succeeded`, or `failed` (every
    /// attempt failed, or its endpoint was disabled).
    pub status: String,
    pub attempts: i32,
    /// When the next attempt is due (pending deliveries only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_response_status: Option<i32>,
    /// Why the last attempt failed: `HTTP 500` (any answer but 2xx, redirects included),
    /// `timeout: ...`, `connection failed`, `refused: ...` (the address is not public),
    /// `unreachable: ...`; `endpoint_disabled` or `lease_expired` for a delivery failed without one.
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAttemptResponse {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub response_status: Option<i32>,
    pub error: Option<String>,
    /// The first KiB of the response, kept only for organizations in `full` data mode.
    pub response_body: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDeliveryWithAttempts {
    #[serde(flatten)]
    pub delivery: WebhookDeliveryResponse,
    pub attempt_log: Vec<WebhookAttemptResponse>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct WebhookDeliveryPath {
    /// The organization's id.
    pub org_id: Uuid,
    /// The endpoint's id.
    pub endpoint_id: Uuid,
    /// The delivery's id.
    pub delivery_id: Uuid,
}

macro_rules! delivery_columns {
    () => {
        "d.id, d.endpoint_id, d.event_id, e.type as event_type, d.status, d.attempts, \
         case when d.status = 'pending' then d.next_attempt_at end as next_attempt_at, d.last_attempt_at, \
         d.last_response_status, d.last_error, d.created_at, d.finished_at"
    };
}

/// The delivery list's statements: `$1` organization, `$2` endpoint, `$3` limit, `$4` status,
/// then the cursor's key (`d.id`, a UUIDv7). The endpoint is joined first, so an endpoint that is
/// not there (or not visible) answers no row at all (404) and an empty log one row of NULLs.
/// Index: `webhook_deliveries_by_endpoint (organization_id, endpoint_id, id)`.
macro_rules! deliveries {
    () => {
        concat!(
            "select r.* from webhook_endpoints w left join lateral (select ",
            delivery_columns!(),
            " from webhook_deliveries d join events e on e.organization_id = d.organization_id and e.id = d.event_id \
              where d.organization_id = w.organization_id and d.endpoint_id = w.id \
                and ($4::text is null or d.status = $4)"
        )
    };
}
macro_rules! deliveries_plain {
    () => {
        concat!(
            "select r.* from webhook_endpoints w left join lateral (select ",
            delivery_columns!(),
            " from webhook_deliveries d join events e on e.organization_id = d.organization_id and e.id = d.event_id \
              where d.organization_id = w.organization_id and d.endpoint_id = w.id and $4::text is null"
        )
    };
}
static BY_CREATED: Keyset = keyset!(
    1,
    Id,
    asc,
    deliveries,
    deliveries_plain,
    ") r on true where w.organization_id = $1 and w.id = $2",
    "d.id",
    "$5",
    "d.id",
    "d.id desc",
    "$3"
);
static BY_CREATED_DESC: Keyset = keyset!(
    2,
    Id,
    desc,
    deliveries,
    deliveries_plain,
    ") r on true where w.organization_id = $1 and w.id = $2",
    "d.id",
    "$5",
    "d.id",
    "d.id desc",
    "$3"
);
const COUNT_DELIVERIES: &str = "select count(*) from (select 1 from webhook_deliveries d \
     where d.organization_id = $1 and d.endpoint_id = $2 and ($4::text is null or d.status = $4) limit $3) c";

sorts! {
    /// The order of a delivery log.
    DeliverySort {
        CreatedAtDesc = "-created_at" => BY_CREATED_DESC,
        CreatedAt = "created_at" => BY_CREATED,
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryFilter {
    /// Only deliveries in this state: `pending`, `delivering`, `succeeded` or `failed`.
    #[param(example = "failed")]
    pub status: Option<String>,
    /// `-created_at` (default, newest first) or `created_at`.
    #[param(inline)]
    pub sort: Option<DeliverySort>,
}

/// One delivery as a write just left it (the row behind the answer of a retry or a ping).
async fn delivery_row(tx: &mut TenantTx, org: Uuid, endpoint: Uuid, delivery: Uuid) -> Result<Row, ApiError> {
    Ok(tx
        .query_found(
            concat!(
                "select ",
                delivery_columns!(),
                " from webhook_deliveries d join events e on e.organization_id = d.organization_id and e.id = d.event_id \
                 where d.organization_id = $1 and d.endpoint_id = $2 and d.id = $3"
            ),
            &[&org, &endpoint, &delivery],
        )
        .await?)
}

fn delivery_from_row(row: &Row) -> WebhookDeliveryResponse {
    WebhookDeliveryResponse {
        id: row.get("id"),
        endpoint_id: row.get("endpoint_id"),
        event_id: row.get("event_id"),
        event_type: row.get("event_type"),
        status: row.get("status"),
        attempts: row.get("attempts"),
        next_attempt_at: row.get("next_attempt_at"),
        last_attempt_at: row.get("last_attempt_at"),
        last_response_status: row.get("last_response_status"),
        last_error: row.get("last_error"),
        created_at: row.get("created_at"),
        finished_at: row.get("finished_at"),
    }
}

/// An endpoint's deliveries, newest first (permission `webhooks:manage`).
#[utoipa::path(
    tag = "webhooks",
    params(WebhookEndpointPath, DeliveryFilter, PageQuery),
    responses(
        (status = 200, description = "A page of deliveries", body = Page<WebhookDeliveryResponse>),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission webhooks:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid filter, sort, limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/webhook-endpoints/{endpoint_id}/deliveries")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn list_webhook_deliveries(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<WebhookEndpointPath>,
    filter: web::Query<DeliveryFilter>,
    paging: web::Query<PageQuery>,
) -> Result<web::Json<Page<WebhookDeliveryResponse>>, ApiError> {
    let page = paging.parse(filter.sort.unwrap_or_default().keyset())?.filtered(filter.status.is_some());
    if let Some(status) = &filter.status
        && !["pending", "delivering", "succeeded", "failed"].contains(&status.as_str())
    {
        return Err(FieldError::new("status", "must be pending, delivering, succeeded or failed").into());
    }
    let org = OrgId(path.org_id);
    let params = vec![
        &path.org_id as &(dyn tokio_postgres::types::ToSql + Sync),
        &path.endpoint_id,
        page.fetch(),
        &filter.status,
    ];
    let (membership, rows) =
        page.read(&state.db, principal.actor(), Some(org), &page.with_keys(params)).await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::WebhooksManage, "webhook_delivery.list")
        .await?;
    if rows.is_empty() {
        return Err(ApiError::NotFound);
    }
    let count_params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&path.org_id, &path.endpoint_id, &COUNT_FETCH, &filter.status];
    let total = total(&state.db, &principal, Some(org), &page, COUNT_DELIVERIES, &count_params).await?;
    let items =
        rows.iter().filter(|r| r.get::<_, Option<Uuid>>("id").is_some()).map(delivery_from_row).collect();
    Ok(web::Json(page.page(items, total, |d: &WebhookDeliveryResponse| Key::Id(d.id))))
}

/// One delivery with every attempt at it (permission `webhooks:manage`).
#[utoipa::path(
    tag = "webhooks",
    params(WebhookDeliveryPath),
    responses(
        (status = 200, description = "The delivery and its attempts", body = WebhookDeliveryWithAttempts),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission webhooks:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such delivery", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn get_webhook_delivery(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<WebhookDeliveryPath>,
) -> Result<web::Json<WebhookDeliveryWithAttempts>, ApiError> {
    // The delivery and its attempts in one statement: one row per attempt (NULLs for none yet).
    let (membership, rows) = tenant::read(
        &state.db,
        principal.actor(),
        Some(OrgId(path.org_id)),
        concat!(
            "select ",
            delivery_columns!(),
            ", a.attempt, a.started_at, a.duration_ms, a.response_status, a.error, a.response_body \
             from webhook_deliveries d join events e on e.organization_id = d.organization_id and e.id = d.event_id \
             left join webhook_delivery_attempts a on a.organization_id = d.organization_id and a.delivery_id = d.id \
             where d.organization_id = $1 and d.endpoint_id = $2 and d.id = $3 order by a.attempt"
        ),
        &[&path.org_id, &path.endpoint_id, &path.delivery_id],
    )
    .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::WebhooksManage, "webhook_delivery.get")
        .await?;
    let first = rows.first().ok_or(ApiError::NotFound)?;
    let attempt_log = rows
        .iter()
        .filter(|r| r.get::<_, Option<i32>>("attempt").is_some())
        .map(|r| WebhookAttemptResponse {
            attempt: r.get("attempt"),
            started_at: r.get("started_at"),
            duration_ms: r.get("duration_ms"),
            response_status: r.get("response_status"),
            error: r.get("error"),
            response_body: r.get("response_body"),
        })
        .collect();
    Ok(web::Json(WebhookDeliveryWithAttempts { delivery: delivery_from_row(first), attempt_log }))
}

/// Send a delivery again, now (permission `webhooks:manage`): a failed or succeeded one gets a
/// new attempt, a pending one is moved up. Its attempts so far stay in its log.
#[utoipa::path(
    tag = "webhooks",
    params(WebhookDeliveryPath),
    responses(
        (status = 202, description = "Queued for an attempt now", body = WebhookDeliveryResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission webhooks:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such delivery", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Being delivered right now, or its endpoint is disabled", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[post("/orgs/{org_id}/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/retry")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn retry_webhook_delivery(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<WebhookDeliveryPath>,
) -> Result<HttpResponse, ApiError> {
    let org = OrgId(path.org_id);
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(
        &mut tx,
        &principal,
        &meta,
        &membership,
        Permission::WebhooksManage,
        "webhook_delivery.retry",
    )
    .await?;
    let current = tx
        .query_opt(
            "select d.status, w.enabled from webhook_deliveries d join webhook_endpoints w \
               on w.organization_id = d.organization_id and w.id = d.endpoint_id \
             where d.organization_id = $1 and d.endpoint_id = $2 and d.id = $3 for share of w",
            &[&path.org_id, &path.endpoint_id, &path.delivery_id],
        )
        .await?
        .ok_or(ApiError::NotFound)?;
    if current.get::<_, &str>("status") == "delivering" {
        return Err(ApiError::Conflict {
            code: "delivery_in_progress",
            detail: "This delivery is being attempted right now; see its log for the outcome.".into(),
        });
    }
    if !current.get::<_, bool>("enabled") {
        return Err(ApiError::Conflict {
            code: "endpoint_disabled",
            detail: "The endpoint is disabled; enable it (PATCH enabled: true) first.".into(),
        });
    }
    // The policy lets this move only a delivery that is not being delivered (the delivery is not
    // locked above: FOR UPDATE would hide such a row and answer 404); a dispatcher that claimed
    // it meanwhile wins. The endpoint is share-locked, so it stays enabled until the commit.
    let moved = tx
        .execute(
            "update webhook_deliveries set status = 'pending', next_attempt_at = now(), finished_at = null \
             where organization_id = $1 and endpoint_id = $2 and id = $3 and status <> 'delivering'",
            &[&path.org_id, &path.endpoint_id, &path.delivery_id],
        )
        .await?;
    if moved != 1 {
        return Err(ApiError::Conflict {
            code: "delivery_in_progress",
            detail: "This delivery is being attempted right now; see its log for the outcome.".into(),
        });
    }
    tx.execute("select pg_notify('tenantry_deliveries', '')", &[]).await?;
    let row = delivery_row(&mut tx, path.org_id, path.endpoint_id, path.delivery_id).await?;
    let entry = AuditEntry::allowed("webhook_delivery.retry", "webhook_delivery", path.delivery_id, &meta)
        .with_details(serde_json::json!({"endpoint_id": path.endpoint_id}));
    record(&mut tx, &principal, entry).await?;
    tx.commit().await?;
    Ok(HttpResponse::Accepted().json(delivery_from_row(&row)))
}

/// Send a test ping to the endpoint now (permission `webhooks:manage`): an event
/// `webhook_endpoint.test` (`data: {endpoint_id}`), delivered to this endpoint only, signed and
/// logged like every delivery.
#[utoipa::path(
    tag = "webhooks",
    params(WebhookEndpointPath),
    responses(
        (status = 202, description = "Queued for an attempt now; follow it in the delivery log", body = WebhookDeliveryResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission webhooks:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The endpoint is disabled", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[post("/orgs/{org_id}/webhook-endpoints/{endpoint_id}/test")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn test_webhook_endpoint(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<WebhookEndpointPath>,
) -> Result<HttpResponse, ApiError> {
    let org = OrgId(path.org_id);
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(
        &mut tx,
        &principal,
        &meta,
        &membership,
        Permission::WebhooksManage,
        "webhook_endpoint.test",
    )
    .await?;
    let enabled: bool = tx
        .query_opt(
            "select enabled from webhook_endpoints where organization_id = $1 and id = $2",
            &[&path.org_id, &path.endpoint_id],
        )
        .await?
        .ok_or(ApiError::NotFound)?
        .get(0);
    let disabled = || ApiError::Conflict {
        code: "endpoint_disabled",
        detail: "The endpoint is disabled; enable it (PATCH enabled: true) first.".into(),
    };
    if !enabled {
        return Err(disabled());
    }
    let delivery: Uuid = tx
        .query_found("select app.ping_webhook_endpoint($1)", &[&path.endpoint_id])
        .await?
        .get::<_, Option<Uuid>>(0)
        .ok_or_else(disabled)?;
    let row = delivery_row(&mut tx, path.org_id, path.endpoint_id, delivery).await?;
    let entry = AuditEntry::allowed("webhook_endpoint.test", "webhook_endpoint", path.endpoint_id, &meta)
        .with_details(serde_json::json!({"delivery_id": delivery}));
    record(&mut tx, &principal, entry).await?;
    tx.commit().await?;
    Ok(HttpResponse::Accepted()
        .insert_header((
            actix_web::http::header::LOCATION,
            format!("/api/v1/orgs/{org}/webhook-endpoints/{}/deliveries/{delivery}", path.endpoint_id),
        ))
        .json(delivery_from_row(&row)))
}
