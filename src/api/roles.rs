//! Custom roles: an organization's own named sets of catalogue permissions, assigned to members
//! as `role: custom` + `custom_role_id`. Managing them needs `roles:manage`, and nobody can put
//! into a role a permission they do not hold (checked here for a 403, and by the policies).

use actix_web::http::header;
use actix_web::{HttpResponse, delete, get, patch, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::audit::{AuditEntry, record};
use super::authz::{authorize, authorize_in, authorize_named_in};
use super::conditional::{Preconditions, etag, tagged};
use super::extract::{ApiJson, Patch, RequestMeta};
use super::orgs::OrgPath;
use super::pagination::{COUNT_FETCH, Key, Keyset, Page, PageQuery, prefix_pattern, total};
use super::{AppState, require_user};
use crate::api::ApiError;
use crate::api::problem::Problem;
use crate::auth::Principal;
use crate::db::{TenantTx, tenant};
use crate::domain::{FieldError, Membership, OrgId, Permission};
use crate::{keyset, sorts};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RolePath {
    /// Organization id.
    pub org_id: Uuid,
    /// Custom role id.
    pub role_id: Uuid,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": "01936f7f-0c1d-7e2f-9a3b-4c5d6e7f8a9b", "name": "support", "description": "Reads members and workspaces", "permissions": ["members:read", "workspaces:read"], "created_at": "2026-11-03T10:00:00Z", "updated_at": "2026-11-03T10:00:00Z"}))]
pub struct RoleResponse {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub permissions: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "support", "description": "Reads members and workspaces", "permissions": ["members:read", "workspaces:read"]}))]
pub struct CreateRoleRequest {
    /// Lowercase letters, digits, `_` and `-`; unique in the organization.
    #[schema(example = "release-manager")]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Catalogue permissions (see `GET /api/v1/permissions`), each one you hold.
    #[schema(example = json!(["workspaces:read", "workflows:publish"]))]
    pub permissions: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"description": null, "permissions": ["members:read"]}))]
pub struct UpdateRoleRequest {
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub name: Patch<String>,
    /// `null` clears it (RFC 7396 merge patch).
    #[serde(default)]
    #[schema(value_type = Option<String>, nullable)]
    pub description: Patch<String>,
    /// Replaces the role's permissions; members holding it get the new set on their next request.
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    pub permissions: Patch<Vec<String>>,
}

fn role_from_row(row: &Row) -> RoleResponse {
    RoleResponse {
        id: row.get("id"),
        name: row.get("name"),
        description: row.get("description"),
        permissions: row.get("permissions"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    }
}

const SELECT_ROLE: &str = "select r.id, r.name, r.description, r.created_at, r.updated_at, r.row_version, \
     array(select p.permission from role_permissions p \
           where p.organization_id = r.organization_id and p.role_id = r.id order by p.permission) as permissions \
     from roles r where r.organization_id = $1 and r.id = $2";

/// Whether the role exists (after a guarded write matched nothing: 412 or 404).
const ROLE_EXISTS: &str = "select 1 from roles where organization_id = $1 and id = $2";

fn valid_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=50).contains(&name.len())
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(FieldError::new("name", "use 1-50 lowercase letters, digits, _ or -").into())
    }
}

fn valid_description(description: Option<&str>) -> Result<(), ApiError> {
    match description {
        Some(d) if d.chars().count() > 500 => {
            Err(FieldError::new("description", "at most 500 characters").into())
        }
        _ => Ok(()),
    }
}

/// Every permission must exist in the catalogue (422) and be held by the caller (403, recorded).
async fn checked_permissions(
    tx: &mut TenantTx,
    principal: &Principal,
    meta: &RequestMeta,
    membership: &Membership,
    requested: &[String],
    action: &'static str,
) -> Result<Vec<String>, ApiError> {
    let mut permissions = requested.to_vec();
    permissions.sort();
    permissions.dedup();
    if permissions.is_empty() {
        return Err(FieldError::new("permissions", "at least one permission is required").into());
    }
    let known = tx.query("select name from permissions where name = any($1)", &[&permissions]).await?;
    let known: Vec<String> = known.iter().map(|r| r.get(0)).collect();
    let unknown: Vec<FieldError> = requested
        .iter()
        .enumerate()
        .filter(|(_, p)| !known.contains(p))
        .map(|(i, p)| FieldError::new(format!("permissions[{i}]"), format!("{p:?} is not in the catalogue")))
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::Validation(unknown));
    }
    for permission in &permissions {
        authorize_named_in(tx, principal, meta, membership, permission, action).await?;
    }
    Ok(permissions)
}

