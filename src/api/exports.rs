//! Organization export, as a job: `POST /orgs/{org_id}/exports` answers 202 with a `Location`
//! that reports progress, and a task of this server reads each tenant table through a cursor
//! (`FETCH` a batch at a time, so memory stays bounded by the batch, not the table) and stores it
//! as NDJSON chunks; downloads stream the chunks back one at a time. Everything happens under the
//! requesting owner's RLS context (so no other tenant's row can be in it), each chunk in its own
//! short transaction (so a revoked permission stops it). Secret hashes (API keys, invitations)
//! are left out. Owners only (`org:export`); the latest export replaces earlier ones, and one
//! runs at a time per organization.
//!
//! A job whose server stopped stops too: its heartbeat ages, and after `STALE_SECS` it reads as
//! `failed` (`abandoned`), and a new export may start.

use actix_web::http::header;
use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::audit::{AuditEntry, record};
use super::authz::{authorize, authorize_in};
use super::extract::RequestMeta;
use super::orgs::OrgPath;
use super::{AppState, require_user};
use crate::api::ApiError;
use crate::api::problem::Problem;
use crate::auth::Principal;
use crate::db::{Actor, TenantTx, tenant};
use crate::domain::{OrgId, Permission};

/// Rows per chunk: what one `FETCH` reads and one stored chunk holds (export_chunks allows
/// at most 2,000).
const CHUNK_ROWS: i64 = 2_000;
const FETCH: &str = "fetch 2000 from export_rows";
/// Export jobs one server runs at once; more wait their turn (`queued`).
pub const CONCURRENT_EXPORTS: usize = 2;
/// A running job whose heartbeat is older than this belongs to a server that stopped.
const STALE_SECS: i32 = 120;

/// Declares `TABLES` (each tenant table, as the statement that reads the organization's rows)
/// and `CURSORS` (the same statements as cursor declarations), both fixed at compile time.
macro_rules! export_tables {
    ($(($name:literal, $sql:literal $(,)?)),* $(,)?) => {
        /// What an export holds: each tenant table, as the statement that reads the
        /// organization's rows.
        pub const TABLES: &[(&str, &str)] = &[$(($name, $sql)),*];
        const CURSORS: &[&str] = &[$(concat!("declare export_rows no scroll cursor for ", $sql)),*];
    };
}

