//! Organization export: all of an organization's data as one NDJSON file per table, produced
//! under the organization's own RLS context (so it cannot contain another tenant's row) and
//! kept for download. Secret hashes (API keys, invitations) are left out. Owners only
//! (`org:export`); the latest export replaces earlier ones.

use actix_web::http::header;
use actix_web::{HttpResponse, get, post, web};
use serde::{Deserialize, Serialize};
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
use crate::db::{TenantTx, tenant};
use crate::domain::{OrgId, Permission};

/// What an export holds: each tenant table, as the statement that reads the organization's rows.
pub const TABLES: &[(&str, &str)] = &[
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
        "select row_to_json(t)::text from (select u.id, u.issuer, u.subject, u.email, u.display_name, u.created_at \
         from users u join memberships m on m.user_id = u.id where m.organization_id = $1 order by u.id) t",
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
];

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

#[derive(Debug, Serialize, ToSchema)]
pub struct ExportResponse {
    pub id: Uuid,
    pub files: Vec<ExportFile>,
}

/// Export all of the organization's data (permission `org:export`).
#[utoipa::path(
    tag = "organizations",
    params(OrgPath),
    responses(
        (status = 201, description = "Exported; download each file", body = ExportResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission org:export", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
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
    tx.execute("delete from exports where organization_id = $1", &[org.as_uuid()]).await?;
    let id = Uuid::now_v7();
    tx.execute(
        "insert into exports (organization_id, id, created_by) values ($1, $2, $3)",
        &[org.as_uuid(), &id, user.user_id.as_uuid()],
    )
    .await?;
    let mut files = Vec::with_capacity(TABLES.len());
    for (table, sql) in TABLES {
        let rows = tx.query(sql, &[org.as_uuid()]).await?;
        let lines: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        let count = i64::try_from(lines.len()).unwrap_or(i64::MAX);
        tx.execute(
            "insert into export_files (organization_id, export_id, table_name, row_count, content) \
             values ($1, $2, $3, $4, $5)",
            &[org.as_uuid(), &id, table, &count, &lines.join("\n")],
        )
        .await?;
        files.push(ExportFile {
            table: (*table).to_owned(),
            rows: count,
            url: format!("/api/v1/orgs/{org}/exports/{id}/{table}"),
        });
    }
    let entry = AuditEntry::allowed("organization.export", "export", id, &meta)
        .with_details(serde_json::json!({"tables": TABLES.len()}));
    record(&mut tx, &principal, entry).await?;
    tx.commit().await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/orgs/{org}/exports/{id}")))
        .json(ExportResponse { id, files }))
}

/// Download one table of an export, as NDJSON (permission `org:export`).
#[utoipa::path(
    tag = "organizations",
    params(ExportFilePath),
    responses(
        (status = 200, description = "One JSON object per line", body = String, content_type = "application/x-ndjson"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission org:export", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such export or table", body = Problem, content_type = "application/problem+json"),
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
        "select content from export_files where organization_id = $1 and export_id = $2 and table_name = $3",
        &[&path.org_id, &path.export_id, &path.table],
    )
    .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::OrgExport, "organization.export_download")
        .await?;
    let content: String = rows.first().ok_or(ApiError::NotFound)?.get(0);
    Ok(HttpResponse::Ok().content_type("application/x-ndjson").body(content))
}
