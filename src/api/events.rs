//! Events: what happened in an organization, written by the database in the same transaction as
//! the change (migrations/V27__events.sql, sql/11_events.sql). This module only reads them: the
//! catalogue, an organization's events (permission `events:read`), one event. Nothing here can
//! write an event; the app role holds no INSERT on the table.

use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::authz::authorize;
use super::conditional::Preconditions;
use super::extract::RequestMeta;
use super::orgs::OrgPath;
use super::pagination::{COUNT_FETCH, Key, Keyset, Page, PageQuery, total};
use crate::api::ApiError;
use crate::api::problem::Problem;
use crate::auth::Principal;
use crate::db::tenant;
use crate::domain::{FieldError, OrgId, Permission, supported_time};
use crate::{keyset, sorts};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventResponse {
    /// A UUIDv7: events sort by it. Deliveries send it as `webhook-id`.
    #[schema(example = "01938f4e-7b1c-7d3e-9a51-2f0c8d7e6b5a")]
    pub id: Uuid,
    /// One of the catalogue's types (`GET /event-types`).
    #[serde(rename = "type")]
    #[schema(example = "workspace.created")]
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub organization_id: Uuid,
    /// The user who made the change, if a user did.
    pub actor_user_id: Option<Uuid>,
    /// The API key that made the change, if one did. Neither: the worker or a payment provider.
    pub actor_api_key_id: Option<Uuid>,
    /// The workspace it concerns, if any.
    pub workspace_id: Option<Uuid>,
    /// Ids and metadata of what changed; the fields depend on the type.
    #[schema(example = json!({"workspace_id": "0193...", "name": "production", "region": "us"}))]
    pub data: Value,
    /// Content (a run's output or error message): only for organizations in `full` data mode.
    pub content: Option<Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventTypeResponse {
    #[serde(rename = "type")]
    #[schema(example = "run.failed")]
    pub event_type: String,
    pub description: String,
}

pub fn event_from_row(row: &Row) -> EventResponse {
    EventResponse {
        id: row.get("id"),
        event_type: row.get("type"),
        occurred_at: row.get("occurred_at"),
        organization_id: row.get("organization_id"),
        actor_user_id: row.get("actor_user_id"),
        actor_api_key_id: row.get("actor_api_key_id"),
        workspace_id: row.get("workspace_id"),
        data: row.get("data"),
        content: row.get("content"),
    }
}

/// Event types are dotted lowercase names (`member.role_changed`), at most 100 characters.
pub fn is_event_type_name(name: &str) -> bool {
    (3..=100).contains(&name.len())
        && name.contains('.')
        && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_')
}

/// The event list's statements: `$1` organization, `$2` limit, `$3` type, `$4`/`$5` the time
/// range, then the cursor's key (`id`, a UUIDv7). Indexes: the primary key `(organization_id,
/// id)`, and `events_by_type (organization_id, type, id)` with a type. A time range is a range of
/// ids too (an id is its time, `app.uuid_v7_floor()`), checked exactly on `occurred_at`.
macro_rules! events {
    () => {
        "select id, type, occurred_at, organization_id, actor_user_id, actor_api_key_id, workspace_id, data, \
         content from events where organization_id = $1 and ($3::text is null or type = $3) \
           and ($4::timestamptz is null or (id >= app.uuid_v7_floor($4) and occurred_at >= $4)) \
           and ($5::timestamptz is null \
                or (id < app.uuid_v7_floor($5 + interval '1 millisecond') and occurred_at < $5))"
    };
}
macro_rules! events_plain {
    () => {
        "select id, type, occurred_at, organization_id, actor_user_id, actor_api_key_id, workspace_id, data, \
         content from events where organization_id = $1 and $3::text is null \
           and $4::timestamptz is null and $5::timestamptz is null"
    };
}
static BY_CREATED: Keyset = keyset!(1, Id, asc, events, events_plain, "", "id", "$6", "id", "id desc", "$2");
static BY_CREATED_DESC: Keyset =
    keyset!(2, Id, desc, events, events_plain, "", "id", "$6", "id", "id desc", "$2");
const COUNT_EVENTS: &str = concat!("select count(*) from (", events!(), " limit $2) c");

sorts! {
    /// The order of an event list.
    EventSort {
        CreatedAt = "created_at" => BY_CREATED,
        CreatedAtDesc = "-created_at" => BY_CREATED_DESC,
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventFilter {
    /// Only events of this type.
    #[param(example = "run.failed")]
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Only events at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only events before this time.
    pub until: Option<DateTime<Utc>>,
    /// `created_at` (default, oldest first) or `-created_at` (newest first).
    #[param(inline)]
    pub sort: Option<EventSort>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct EventPath {
    /// The organization's id.
    pub org_id: Uuid,
    /// The event's id.
    pub event_id: Uuid,
}

/// The event catalogue: every type an event can have.
#[utoipa::path(
    tag = "events",
    responses(
        (status = 200, description = "Every event type, with what it means", body = Vec<EventTypeResponse>),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/event-types")]
pub async fn list_event_types(
    state: web::Data<AppState>,
    principal: Principal,
) -> Result<web::Json<Vec<EventTypeResponse>>, ApiError> {
    let (_, rows) = tenant::read(
        &state.db,
        principal.actor(),
        None,
        "select type, description from event_types order by type",
        &[],
    )
    .await?;
    Ok(web::Json(
        rows.iter()
            .map(|row| EventTypeResponse { event_type: row.get("type"), description: row.get("description") })
            .collect(),
    ))
}

/// List the organization's events (permission `events:read`). Events are kept for
/// `events.retention_days` (30 by default).
#[utoipa::path(
    tag = "events",
    params(OrgPath, EventFilter, PageQuery),
    responses(
        (status = 200, description = "A page of events", body = Page<EventResponse>),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission events:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid filter, sort, limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/events")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn list_events(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
    query: web::Query<EventFilter>,
    paging: web::Query<PageQuery>,
) -> Result<web::Json<Page<EventResponse>>, ApiError> {
    let page = paging
        .parse(query.sort.unwrap_or_default().keyset())?
        .filtered(query.event_type.is_some() || query.since.is_some() || query.until.is_some());
    if let Some(name) = &query.event_type
        && !is_event_type_name(name)
    {
        return Err(FieldError::new("type", "is not an event type (e.g. workspace.created)").into());
    }
    for (field, time) in [("since", query.since), ("until", query.until)] {
        if let Some(time) = time {
            supported_time(field, time)?;
        }
    }
    let org = OrgId(path.org_id);
    let filters: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
        [&query.event_type, &query.since, &query.until];
    let mut params = vec![org.as_uuid() as &(dyn tokio_postgres::types::ToSql + Sync), page.fetch()];
    params.extend_from_slice(&filters);
    let (membership, rows) =
        page.read(&state.db, principal.actor(), Some(org), &page.with_keys(params)).await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::EventsRead, "event.list").await?;
    let mut count_params = vec![org.as_uuid() as &(dyn tokio_postgres::types::ToSql + Sync), &COUNT_FETCH];
    count_params.extend_from_slice(&filters);
    let total = total(&state.db, &principal, Some(org), &page, COUNT_EVENTS, &count_params).await?;
    let items = rows.iter().map(event_from_row).collect();
    Ok(web::Json(page.page(items, total, |e: &EventResponse| Key::Id(e.id))))
}

/// Get one event (permission `events:read`).
#[utoipa::path(
    tag = "events",
    params(EventPath),
    responses(
        (status = 200, description = "The event", body = EventResponse),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission events:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such event", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/events/{event_id}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn get_event(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<EventPath>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    const SELECT: &str = "select id, type, occurred_at, organization_id, actor_user_id, actor_api_key_id, \
         workspace_id, data, content from events where organization_id = $1 and id = $2";
    let (membership, rows) = tenant::read(
        &state.db,
        principal.actor(),
        Some(OrgId(path.org_id)),
        SELECT,
        &[&path.org_id, &path.event_id],
    )
    .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::EventsRead, "event.get").await?;
    let row = rows.first().ok_or(ApiError::NotFound)?;
    // An event never changes: version 1 is its tag forever.
    Ok(preconditions.respond(1, &event_from_row(row)))
}