export_tables! {

    (
        "organizations",
        "select row_to_json(t)::text from (select id, name, slug, region, data_mode, suspended_at, created_at, \
         updated_at from organizations where id = $1) t",
    ),
    (
        "memberships",
        "select row_to_json(t)::text from (select organization_id, user_id, role, custom_role_id, granted_by_provider, \
         restricted, created_at, updated_at from memberships where organization_id = $1 order by user_id) t",
    ),
    (
        "users",
        "select row_to_json(t)::text from (select u.user_id as id, u.issuer, u.subject, u.email, u.display_name, \
         u.created_at from member_profiles u where u.organization_id = $1 order by u.user_id) t",
    ),
    (
        "workspaces",
        "select row_to_json(t)::text from (select * from workspaces where organization_id = $1 order by id) t",
    ),
    (
        "roles",
        "select row_to_json(t)::text from (select * from roles where organization_id = $1 order by id) t",
    ),
    (
        "workflows",
        "select row_to_json(t)::text from (select * from workflows where organization_id = $1 order by id) t",
    ),
    (
        "workflow_versions",
        "select row_to_json(t)::text from (select * from workflow_versions where organization_id = $1 \
         order by workflow_id, version) t",
    ),
    (
        "workflow_runs",
        "select row_to_json(t)::text from (select organization_id, workspace_id, id, workflow_id, version, status, \
         input, output, input_bytes, output_bytes, error_code, failed_step, error_message, attempts, created_by, \
         created_by_api_key, created_at, started_at, finished_at from workflow_runs where organization_id = $1 \
         order by id) t",
    ),
    (
        // Which keys exist, never their ciphertext: it is useless outside this deployment.
        "provider_keys",
        "select row_to_json(t)::text from (select organization_id, workspace_id, provider, key_suffix, endpoint, \
         last_verified_at, created_by, created_at, updated_at from provider_keys where organization_id = $1 \
         order by workspace_id, provider) t",
    ),
    (
        "organization_flags",
        "select row_to_json(t)::text from (select * from organization_flags where organization_id = $1 \
         order by flag_key) t",
    ),
    (
        "feature_flag_targets",
        "select row_to_json(t)::text from (select * from feature_flag_targets where organization_id = $1 \
         order by flag_key) t",
    ),
    (
        "subscriptions",
        "select row_to_json(t)::text from (select * from subscriptions where organization_id = $1) t",
    ),
    (
        "invoices",
        "select row_to_json(t)::text from (select * from invoices where organization_id = $1 order by id) t",
    ),
    (
        "invoice_lines",
        "select row_to_json(t)::text from (select * from invoice_lines where organization_id = $1 \
         order by invoice_id, line_no) t",
    ),
    (
        "ledger_accounts",
        "select row_to_json(t)::text from (select * from ledger_accounts where organization_id = $1 order by id) t",
    ),
    (
        "journal_transactions",
        "select row_to_json(t)::text from (select * from journal_transactions where organization_id = $1 \
         order by id) t",
    ),
    (
        "journal_entries",
        "select row_to_json(t)::text from (select * from journal_entries where organization_id = $1 \
         order by transaction_id, line_no) t",
    ),
    (
        "usage_counters",
        "select row_to_json(t)::text from (select * from usage_counters where organization_id = $1 \
         order by day, api_key_id) t",
    ),
    (
        "member_workspaces",
        "select row_to_json(t)::text from (select * from member_workspaces where organization_id = $1 \
         order by user_id, workspace_id) t",
    ),
    (
        "role_permissions",
        "select row_to_json(t)::text from (select * from role_permissions where organization_id = $1 \
         order by role_id, permission) t",
    ),
    (
        "api_keys",
        "select row_to_json(t)::text from (select organization_id, id, name, scopes, workspace_ids, created_by, \
         created_at, expires_at, last_used_at, revoked_at from api_keys where organization_id = $1 order by id) t",
    ),
    (
        "invitations",
        "select row_to_json(t)::text from (select organization_id, id, email, role, custom_role_id, workspace_ids, \
         invited_by, created_at, expires_at, accepted_at, accepted_by, revoked_at from invitations \
         where organization_id = $1 order by id) t",
    ),
    (
        "provider_grants",
        "select row_to_json(t)::text from (select * from provider_grants where organization_id = $1 \
         order by provider, role) t",
    ),
    (
        "audit_events",
        "select row_to_json(t)::text from (select organization_id, seq, id, occurred_at, actor_type, actor_id, action, \
         target_type, target_id, outcome, host(ip) as ip, user_agent, request_id, details, \
         encode(prev_hash, 'hex') as prev_hash, encode(hash, 'hex') as hash \
         from audit_events where organization_id = $1 order by seq) t",
    ),
    (
        "events",
        "select row_to_json(t)::text from (select id, type, occurred_at, organization_id, actor_user_id, \
         actor_api_key_id, workspace_id, data, content from events where organization_id = $1 order by id) t",
    ),
    (
        // Never the signing secrets (ciphertext under a key the export does not carry).
        "webhook_endpoints",
        "select row_to_json(t)::text from (select organization_id, id, url, description, event_types, enabled, \
         disabled_reason, consecutive_failures, failing_since, previous_secret_expires_at, created_by, created_at, \
         updated_at from webhook_endpoints where organization_id = $1 order by id) t",
    ),
    (
        "webhook_deliveries",
        "select row_to_json(t)::text from (select organization_id, id, endpoint_id, event_id, status, attempts, \
         next_attempt_at, last_attempt_at, last_response_status, last_error, created_at, finished_at \
         from webhook_deliveries where organization_id = $1 order by id) t",
    ),
    (
        "webhook_delivery_attempts",
        "select row_to_json(t)::text from (select * from webhook_delivery_attempts where organization_id = $1 \
         order by delivery_id, attempt) t",
    ),
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ExportPath {
    /// Organization id.
    pub org_id: Uuid,
    /// Export id.
    pub export_id: Uuid,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ExportFilePath {
    /// Organization id.
    pub org_id: Uuid,
    /// Export id.
    pub export_id: Uuid,
    /// Table name, e.g. `workspaces`.
    pub table: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExportFile {
    pub table: String,
    pub rows: i64,
    /// Download it here (NDJSON: one JSON object per line).
    pub url: String,
}

/// Where an export job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": "01936f90-1a2b-7c3d-8e4f-5a6b7c8d9e0f", "status": "running", "tables_total": 24,
    "tables_done": 9, "rows_exported": 48000, "error": null, "created_at": "2026-11-05T12:00:00Z",
    "started_at": "2026-11-05T12:00:01Z", "finished_at": null, "files": []}))]