async fn replace_permissions(
    tx: &mut TenantTx,
    org: OrgId,
    role: Uuid,
    permissions: &[String],
) -> Result<(), ApiError> {
    tx.execute(
        "delete from role_permissions where organization_id = $1 and role_id = $2",
        &[org.as_uuid(), &role],
    )
    .await?;
    tx.execute(
        // From the role's own row: on Citus this runs on the organization's shard (an INSERT … SELECT
        // from unnest() alone goes to the shards as COPY, which row-level security refuses).
        "insert into role_permissions (organization_id, role_id, permission) \
         select r.organization_id, r.id, p from roles r cross join unnest($3::text[]) p \
         where r.organization_id = $1 and r.id = $2",
        &[org.as_uuid(), &role, &permissions],
    )
    .await?;
    Ok(())
}

/// The role list's statements: `$1` organization, `$2` limit, `$3` name prefix pattern, then the
/// cursor's keys. Indexes: the primary key `(organization_id, id)` for creation order,
/// `roles_name_key (organization_id, name)` for names, `roles_name_prefix` for the prefix.
macro_rules! roles {
    () => {
        "select r.id, r.name, r.description, r.created_at, r.updated_at, \
         array(select p.permission from role_permissions p \
               where p.organization_id = r.organization_id and p.role_id = r.id order by p.permission) as permissions \
         from roles r where r.organization_id = $1 and ($3::text is null or lower(r.name) like $3)"
    };
}
macro_rules! roles_plain {
    () => {
        "select r.id, r.name, r.description, r.created_at, r.updated_at, \
         array(select p.permission from role_permissions p \
               where p.organization_id = r.organization_id and p.role_id = r.id order by p.permission) as permissions \
         from roles r where r.organization_id = $1 and $3::text is null"
    };
}
static BY_CREATED: Keyset =
    keyset!(1, Id, asc, roles, roles_plain, "", "r.id", "$4", "r.id", "r.id desc", "$2");
static BY_CREATED_DESC: Keyset =
    keyset!(2, Id, desc, roles, roles_plain, "", "r.id", "$4", "r.id", "r.id desc", "$2");
static BY_NAME: Keyset = keyset!(
    3,
    Text,
    asc,
    roles,
    roles_plain,
    "",
    "(r.name, r.id)",
    "($4, $5)",
    "r.name, r.id",
    "r.name desc, r.id desc",
    "$2"
);
static BY_NAME_DESC: Keyset = keyset!(
    4,
    Text,
    desc,
    roles,
    roles_plain,
    "",
    "(r.name, r.id)",
    "($4, $5)",
    "r.name, r.id",
    "r.name desc, r.id desc",
    "$2"
);
const COUNT_ROLES: &str = "select count(*) from (select 1 from roles r where r.organization_id = $1 \
     and ($3::text is null or lower(r.name) like $3) limit $2) c";

sorts! {
    /// The order of a role list.
    RoleSort {
        CreatedAt = "created_at" => BY_CREATED,
        CreatedAtDesc = "-created_at" => BY_CREATED_DESC,
        Name = "name" => BY_NAME,
        NameDesc = "-name" => BY_NAME_DESC,
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RoleFilter {
    /// Only roles whose name starts with this (case-insensitive).
    #[param(example = "support")]
    pub name_prefix: Option<String>,
    /// `created_at` (default, oldest first), `-created_at`, `name` or `-name`.
    #[param(inline)]
    pub sort: Option<RoleSort>,
}

/// List the organization's custom roles (permission `members:read`), filtered by name prefix
/// and sorted by creation or name.
#[utoipa::path(
    tag = "roles",
    params(OrgPath, RoleFilter, PageQuery),
    responses(
        (status = 200, description = "Custom roles", body = Page<RoleResponse>),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission members:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid filter, sort, limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/roles")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn list_roles(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
    filter: web::Query<RoleFilter>,
    query: web::Query<PageQuery>,
) -> Result<web::Json<Page<RoleResponse>>, ApiError> {
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
    authorize(&state, &principal, &meta, &membership, Permission::MembersRead, "role.list").await?;
    let total =
        total(&state.db, &principal, Some(org), &page, COUNT_ROLES, &[org.as_uuid(), &COUNT_FETCH, &prefix])
            .await?;
    let items = rows.iter().map(role_from_row).collect();
    Ok(web::Json(page.page(items, total, |r| match sort {
        RoleSort::Name | RoleSort::NameDesc => Key::Text(r.name.clone(), r.id),
        _ => Key::Id(r.id),
    })))
}

/// Get a custom role (permission `members:read`).
#[utoipa::path(
    tag = "roles",
    params(RolePath),
    responses(
        (status = 200, description = "The role", body = RoleResponse),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission members:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such role", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/roles/{role_id}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn get_role(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<RolePath>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let (membership, rows) = tenant::read(
        &state.db,
        principal.actor(),
        Some(OrgId(path.org_id)),
        SELECT_ROLE,
        &[&path.org_id, &path.role_id],
    )
    .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::MembersRead, "role.get").await?;
    let row = rows.first().ok_or(ApiError::NotFound)?;
    Ok(preconditions.respond(row.get("row_version"), &role_from_row(row)))
}

