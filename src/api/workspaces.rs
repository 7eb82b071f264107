//! Workspaces inside an organization. Reading needs `workspaces:read`, creating and renaming
//! `workspaces:write`, deleting `workspaces:delete`; the write policies check the same.

use actix_web::http::header;
use actix_web::{HttpResponse, delete, get, patch, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::audit::{AuditEntry, record};
use super::authz::{authorize, authorize_in};
use super::conditional::{Preconditions, etag, tagged};
use super::extract::{ApiJson, RequestMeta};
use super::orgs::OrgPath;
use super::pagination::{COUNT_FETCH, Key, Keyset, Page, PageQuery, prefix_pattern, total};
use crate::api::ApiError;
use crate::api::problem::Problem;
use crate::auth::Principal;
use crate::db::{TenantTx, tenant};
use crate::domain::{Name, OrgId, Permission, Region, WorkspaceId};
use crate::{keyset, sorts};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct WorkspacePath {
    /// Organization id.
    pub org_id: Uuid,
    /// Workspace id.
    pub workspace_id: Uuid,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": "01936f7e-9a4c-7d11-8b22-3c4d5e6f7a8b", "organization_id": "01936f7e-5b1a-7c2d-8e3f-4a5b6c7d8e9f", "name": "Production", "region": "us", "created_at": "2026-11-02T09:31:00Z", "updated_at": "2026-11-02T09:31:00Z"}))]
pub struct WorkspaceResponse {
    pub id: WorkspaceId,
    pub organization_id: OrgId,
    pub name: String,
    pub region: Region,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Production", "region": "us"}))]
pub struct CreateWorkspaceRequest {
    #[schema(example = "Production")]
    pub name: String,
    /// Defaults to the organization's region.
    pub region: Option<Region>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Production EU"}))]
pub struct UpdateWorkspaceRequest {
    pub name: String,
}

fn workspace_from_row(row: &Row) -> Result<WorkspaceResponse, ApiError> {
    Ok(WorkspaceResponse {
        id: WorkspaceId(row.get("id")),
        organization_id: OrgId(row.get("organization_id")),
        name: row.get("name"),
        region: Region::from_db(row.get("region"))
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("unexpected region")))?,
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    })
}

/// The workspace list's statements: `$1` organization, `$2` limit, `$3` name prefix pattern,
/// then the cursor's keys. Indexes: the primary key `(organization_id, id)` for creation order,
/// `workspaces_name_key (organization_id, name)` for names, `workspaces_name_prefix` for the prefix.
macro_rules! workspaces {
    () => {
        "select organization_id, id, name, region, created_at, updated_at from workspaces \
         where organization_id = $1 and ($3::text is null or lower(name) like $3)"
    };
}
macro_rules! workspaces_plain {
    () => {
        "select organization_id, id, name, region, created_at, updated_at from workspaces \
         where organization_id = $1 and $3::text is null"
    };
}
static BY_CREATED: Keyset =
    keyset!(1, Id, asc, workspaces, workspaces_plain, "", "id", "$4", "id", "id desc", "$2");
static BY_CREATED_DESC: Keyset =
    keyset!(2, Id, desc, workspaces, workspaces_plain, "", "id", "$4", "id", "id desc", "$2");
static BY_NAME: Keyset = keyset!(
    3,
    Text,
    asc,
    workspaces,
    workspaces_plain,
    "",
    "(name, id)",
    "($4, $5)",
    "name, id",
    "name desc, id desc",
    "$2"
);
static BY_NAME_DESC: Keyset = keyset!(
    4,
    Text,
    desc,
    workspaces,
    workspaces_plain,
    "",
    "(name, id)",
    "($4, $5)",
    "name, id",
    "name desc, id desc",
    "$2"
);
const COUNT_WORKSPACES: &str = concat!("select count(*) from (", workspaces!(), " limit $2) c");

sorts! {
    /// The order of a workspace list.
    WorkspaceSort {
        CreatedAt = "created_at" => BY_CREATED,
        CreatedAtDesc = "-created_at" => BY_CREATED_DESC,
        Name = "name" => BY_NAME,
        NameDesc = "-name" => BY_NAME_DESC,
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WorkspaceFilter {
    /// Only workspaces whose name starts with this (case-insensitive).
    #[param(example = "prod")]
    pub name_prefix: Option<String>,
    /// `created_at` (default, oldest first), `-created_at`, `name` or `-name`.
    #[param(inline)]
    pub sort: Option<WorkspaceSort>,
}

/// List workspaces, filtered by name prefix and sorted by creation or name.
#[utoipa::path(
    tag = "workspaces",
    params(OrgPath, WorkspaceFilter, PageQuery),
    responses(
        (status = 200, description = "Workspaces", body = Page<WorkspaceResponse>),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid filter, sort, limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/workspaces")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn list_workspaces(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
    filter: web::Query<WorkspaceFilter>,
    query: web::Query<PageQuery>,
) -> Result<web::Json<Page<WorkspaceResponse>>, ApiError> {
    let sort = filter.sort.unwrap_or_default();
    let page = query.parse(sort.keyset())?.filtered(filter.name_prefix.is_some());
    let prefix = prefix_pattern("name_prefix", filter.name_prefix.as_deref())?;
    let org = OrgId(path.org_id);
    let (membership, rows) = page
        .read(
            &state.db,
            principal.actor(),
            Some(org),
            &page.with_keys(vec![org.as_uuid(), page.fetch(), &prefix]),
        )
        .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::WorkspacesRead, "workspace.list").await?;
    let total = total(
        &state.db,
        &principal,
        Some(org),
        &page,
        COUNT_WORKSPACES,
        &[org.as_uuid(), &COUNT_FETCH, &prefix],
    )
    .await?;
    let items = rows.iter().map(workspace_from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(web::Json(page.page(items, total, |w| match sort {
        WorkspaceSort::Name | WorkspaceSort::NameDesc => Key::Text(w.name.clone(), w.id.0),
        _ => Key::Id(w.id.0),
    })))
}

/// Create a workspace (permission `workspaces:write`).
#[utoipa::path(
    tag = "workspaces",
    params(OrgPath),
    request_body = CreateWorkspaceRequest,
    responses(
        (status = 201, description = "Created", body = WorkspaceResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission workspaces:write", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Name taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[post("/orgs/{org_id}/workspaces")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn create_workspace(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
    body: ApiJson<CreateWorkspaceRequest>,
) -> Result<HttpResponse, ApiError> {
    let org = OrgId(path.org_id);
    let name = Name::parse("name", &body.name)?;
    let id = WorkspaceId::new();
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::WorkspacesWrite, "workspace.create")
        .await?;
    let row = tx
        .query_found(
            "insert into workspaces (organization_id, id, name, region) values ($1, $2, $3, $4) \
             returning organization_id, id, name, region, created_at, updated_at, row_version",
            &[org.as_uuid(), id.as_uuid(), &name.as_str(), &body.region.map(|r| r.as_str())],
        )
        .await?;
    record(
        &mut tx,
        &principal,
        AuditEntry::allowed("workspace.create", "workspace", id, &meta)
            .with_details(json!({"name": name.as_str()})),
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/orgs/{org}/workspaces/{id}")))
        .insert_header((header::ETAG, etag(row.get("row_version"))))
        .json(workspace_from_row(&row)?))
}

/// Whether the workspace exists (after a guarded write matched nothing: 412 or 404).
const WORKSPACE_EXISTS: &str = "select 1 from workspaces where organization_id = $1 and id = $2";

/// Get a workspace.
#[utoipa::path(
    tag = "workspaces",
    params(WorkspacePath),
    responses(
        (status = 200, description = "The workspace", body = WorkspaceResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such workspace", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/workspaces/{workspace_id}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn get_workspace(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<WorkspacePath>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let (membership, rows) = tenant::read(
        &state.db,
        principal.actor(),
        Some(OrgId(path.org_id)),
        "select organization_id, id, name, region, created_at, updated_at, row_version from workspaces \
         where organization_id = $1 and id = $2",
        &[&path.org_id, &path.workspace_id],
    )
    .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::WorkspacesRead, "workspace.get").await?;
    let row = rows.first().ok_or(ApiError::NotFound)?;
    Ok(preconditions.respond(row.get("row_version"), &workspace_from_row(row)?))
}

/// Rename a workspace (permission `workspaces:write`).
#[utoipa::path(
    tag = "workspaces",
    params(WorkspacePath),
    request_body = UpdateWorkspaceRequest,
    responses(
        (status = 200, description = "Updated", body = WorkspaceResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission workspaces:write", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such workspace", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Name taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[patch("/orgs/{org_id}/workspaces/{workspace_id}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn update_workspace(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<WorkspacePath>,
    body: ApiJson<UpdateWorkspaceRequest>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let name = Name::parse("name", &body.name)?;
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), OrgId(path.org_id)).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::WorkspacesWrite, "workspace.update")
        .await?;
    let row = tx
        .query_opt(
            "update workspaces set name = $3 where organization_id = $1 and id = $2 \
               and ($4::bigint[] is null or row_version = any($4)) \
             returning organization_id, id, name, region, created_at, updated_at, row_version",
            &[&path.org_id, &path.workspace_id, &name.as_str(), &preconditions.versions()],
        )
        .await?;
    let Some(row) = row else {
        return Err(preconditions
            .missed(&mut tx, WORKSPACE_EXISTS, &[&path.org_id, &path.workspace_id])
            .await);
    };
    let entry = AuditEntry::allowed("workspace.update", "workspace", path.workspace_id, &meta)
        .with_details(json!({"name": name.as_str()}));
    record(&mut tx, &principal, entry).await?;
    tx.commit().await?;
    Ok(tagged(HttpResponse::Ok(), row.get("row_version"), &workspace_from_row(&row)?))
}

/// Delete a workspace (permission `workspaces:delete`).
#[utoipa::path(
    tag = "workspaces",
    params(WorkspacePath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission workspaces:delete", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such workspace", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[delete("/orgs/{org_id}/workspaces/{workspace_id}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn delete_workspace(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<WorkspacePath>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), OrgId(path.org_id)).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::WorkspacesDelete, "workspace.delete")
        .await?;
    let deleted = tx
        .execute(
            "delete from workspaces where organization_id = $1 and id = $2 \
               and ($3::bigint[] is null or row_version = any($3))",
            &[&path.org_id, &path.workspace_id, &preconditions.versions()],
        )
        .await?;
    if deleted != 1 {
        return Err(preconditions
            .missed(&mut tx, WORKSPACE_EXISTS, &[&path.org_id, &path.workspace_id])
            .await);
    }
    record(
        &mut tx,
        &principal,
        AuditEntry::allowed("workspace.delete", "workspace", path.workspace_id, &meta),
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}