pub struct ExportResponse {
    pub id: Uuid,
    pub status: ExportStatus,
    /// Tables in the export, and those written so far.
    pub tables_total: i32,
    pub tables_done: i32,
    /// Rows written so far.
    pub rows_exported: i64,
    /// Why it failed (`abandoned`: its server stopped; `forbidden`: the permission was revoked).
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The files, once it succeeded.
    pub files: Vec<ExportFile>,
}

const SELECT_EXPORT: &str = "select id, created_at, started_at, finished_at, tables_done, rows_exported, \
       case when status = 'running' and heartbeat_at < now() - $3::int * interval '1 second' then 'failed' \
            else status end as status, \
       case when status = 'running' and heartbeat_at < now() - $3::int * interval '1 second' then 'abandoned' \
            else error end as error \
     from exports where organization_id = $1 and id = $2";

fn export_from_row(row: &Row, org: OrgId, files: Vec<ExportFile>) -> ExportResponse {
    let status = match row.get::<_, String>("status").as_str() {
        "queued" => ExportStatus::Queued,
        "running" => ExportStatus::Running,
        "succeeded" => ExportStatus::Succeeded,
        _ => ExportStatus::Failed,
    };
    let id: Uuid = row.get("id");
    ExportResponse {
        id,
        status,
        tables_total: i32::try_from(TABLES.len()).unwrap_or(i32::MAX),
        tables_done: row.get("tables_done"),
        rows_exported: row.get("rows_exported"),
        error: row.get("error"),
        created_at: row.get("created_at"),
        started_at: row.get("started_at"),
        finished_at: row.get("finished_at"),
        files: if status == ExportStatus::Succeeded {
            files
                .into_iter()
                .map(|f| ExportFile { url: format!("/api/v1/orgs/{org}/exports/{id}/{}", f.table), ..f })
                .collect()
        } else {
            Vec::new()
        },
    }
}

/// Export all of the organization's data (permission `org:export`): a job. The answer is 202 at
/// once; `Location` reports its progress and, when it succeeded, the files.
#[utoipa::path(
    tag = "organizations",
    params(OrgPath),
    responses(
        (status = 202, description = "Queued; follow Location for progress", body = ExportResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission org:export", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An export of this organization is still running (`export_in_progress`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[post("/orgs/{org_id}/exports")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn create_export(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
) -> Result<HttpResponse, ApiError> {
    let user = require_user(&principal)?;
    let org = OrgId(path.org_id);
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::OrgExport, "organization.export")
        .await?;
    let busy = tx
        .query_opt(
            "select 1 from exports where organization_id = $1 and status in ('queued', 'running') \
               and heartbeat_at >= now() - $2::int * interval '1 second' for update",
            &[org.as_uuid(), &STALE_SECS],
        )
        .await?;
    if busy.is_some() {
        return Err(ApiError::Conflict {
            code: "export_in_progress",
            detail: "An export of this organization is still running; wait for it (or for it to fail)."
                .into(),
        });
    }
    tx.execute("delete from exports where organization_id = $1", &[org.as_uuid()]).await?;
    let id = Uuid::now_v7();
    tx.execute(
        "insert into exports (organization_id, id, created_by, status, heartbeat_at) values ($1, $2, $3, 'queued', now())",
        &[org.as_uuid(), &id, user.user_id.as_uuid()],
    )
    .await?;
    let row = tx.query_found(SELECT_EXPORT, &[org.as_uuid(), &id, &STALE_SECS]).await?;
    let entry = AuditEntry::allowed("organization.export", "export", id, &meta)
        .with_details(serde_json::json!({"tables": TABLES.len()}));
    record(&mut tx, &principal, entry).await?;
    tx.commit().await?;
    tokio::spawn(run_export(state.clone(), principal.actor(), org, id));
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, format!("/api/v1/orgs/{org}/exports/{id}")))
        .json(export_from_row(&row, org, Vec::new())))
}