/// Create a custom role (permission `roles:manage`, and every permission it lists).
#[utoipa::path(
    tag = "roles",
    params(OrgPath),
    request_body = CreateRoleRequest,
    responses(
        (status = 201, description = "Created", body = RoleResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing roles:manage, or a listed permission you do not hold", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Name taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[post("/orgs/{org_id}/roles")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn create_role(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
    body: ApiJson<CreateRoleRequest>,
) -> Result<HttpResponse, ApiError> {
    require_user(&principal)?;
    let org = OrgId(path.org_id);
    valid_name(&body.name)?;
    valid_description(body.description.as_deref())?;
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::RolesManage, "role.create").await?;
    let permissions =
        checked_permissions(&mut tx, &principal, &meta, &membership, &body.permissions, "role.create")
            .await?;
    let id = Uuid::now_v7();
    tx.execute(
        "insert into roles (organization_id, id, name, description) values ($1, $2, $3, $4)",
        &[org.as_uuid(), &id, &body.name, &body.description.clone().unwrap_or_default()],
    )
    .await?;
    replace_permissions(&mut tx, org, id, &permissions).await?;
    let row = tx.query_found(SELECT_ROLE, &[org.as_uuid(), &id]).await?;
    let entry = AuditEntry::allowed("role.create", "role", id, &meta)
        .with_details(serde_json::json!({"name": body.name, "permissions": permissions}));
    record(&mut tx, &principal, entry).await?;
    tx.commit().await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/orgs/{org}/roles/{id}")))
        .insert_header((header::ETAG, etag(row.get("row_version"))))
        .json(role_from_row(&row)))
}

/// Change a custom role (permission `roles:manage`); members holding it are affected at once.
#[utoipa::path(
    tag = "roles",
    params(RolePath),
    request_body = UpdateRoleRequest,
    responses(
        (status = 200, description = "Updated", body = RoleResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing roles:manage, or a listed permission you do not hold", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such role", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Name taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[patch("/orgs/{org_id}/roles/{role_id}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn update_role(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<RolePath>,
    body: ApiJson<UpdateRoleRequest>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    require_user(&principal)?;
    let org = OrgId(path.org_id);
    let body = body.into_inner();
    let name = body.name.required("name")?;
    let description = body.description.or_reset(String::new);
    let requested_permissions = body.permissions.required("permissions")?;
    if let Some(name) = &name {
        valid_name(name)?;
    }
    valid_description(description.as_deref())?;
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::RolesManage, "role.update").await?;
    // Every check before any write: a denial commits only its own audit entry.
    let permissions = match &requested_permissions {
        Some(requested) => Some(
            checked_permissions(&mut tx, &principal, &meta, &membership, requested, "role.update").await?,
        ),
        None => None,
    };
    let changed = tx
        .execute(
            "update roles set name = coalesce($3, name), description = coalesce($4, description) \
             where organization_id = $1 and id = $2 and ($5::bigint[] is null or row_version = any($5))",
            &[org.as_uuid(), &path.role_id, &name, &description, &preconditions.versions()],
        )
        .await?;
    if changed != 1 {
        return Err(preconditions.missed(&mut tx, ROLE_EXISTS, &[org.as_uuid(), &path.role_id]).await);
    }
    if let Some(permissions) = &permissions {
        replace_permissions(&mut tx, org, path.role_id, permissions).await?;
    }
    let row = tx.query_found(SELECT_ROLE, &[org.as_uuid(), &path.role_id]).await?;
    let entry = AuditEntry::allowed("role.update", "role", path.role_id, &meta).with_details(
        serde_json::json!({"name": name, "description": description, "permissions": permissions}),
    );
    record(&mut tx, &principal, entry).await?;
    tx.commit().await?;
    Ok(tagged(HttpResponse::Ok(), row.get("row_version"), &role_from_row(&row)))
}

/// Delete a custom role that no member holds (permission `roles:manage`).
#[utoipa::path(
    tag = "roles",
    params(RolePath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission roles:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such role", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The role is assigned to members", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[delete("/orgs/{org_id}/roles/{role_id}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn delete_role(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<RolePath>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    require_user(&principal)?;
    let org = OrgId(path.org_id);
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::RolesManage, "role.delete").await?;
    let deleted = tx
        .execute(
            "delete from roles where organization_id = $1 and id = $2 \
               and ($3::bigint[] is null or row_version = any($3))",
            &[org.as_uuid(), &path.role_id, &preconditions.versions()],
        )
        .await?;
    if deleted != 1 {
        return Err(preconditions.missed(&mut tx, ROLE_EXISTS, &[org.as_uuid(), &path.role_id]).await);
    }
    record(&mut tx, &principal, AuditEntry::allowed("role.delete", "role", path.role_id, &meta)).await?;
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}
