//! Workflow runs: start a published version with an input, list, get and cancel. A run is queued
//! here and executed by `tenantry worker`; its status moves queued → running → succeeded,
//! failed or cancelled, and the database refuses any other move. Input, output and error
//! messages are content: they are kept only in organizations whose data mode is `full` (the
//! input of a queued run waits for its worker in a table only that worker can read).

use actix_web::http::header;
use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::audit::{AuditEntry, record};
use super::authz::{authorize, authorize_in};
use super::conditional::{Preconditions, etag, tagged};
use super::extract::{ApiJson, RequestMeta};
use super::pagination::{COUNT_FETCH, Key, Keyset, Page, PageQuery, total};
use super::workflows::WorkflowPath;
use super::workspaces::WorkspacePath;
use crate::api::ApiError;
use crate::api::problem::Problem;
use crate::auth::Principal;
use crate::db::{TenantTx, tenant};
use crate::domain::{FieldError, OrgId, Permission, UserId};
use crate::{keyset, sorts};

/// The largest input accepted, serialized.
pub const MAX_INPUT_BYTES: usize = 256 * 1024;

/// The columns every run query returns (SQL stays `&'static str`).
macro_rules! run_columns {
    () => {
        "id, workspace_id, workflow_id, version, status, input, output, input_bytes, output_bytes, \
         error_code, failed_step, error_message, attempts, created_by, created_by_api_key, created_at, \
         started_at, finished_at, row_version"
    };
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RunPath {
    /// Organization id.
    pub org_id: Uuid,
    /// Workspace id.
    pub workspace_id: Uuid,
    /// Run id.
    pub run_id: Uuid,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"version": 2, "input": {"url": "https://example.com/report"}}))]