/// An export's progress, and its files once it succeeded (permission `org:export`).
#[utoipa::path(
    tag = "organizations",
    params(ExportPath),
    responses(
        (status = 200, description = "The export job", body = ExportResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission org:export", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such export", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/exports/{export_id}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn get_export(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<ExportPath>,
) -> Result<web::Json<ExportResponse>, ApiError> {
    let org = OrgId(path.org_id);
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(
        &mut tx,
        &principal,
        &meta,
        &membership,
        Permission::OrgExport,
        "organization.export_status",
    )
    .await?;
    let row = tx.query_found(SELECT_EXPORT, &[org.as_uuid(), &path.export_id, &STALE_SECS]).await?;
    let files = tx
        .query(
            "select table_name, row_count from export_files where organization_id = $1 and export_id = $2 \
             order by table_name",
            &[org.as_uuid(), &path.export_id],
        )
        .await?;
    tx.commit().await?;
    let files = files
        .iter()
        .map(|f| ExportFile { table: f.get("table_name"), rows: f.get("row_count"), url: String::new() })
        .collect();
    Ok(web::Json(export_from_row(&row, org, files)))
}

/// The job: each table through a cursor, `CHUNK_ROWS` at a time, each chunk stored in its own
/// transaction with the progress and a heartbeat. Runs as the owner who asked, in their context.
async fn run_export(state: web::Data<AppState>, actor: Actor, org: OrgId, id: Uuid) {
    let Ok(_slot) = state.export_slots.acquire().await else { return };
    let outcome = export_tables(&state, actor, org, id).await;
    let (status, error) = match &outcome {
        Ok(()) => ("succeeded", None),
        Err(ApiError::Forbidden(_) | ApiError::NotFound) => ("failed", Some("forbidden")),
        Err(_) => ("failed", Some("error")),
    };
    if let Err(e) = &outcome {
        tracing::warn!(error = %e, export.id = %id, "export failed");
    }
    // Recorded as the owner if they still may; otherwise the job simply ages into `abandoned`.
    if let Ok((mut tx, _)) = TenantTx::begin_org(&state.db, actor, org).await {
        let done = tx
            .execute(
                "update exports set status = $3, error = $4, finished_at = now(), heartbeat_at = now() \
                 where organization_id = $1 and id = $2",
                &[org.as_uuid(), &id, &status, &error],
            )
            .await;
        if done.is_ok() {
            let _ = tx.commit().await;
        }
    }
}

async fn export_tables(state: &AppState, actor: Actor, org: OrgId, id: Uuid) -> Result<(), ApiError> {
    let (mut writer, _) = TenantTx::begin_org(&state.db, actor, org).await?;
    let started = writer
        .execute(
            "update exports set status = 'running', started_at = now(), heartbeat_at = now() \
             where organization_id = $1 and id = $2 and status = 'queued'",
            &[org.as_uuid(), &id],
        )
        .await?;
    writer.commit().await?;
    if started != 1 {
        return Err(ApiError::NotFound); // replaced or deleted meanwhile
    }
    for (index, ((table, _), declare)) in TABLES.iter().zip(CURSORS).enumerate() {
        // One read transaction per table: the cursor gives that table one snapshot.
        let (mut reader, _) = TenantTx::begin_org(&state.db, actor, org).await?;
        reader.execute(declare, &[org.as_uuid()]).await?;
        let mut chunk_no = 0i32;
        let mut rows_in_table = 0i64;
        loop {
            let rows = reader.query(FETCH, &[]).await?;
            if rows.is_empty() {
                break;
            }
            let count = i64::try_from(rows.len()).unwrap_or(i64::MAX);
            let mut content = String::new();
            for row in &rows {
                content.push_str(row.get::<_, &str>(0));
                content.push('\n');
            }
            drop(rows);
            store_chunk(state, actor, org, id, table, chunk_no, count, &content).await?;
            rows_in_table += count;
            chunk_no += 1;
            if count < CHUNK_ROWS {
                break;
            }
        }
        reader.commit().await?;
        let (mut writer, _) = TenantTx::begin_org(&state.db, actor, org).await?;
        writer
            .execute(
                "insert into export_files (organization_id, export_id, table_name, row_count, content) \
                 values ($1, $2, $3, $4, '')",
                &[org.as_uuid(), &id, table, &rows_in_table],
            )
            .await?;
        let done = i32::try_from(index + 1).unwrap_or(i32::MAX);
        writer
            .execute(
                "update exports set tables_done = $3, heartbeat_at = now() where organization_id = $1 and id = $2",
                &[org.as_uuid(), &id, &done],
            )
            .await?;
        writer.commit().await?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn store_chunk(
    state: &AppState,
    actor: Actor,
    org: OrgId,
    id: Uuid,
    table: &str,
    chunk_no: i32,
    rows: i64,
    content: &str,
) -> Result<(), ApiError> {
    let (mut writer, _) = TenantTx::begin_org(&state.db, actor, org).await?;
    let rows32 = i32::try_from(rows).unwrap_or(i32::MAX);
    writer
        .execute(
            "insert into export_chunks (organization_id, export_id, table_name, chunk_no, row_count, content) \
             values ($1, $2, $3, $4, $5, $6)",
            &[org.as_uuid(), &id, &table, &chunk_no, &rows32, &content],
        )
        .await?;
    writer
        .execute(
            "update exports set rows_exported = rows_exported + $3, heartbeat_at = now() \
             where organization_id = $1 and id = $2",
            &[org.as_uuid(), &id, &rows],
        )
        .await?;
    writer.commit().await?;
    Ok(())
}

/// Download one table of an export, as NDJSON, streamed a chunk at a time (permission
/// `org:export`; each chunk is read in its own transaction, so a revoked permission ends it).
#[utoipa::path(
    tag = "organizations",
    params(ExportFilePath),
    responses(
        (status = 200, description = "One JSON object per line", body = String, content_type = "application/x-ndjson"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission org:export", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such export or table (or not finished)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/exports/{export_id}/{table}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn get_export_file(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<ExportFilePath>,
) -> Result<HttpResponse, ApiError> {
    let (membership, rows) = tenant::read(
        &state.db,
        principal.actor(),
        Some(OrgId(path.org_id)),
        "select f.content from export_files f \
         join exports e on e.organization_id = f.organization_id and e.id = f.export_id \
         where f.organization_id = $1 and f.export_id = $2 and f.table_name = $3 and e.status = 'succeeded'",
        &[&path.org_id, &path.export_id, &path.table],
    )
    .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::OrgExport, "organization.export_download")
        .await?;
    let legacy: String = rows.first().ok_or(ApiError::NotFound)?.get(0);
    if !legacy.is_empty() {
        // Made by a release before exports were jobs: the file is one value.
        return Ok(HttpResponse::Ok().content_type("application/x-ndjson").body(legacy));
    }
    let download = Download {
        state: state.clone(),
        actor: principal.actor(),
        org: OrgId(path.org_id),
        export: path.export_id,
        table: path.table.clone(),
        next: 0,
    };
    let body = futures_util::stream::unfold(Some(download), |download| async move {
        let mut download = download?;
        match download.chunk().await {
            Ok(Some(bytes)) => Some((Ok::<_, actix_web::Error>(bytes), Some(download))),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "export download stopped");
                Some((Err(actix_web::error::ErrorServiceUnavailable("export download stopped")), None))
            }
        }
    });
    Ok(HttpResponse::Ok().content_type("application/x-ndjson").streaming(body))
}

/// A download in progress: the next chunk to read.
struct Download {
    state: web::Data<AppState>,
    actor: Actor,
    org: OrgId,
    export: Uuid,
    table: String,
    next: i32,
}

impl Download {
    async fn chunk(&mut self) -> Result<Option<web::Bytes>, ApiError> {
        let (membership, rows) = tenant::read(
            &self.state.db,
            self.actor,
            Some(self.org),
            "select content from export_chunks \
             where organization_id = $1 and export_id = $2 and table_name = $3 and chunk_no = $4",
            &[self.org.as_uuid(), &self.export, &self.table, &self.next],
        )
        .await?;
        // Without the permission the policy hides the chunks: that is an error, not the end.
        if !membership.is_some_and(|m| m.has(Permission::OrgExport)) {
            return Err(ApiError::forbidden(Permission::OrgExport));
        }
        let Some(row) = rows.first() else { return Ok(None) };
        self.next += 1;
        Ok(Some(web::Bytes::from(row.get::<_, String>(0))))
    }
}
