//! The audit log: recording (every mutation in its own transaction, every denied attempt), and
//! reading, verifying and checkpointing an organization's hash chain. The chain itself (sequence,
//! hashes, append-only) is enforced by PostgreSQL (migrations/V4__audit_log.sql).

use actix_web::{HttpRequest, HttpResponse, get, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::authz::authorize;
use super::csv;
use super::extract::RequestMeta;
use super::orgs::OrgPath;
use super::pagination::{COUNT_FETCH, Key, Keyset, Page, PageQuery, total};
use crate::api::ApiError;
use crate::api::problem::Problem;
use crate::auth::Principal;
use crate::db::{DbError, TenantTx, tenant};
use crate::domain::{FieldError, OrgId, Permission, supported_time};
use crate::{keyset, sorts};

/// One thing that happened, to be appended to the organization's log.
pub struct AuditEntry<'a> {
    pub action: &'static str,
    pub target_type: &'static str,
    pub target_id: Option<String>,
    pub outcome: &'static str,
    pub details: Value,
    pub meta: &'a RequestMeta,
}

impl<'a> AuditEntry<'a> {
    pub fn allowed(
        action: &'static str,
        target_type: &'static str,
        target_id: impl ToString,
        meta: &'a RequestMeta,
    ) -> Self {
        AuditEntry {
            action,
            target_type,
            target_id: Some(target_id.to_string()),
            outcome: "allowed",
            details: Value::Object(Default::default()),
            meta,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
}

fn actor_of(principal: &Principal) -> (&'static str, Uuid) {
    match principal {
        Principal::User(u) => ("user", u.user_id.0),
        Principal::ApiKey(k) => ("api_key", k.key_id),
    }
}

const INSERT: &str = "insert into audit_events (organization_id, id, actor_type, actor_id, action, target_type, \
     target_id, outcome, ip, user_agent, request_id, details, prev_hash, hash) \
     values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, '\\x', '\\x')";

/// Appends `entry` inside `tx`, so it commits or rolls back with the change it describes.
pub async fn record(tx: &mut TenantTx, principal: &Principal, entry: AuditEntry<'_>) -> Result<(), DbError> {
    let org =
        tx.org().ok_or_else(|| DbError::Other(anyhow::anyhow!("audit entry outside an organization")))?;
    let (actor_type, actor_id) = actor_of(principal);
    tx.execute(
        INSERT,
        &[
            org.as_uuid(),
            &Uuid::now_v7(),
            &actor_type,
            &actor_id,
            &entry.action,
            &entry.target_type,
            &entry.target_id,
            &entry.outcome,
            &entry.meta.ip,
            &entry.meta.user_agent,
            &entry.meta.request_id,
            &entry.details,
        ],
    )
    .await?;
    Ok(())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventResponse {
    pub seq: i64,
    pub id: Uuid,
    pub occurred_at: DateTime<Utc>,
    /// `user`, `api_key`, `platform_admin` or `system`.
    pub actor_type: String,
    pub actor_id: Option<Uuid>,
    /// e.g. `workspace.create`, `member.update`.
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    /// `allowed`, `denied` or `failed`.
    pub outcome: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub details: Value,
    /// Hex SHA-256 of the previous entry's hash and this entry's canonical content.
    pub hash: String,
}

/// The audit list's statements: `$1` organization, `$2` limit, `$3` action, `$4` actor, `$5`
/// outcome, `$6`/`$7` the time range, then the cursor's key (`seq`). Indexes: the primary key
/// `(organization_id, seq)`, `audit_events_action_idx (organization_id, action, seq)` with an
/// action, `audit_events_by_actor` with an actor, `audit_events_by_time` for a time range.
macro_rules! audit_events {
    () => {
        "select seq, id, occurred_at, actor_type, actor_id, action, target_type, target_id, outcome, \
         host(ip) as ip, user_agent, request_id, details, hash from audit_events \
         where organization_id = $1 \
           and ($3::text is null or action = $3) and ($4::uuid is null or actor_id = $4) \
           and ($5::text is null or outcome = $5) \
           and ($6::timestamptz is null or occurred_at >= $6) and ($7::timestamptz is null or occurred_at < $7)"
    };
}
macro_rules! audit_events_plain {
    () => {
        "select seq, id, occurred_at, actor_type, actor_id, action, target_type, target_id, outcome, \
         host(ip) as ip, user_agent, request_id, details, hash from audit_events \
         where organization_id = $1 and $3::text is null and $4::uuid is null and $5::text is null \
           and $6::timestamptz is null and $7::timestamptz is null"
    };
}
static BY_SEQ: Keyset =
    keyset!(1, Int, asc, audit_events, audit_events_plain, "", "seq", "$8", "seq", "seq desc", "$2");
static BY_SEQ_DESC: Keyset =
    keyset!(2, Int, desc, audit_events, audit_events_plain, "", "seq", "$8", "seq", "seq desc", "$2");
const COUNT_AUDIT_EVENTS: &str = concat!("select count(*) from (", audit_events!(), " limit $2) c");

/// The columns of the audit log as CSV.
const AUDIT_CSV_COLUMNS: &[&str] = &[
    "seq",
    "id",
    "occurred_at",
    "actor_type",
    "actor_id",
    "action",
    "target_type",
    "target_id",
    "outcome",
    "ip",
    "user_agent",
    "request_id",
    "details",
    "hash",
];

sorts! {
    /// The order of the audit log (`created_at` is the chain's order, `seq`).
    AuditSort {
        CreatedAt = "created_at" => BY_SEQ,
        CreatedAtDesc = "-created_at" => BY_SEQ_DESC,
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// `created_at` (default, oldest first, the chain's order) or `-created_at` (newest first).
    #[param(inline)]
    pub sort: Option<AuditSort>,
    /// Only this action, e.g. `workspace.create`.
    pub action: Option<String>,
    /// Only entries by this user or API key.
    pub actor_id: Option<Uuid>,
    /// Only `allowed`, `denied` or `failed`.
    pub outcome: Option<String>,
    /// Only entries at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only entries before this time.
    pub until: Option<DateTime<Utc>>,
}

/// Actions are dotted lowercase names (`member.update_workspaces`), at most 100 characters.
fn is_action_name(action: &str) -> bool {
    (1..=100).contains(&action.len())
        && action.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_')
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn event_from_row(row: &Row) -> AuditEventResponse {
    AuditEventResponse {
        seq: row.get("seq"),
        id: row.get("id"),
        occurred_at: row.get("occurred_at"),
        actor_type: row.get("actor_type"),
        actor_id: row.get("actor_id"),
        action: row.get("action"),
        target_type: row.get("target_type"),
        target_id: row.get("target_id"),
        outcome: row.get("outcome"),
        ip: row.get("ip"),
        user_agent: row.get("user_agent"),
        request_id: row.get("request_id"),
        details: row.get("details"),
        hash: hex(&row.get::<_, Vec<u8>>("hash")),
    }
}

/// Read the organization's audit log, oldest first (permission `audit:read`).
#[utoipa::path(
    tag = "audit",
    params(OrgPath, AuditQuery, PageQuery),
    responses(
        (status = 200, description = "Audit entries: JSON, or CSV with `Accept: text/csv` (up to 10,000 rows a page, `limit` default 1,000, the next and previous pages in `Link`)",
            content(
                (Page<AuditEventResponse> = "application/json"),
                (String = "text/csv"),
            )),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission audit:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid filter, sort, limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/audit-events")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn list_audit_events(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
    query: web::Query<AuditQuery>,
    paging: web::Query<PageQuery>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let csv = csv::wants_csv(&req);
    let keyset = query.sort.unwrap_or_default().keyset();
    let page = if csv { paging.parse_csv(keyset) } else { paging.parse(keyset) }?.filtered(
        query.action.is_some()
            || query.actor_id.is_some()
            || query.outcome.is_some()
            || query.since.is_some()
            || query.until.is_some(),
    );
    if let Some(outcome) = &query.outcome
        && !["allowed", "denied", "failed"].contains(&outcome.as_str())
    {
        return Err(FieldError::new("outcome", "must be allowed, denied or failed").into());
    }
    if let Some(action) = &query.action
        && !is_action_name(action)
    {
        return Err(FieldError::new("action", "is not an action name (e.g. workspace.create)").into());
    }
    for (field, time) in [("since", query.since), ("until", query.until)] {
        if let Some(time) = time {
            supported_time(field, time)?;
        }
    }
    let org = OrgId(path.org_id);
    let filters: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
        [&query.action, &query.actor_id, &query.outcome, &query.since, &query.until];
    let mut params = vec![org.as_uuid() as &(dyn tokio_postgres::types::ToSql + Sync), page.fetch()];
    params.extend_from_slice(&filters);
    let (membership, rows) =
        page.read(&state.db, principal.actor(), Some(org), &page.with_keys(params)).await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::AuditRead, "audit.read").await?;
    let mut count_params = vec![org.as_uuid() as &(dyn tokio_postgres::types::ToSql + Sync), &COUNT_FETCH];
    count_params.extend_from_slice(&filters);
    let total = total(&state.db, &principal, Some(org), &page, COUNT_AUDIT_EVENTS, &count_params).await?;
    let items: Vec<AuditEventResponse> = rows.iter().map(event_from_row).collect();
    let page = page.page(items, total, |e| Key::Int(e.seq));
    if csv {
        let body = csv::render(AUDIT_CSV_COLUMNS, &page.items);
        return Ok(csv::response(&req, body, page.next_cursor.as_deref(), page.prev_cursor.as_deref()));
    }
    Ok(HttpResponse::Ok().json(page))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChainStatus {
    /// True when every entry verifies.
    pub intact: bool,
    /// Entries in the chain.
    pub entries: i64,
    /// The last entry's sequence number and hash: a checkpoint to store elsewhere.
    pub head_seq: i64,
    pub head_hash: Option<String>,
    /// The first entry that does not verify, and why (`sequence_gap`,
    /// `previous_hash_mismatch`, `content_hash_mismatch`).
    pub first_broken_seq: Option<i64>,
    pub reason: Option<String>,
    /// A JWS (our signing key) over organization, head sequence and hash, for off-site anchoring.
    pub checkpoint: Option<String>,
}

/// Verify the organization's hash chain and return a signed checkpoint of its head
/// (permission `audit:read`).
#[utoipa::path(
    tag = "audit",
    params(OrgPath),
    responses(
        (status = 200, description = "Chain status", body = ChainStatus),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission audit:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/audit-events/verify")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn verify_audit_events(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
) -> Result<web::Json<ChainStatus>, ApiError> {
    let org = OrgId(path.org_id);
    let (membership, rows) = tenant::read(
        &state.db,
        principal.actor(),
        Some(org),
        "select (select count(*) from audit_events where organization_id = $1) as entries, \
                h.seq as head_seq, h.hash as head_hash \
         from (select 1) one \
         left join lateral (select seq, hash from audit_events where organization_id = $1 \
                            order by seq desc limit 1) h on true",
        &[org.as_uuid()],
    )
    .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::AuditRead, "audit.verify").await?;
    let row =
        rows.first().ok_or_else(|| ApiError::Internal(anyhow::anyhow!("verification returned no row")))?;
    let head_seq: i64 = row.get::<_, Option<i64>>("head_seq").unwrap_or(0);
    let head_hash = row.get::<_, Option<Vec<u8>>>("head_hash").map(|h| hex(&h));
    // The walk is a statement of its own, after the head: on Citus a function beside a shard's
    // rows is pushed to that shard, where its own query may not run. The chain it walks holds the
    // head read above (entries are only appended).
    let (_, broken) = tenant::read(
        &state.db,
        principal.actor(),
        Some(org),
        "select seq, reason from app.audit_verify($1) limit 1",
        &[org.as_uuid()],
    )
    .await?;
    let first_broken_seq: Option<i64> = broken.first().map(|b| b.get("seq"));
    let reason: Option<String> = broken.first().map(|b| b.get("reason"));
    let checkpoint = match &head_hash {
        Some(hash) => Some(
            state
                .keys
                .current
                .sign_checkpoint(&state.settings.auth.issuer, org, head_seq, hash)
                .map_err(ApiError::Internal)?,
        ),
        None => None,
    };
    Ok(web::Json(ChainStatus {
        intact: first_broken_seq.is_none(),
        entries: row.get("entries"),
        head_seq,
        head_hash,
        first_broken_seq,
        reason,
        checkpoint,
    }))
}