pub struct StartRunRequest {
    /// The published version to run (default: the latest).
    pub version: Option<i32>,
    /// A JSON object handed to the steps (default `{}`). Stored only in `full` data mode.
    #[schema(value_type = Object)]
    pub input: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStatus {
    fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    fn from_db(text: &str) -> RunStatus {
        match text {
            "queued" => RunStatus::Queued,
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            _ => RunStatus::Cancelled,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunFilter {
    /// Only runs of this workflow.
    pub workflow_id: Option<Uuid>,
    /// Only runs in this status.
    #[param(inline)]
    pub status: Option<RunStatus>,
    /// Only runs started at or after this time.
    pub created_since: Option<DateTime<Utc>>,
    /// Only runs started before this time.
    pub created_until: Option<DateTime<Utc>>,
    /// `created_at` (default, oldest first) or `-created_at`.
    #[param(inline)]
    pub sort: Option<RunSort>,
}

/// Why a run failed. `message` is content (absent unless the data mode is `full`).
#[derive(Debug, Serialize, ToSchema)]
pub struct RunError {
    /// `step_failed`, `unknown_action`, `timeout`, `lease_expired`, ...
    pub code: String,
    pub step: Option<String>,
    pub message: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": "01936f81-2a3b-7c4d-8e5f-6a7b8c9d0e1f", "workspace_id": "01936f7e-9a4c-7d11-8b22-3c4d5e6f7a8b", "workflow_id": "01936f80-aa11-7b22-8c33-4d5e6f7a8b9c", "version": 2, "status": "succeeded", "input": null, "output": null, "input_bytes": 42, "output_bytes": 1024, "error": null, "attempts": 1, "created_by": "01936f7e-7d2a-7c3b-9e41-2f6a8b9c0d1e", "created_by_api_key": null, "created_at": "2026-11-04T08:00:00Z", "started_at": "2026-11-04T08:00:01Z", "finished_at": "2026-11-04T08:00:03Z"}))]
pub struct RunResponse {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub workflow_id: Uuid,
    pub version: i32,
    pub status: RunStatus,
    /// The input; null unless the organization's data mode is `full`.
    #[schema(value_type = Option<Object>)]
    pub input: Option<Value>,
    /// Each step's output by step id; null unless succeeded in `full` data mode.
    #[schema(value_type = Option<Object>)]
    pub output: Option<Value>,
    pub input_bytes: i32,
    pub output_bytes: Option<i32>,
    pub error: Option<RunError>,
    /// How many times a worker claimed it (more than 1 after a worker was lost).
    pub attempts: i32,
    pub created_by: Option<UserId>,
    pub created_by_api_key: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

fn run_from_row(row: &Row) -> RunResponse {
    RunResponse {
        id: row.get("id"),
        workspace_id: row.get("workspace_id"),
        workflow_id: row.get("workflow_id"),
        version: row.get("version"),
        status: RunStatus::from_db(row.get("status")),
        input: row.get("input"),
        output: row.get("output"),
        input_bytes: row.get("input_bytes"),
        output_bytes: row.get("output_bytes"),
        error: row.get::<_, Option<String>>("error_code").map(|code| RunError {
            code,
            step: row.get("failed_step"),
            message: row.get("error_message"),
        }),
        attempts: row.get("attempts"),
        created_by: row.get::<_, Option<Uuid>>("created_by").map(UserId),
        created_by_api_key: row.get("created_by_api_key"),
        created_at: row.get("created_at"),
        started_at: row.get("started_at"),
        finished_at: row.get("finished_at"),
    }
}

/// Start a run of a published version (permissions `runs:execute` and `workflows:read`). The
/// run is queued; poll it, or list runs, to see it finish.
#[utoipa::path(
    tag = "runs",
    params(WorkflowPath),
    request_body = StartRunRequest,
    responses(
        (status = 202, description = "Queued", body = RunResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission runs:execute or workflows:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such workflow", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Archived, or never published", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No such version, or the input is not a JSON object", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[post("/orgs/{org_id}/workspaces/{workspace_id}/workflows/{workflow_id}/runs")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn start_run(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<WorkflowPath>,
    body: ApiJson<StartRunRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let input = body.input.unwrap_or_else(|| Value::Object(Default::default()));
    if !input.is_object() {
        return Err(FieldError::new("input", "must be a JSON object").into());
    }
    let input_bytes = serde_json::to_vec(&input).map_err(|e| ApiError::Internal(e.into()))?.len();
    if input_bytes > MAX_INPUT_BYTES {
        return Err(FieldError::new("input", "is larger than 256 KiB").into());
    }
    let org = OrgId(path.org_id);
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::RunsExecute, "run.start").await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::WorkflowsRead, "run.start").await?;
    let workflow = tx
        .query_found(
            "select latest_version, archived_at is not null as archived from workflows \
             where organization_id = $1 and workspace_id = $2 and id = $3",
            &[org.as_uuid(), &path.workspace_id, &path.workflow_id],
        )
        .await?;
    if workflow.get::<_, bool>("archived") {
        return Err(ApiError::Conflict {
            code: "workflow_archived",
            detail: "The workflow is archived.".into(),
        });
    }
    let latest: i32 = workflow.get("latest_version");
    if latest == 0 {
        return Err(ApiError::Conflict {
            code: "not_published",
            detail: "The workflow has no published version yet.".into(),
        });
    }
    let version = body.version.unwrap_or(latest);
    if !(1..=latest).contains(&version) {
        return Err(FieldError::new("version", format!("must be a published version, 1 to {latest}")).into());
    }
    let id = Uuid::now_v7();
    let created_by = principal.as_user().map(|u| u.user_id.0);
    let api_key = principal.actor().api_key;
    let input_bytes = i32::try_from(input_bytes).unwrap_or(i32::MAX);
    // The input is kept with the run only in `full` mode; the worker's copy goes either way.
    let row = tx
        .query_found(
            concat!(
                "insert into workflow_runs (organization_id, workspace_id, id, workflow_id, version, input, \
                 input_bytes, created_by, created_by_api_key, traceparent) \
                 select $1, $2, $3, $4, $5, case when o.data_mode = 'full' then $6::jsonb end, $7, $8, $9, $10 \
                 from organizations o where o.id = $1 returning ",
                run_columns!()
            ),
            &[
                org.as_uuid(),
                &path.workspace_id,
                &id,
                &path.workflow_id,
                &version,
                &input,
                &input_bytes,
                &created_by,
                &api_key,
                &crate::telemetry::traceparent(),
            ],
        )
        .await?;
    tx.execute(
        "insert into workflow_run_inputs (organization_id, run_id, input) values ($1, $2, $3)",
        &[org.as_uuid(), &id, &input],
    )
    .await?;
    let entry = AuditEntry::allowed("run.start", "workflow_run", id, &meta).with_details(serde_json::json!({
        "workflow_id": path.workflow_id, "version": version, "input_bytes": input_bytes,
    }));
    record(&mut tx, &principal, entry).await?;
    tx.commit().await?;
    Ok(HttpResponse::Accepted()
        .insert_header((
            header::LOCATION,
            format!("/api/v1/orgs/{org}/workspaces/{}/runs/{id}", path.workspace_id),
        ))
        .insert_header((header::ETAG, etag(row.get("row_version"))))
        .json(run_from_row(&row)))
}

/// The run list's statements: `$1` organization, `$2` workspace, `$3` limit, `$4` workflow,
/// `$5` status, `$6`/`$7` the creation-time range, then the cursor's key. Driven by the
/// workspace, as the workflow list: a missing workspace is a 404. Indexes:
/// `workflow_runs_by_workspace (organization_id, workspace_id, id)`, `workflow_runs_by_status`
/// with a status, `workflow_runs_by_workflow (organization_id, workflow_id, id)` with a workflow.
macro_rules! runs {
    () => {
        concat!(
            "select r.* from workspaces s left join lateral (select ",
            run_columns!(),
            " from workflow_runs x where x.organization_id = s.organization_id and x.workspace_id = s.id \
               and ($4::uuid is null or x.workflow_id = $4) and ($5::text is null or x.status = $5) \
               and ($6::timestamptz is null or x.created_at >= $6) and ($7::timestamptz is null or x.created_at < $7)"
        )
    };
}
macro_rules! runs_plain {
    () => {
        concat!(
            "select r.* from workspaces s left join lateral (select ",
            run_columns!(),
            " from workflow_runs x where x.organization_id = s.organization_id and x.workspace_id = s.id \
               and $4::uuid is null and $5::text is null and $6::timestamptz is null and $7::timestamptz is null"
        )
    };
}
static BY_CREATED: Keyset = keyset!(
    1,
    Id,
    asc,
    runs,
    runs_plain,
    ") r on true where s.organization_id = $1 and s.id = $2",
    "x.id",
    "$8",
    "x.id",
    "x.id desc",
    "$3"
);
static BY_CREATED_DESC: Keyset = keyset!(
    2,
    Id,
    desc,
    runs,
    runs_plain,
    ") r on true where s.organization_id = $1 and s.id = $2",
    "x.id",
    "$8",
    "x.id",
    "x.id desc",
    "$3"
);
const COUNT_RUNS: &str = "select count(*) from (select 1 from workflow_runs x \
     where x.organization_id = $1 and x.workspace_id = $2 \
       and ($4::uuid is null or x.workflow_id = $4) and ($5::text is null or x.status = $5) \
       and ($6::timestamptz is null or x.created_at >= $6) and ($7::timestamptz is null or x.created_at < $7) \
     limit $3) c";

sorts! {
    /// The order of a run list.
    RunSort {
        CreatedAt = "created_at" => BY_CREATED,
        CreatedAtDesc = "-created_at" => BY_CREATED_DESC,
    }
}

/// List a workspace's runs (permission `workflows:read`), filtered by workflow, status and
/// creation time.
#[utoipa::path(
    tag = "runs",
    params(WorkspacePath, RunFilter, PageQuery),
    responses(
        (status = 200, description = "Runs", body = Page<RunResponse>),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission workflows:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such workspace", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid filter, sort, limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/workspaces/{workspace_id}/runs")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn list_runs(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<WorkspacePath>,
    filter: web::Query<RunFilter>,
    query: web::Query<PageQuery>,
) -> Result<web::Json<Page<RunResponse>>, ApiError> {
    let page = query.parse(filter.sort.unwrap_or_default().keyset())?.filtered(
        filter.workflow_id.is_some()
            || filter.status.is_some()
            || filter.created_since.is_some()
            || filter.created_until.is_some(),
    );
    let status = filter.status.map(RunStatus::as_str);
    let org = OrgId(path.org_id);
    let params = vec![
        &path.org_id as &(dyn tokio_postgres::types::ToSql + Sync),
        &path.workspace_id,
        page.fetch(),
        &filter.workflow_id,
        &status,
        &filter.created_since,
        &filter.created_until,
    ];
    let (membership, rows) =
        page.read(&state.db, principal.actor(), Some(org), &page.with_keys(params)).await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::WorkflowsRead, "run.list").await?;
    if rows.is_empty() {
        return Err(ApiError::NotFound);
    }
    let count_params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
        &path.org_id,
        &path.workspace_id,
        &COUNT_FETCH,
        &filter.workflow_id,
        &status,
        &filter.created_since,
        &filter.created_until,
    ];
    let total = total(&state.db, &principal, Some(org), &page, COUNT_RUNS, &count_params).await?;
    let items = rows.iter().filter(|r| r.get::<_, Option<Uuid>>("id").is_some()).map(run_from_row).collect();
    Ok(web::Json(page.page(items, total, |r| Key::Id(r.id))))
}

/// Get a run (permission `workflows:read`).
#[utoipa::path(
    tag = "runs",
    params(RunPath),
    responses(
        (status = 200, description = "The run", body = RunResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission workflows:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/workspaces/{workspace_id}/runs/{run_id}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn get_run(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<RunPath>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let (membership, rows) = tenant::read(
        &state.db,
        principal.actor(),
        Some(OrgId(path.org_id)),
        concat!(
            "select ",
            run_columns!(),
            " from workflow_runs where organization_id = $1 and workspace_id = $2 and id = $3"
        ),
        &[&path.org_id, &path.workspace_id, &path.run_id],
    )
    .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::WorkflowsRead, "run.get").await?;
    let row = rows.first().ok_or(ApiError::NotFound)?;
    Ok(preconditions.respond(row.get("row_version"), &run_from_row(row)))
}

/// Cancel a queued or running run (permission `runs:execute`). A running run's worker notices
/// at its next lease renewal and its result is discarded.
#[utoipa::path(
    tag = "runs",
    params(RunPath),
    responses(
        (status = 200, description = "Cancelled", body = RunResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission runs:execute", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such run", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run has already finished", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[post("/orgs/{org_id}/workspaces/{workspace_id}/runs/{run_id}/cancel")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn cancel_run(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<RunPath>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), OrgId(path.org_id)).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::RunsExecute, "run.cancel").await?;
    // A finished run is refused by the database's state machine (409).
    let key: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
        [&path.org_id, &path.workspace_id, &path.run_id];
    let row = tx
        .query_opt(
            concat!(
                "update workflow_runs set status = 'cancelled' \
                 where organization_id = $1 and workspace_id = $2 and id = $3 \
                   and ($4::bigint[] is null or row_version = any($4)) returning ",
                run_columns!()
            ),
            &[key[0], key[1], key[2], &preconditions.versions()],
        )
        .await?;
    let Some(row) = row else {
        let exists =
            "select 1 from workflow_runs where organization_id = $1 and workspace_id = $2 and id = $3";
        return Err(preconditions.missed(&mut tx, exists, &key).await);
    };
    record(&mut tx, &principal, AuditEntry::allowed("run.cancel", "workflow_run", path.run_id, &meta))
        .await?;
    tx.commit().await?;
    Ok(tagged(HttpResponse::Ok(), row.get("row_version"), &run_from_row(&row)))
}
