//! Platform administration: a few audited operations across organizations. Who is a platform
//! admin is decided by the database (`platform_admins`, managed with `tenantry admin`), inside
//! the narrow definer functions these handlers call; the app role never bypasses RLS for them.

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::extract::{ApiJson, RequestMeta};
use super::orgs::OrgPath;
use super::pagination::{Key, KeyKind, Keyset, Page, PageQuery};
use super::{AppState, require_user};
use crate::api::ApiError;
use crate::api::problem::Problem;
use crate::auth::Principal;
use crate::db::{TenantTx, check};
use crate::domain::{OrgId, Region};
use crate::sorts;

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminOrganization {
    pub id: OrgId,
    pub name: String,
    pub slug: String,
    pub region: String,
    pub data_mode: String,
    pub suspended_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub members: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"region": "eu"}))]
pub struct MoveRegionRequest {
    pub region: Region,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SystemHealth {
    pub pool_size: usize,
    pub pool_available: usize,
    pub pool_waiting: usize,
    pub migrations_applied: i64,
    pub migrations_expected: i64,
    pub policy_violations: Vec<String>,
    pub region: Region,
}

async fn change(
    state: &AppState,
    principal: &Principal,
    meta: &RequestMeta,
    org: Uuid,
    action: &'static str,
    region: Option<Region>,
) -> Result<HttpResponse, ApiError> {
    require_user(principal)?;
    let mut tx = TenantTx::begin_user(&state.db, principal.actor()).await?;
    let row = tx
        .query_found(
            "select app.admin_change_organization($1, $2, $3, $4, $5, $6)",
            &[&org, &action, &region.map(|r| r.as_str()), &meta.ip, &meta.user_agent, &meta.request_id],
        )
        .await?;
    if !row.get::<_, bool>(0) {
        return Err(ApiError::NotFound);
    }
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Every organization: `app.admin_list_organizations` pages under each sort (see
/// sql/07_platform_admin.sql for its fixed statements and indexes). `$1` limit, `$2` suspended,
/// `$3` region, then the cursor's keys.
static BY_CREATED: Keyset = Keyset {
    code: 1,
    descending: false,
    kind: KeyKind::Id,
    first: "select * from app.admin_list_organizations('created_at', false, null, null, $1::bigint::int, $2, $3)",
    after: "select * from app.admin_list_organizations('created_at', false, null, $4, $1::bigint::int, $2, $3)",
    before: "select * from app.admin_list_organizations('created_at', true, null, $4, $1::bigint::int, $2, $3)",
    plain_first: "select * from app.admin_list_organizations('created_at', false, null, null, $1::bigint::int, $2, $3)",
    plain_after: "select * from app.admin_list_organizations('created_at', false, null, $4, $1::bigint::int, $2, $3)",
    plain_before: "select * from app.admin_list_organizations('created_at', true, null, $4, $1::bigint::int, $2, $3)",
};
static BY_CREATED_DESC: Keyset = Keyset {
    code: 2,
    descending: true,
    kind: KeyKind::Id,
    first: "select * from app.admin_list_organizations('-created_at', false, null, null, $1::bigint::int, $2, $3)",
    after: "select * from app.admin_list_organizations('-created_at', false, null, $4, $1::bigint::int, $2, $3)",
    before: "select * from app.admin_list_organizations('-created_at', true, null, $4, $1::bigint::int, $2, $3)",
    plain_first: "select * from app.admin_list_organizations('-created_at', false, null, null, $1::bigint::int, $2, $3)",
    plain_after: "select * from app.admin_list_organizations('-created_at', false, null, $4, $1::bigint::int, $2, $3)",
    plain_before: "select * from app.admin_list_organizations('-created_at', true, null, $4, $1::bigint::int, $2, $3)",
};
static BY_NAME: Keyset = Keyset {
    code: 3,
    descending: false,
    kind: KeyKind::Text,
    first: "select * from app.admin_list_organizations('name', false, null, null, $1::bigint::int, $2, $3)",
    after: "select * from app.admin_list_organizations('name', false, $4, $5, $1::bigint::int, $2, $3)",
    before: "select * from app.admin_list_organizations('name', true, $4, $5, $1::bigint::int, $2, $3)",
    plain_first: "select * from app.admin_list_organizations('name', false, null, null, $1::bigint::int, $2, $3)",
    plain_after: "select * from app.admin_list_organizations('name', false, $4, $5, $1::bigint::int, $2, $3)",
    plain_before: "select * from app.admin_list_organizations('name', true, $4, $5, $1::bigint::int, $2, $3)",
};
static BY_NAME_DESC: Keyset = Keyset {
    code: 4,
    descending: true,
    kind: KeyKind::Text,
    first: "select * from app.admin_list_organizations('-name', false, null, null, $1::bigint::int, $2, $3)",
    after: "select * from app.admin_list_organizations('-name', false, $4, $5, $1::bigint::int, $2, $3)",
    before: "select * from app.admin_list_organizations('-name', true, $4, $5, $1::bigint::int, $2, $3)",
    plain_first: "select * from app.admin_list_organizations('-name', false, null, null, $1::bigint::int, $2, $3)",
    plain_after: "select * from app.admin_list_organizations('-name', false, $4, $5, $1::bigint::int, $2, $3)",
    plain_before: "select * from app.admin_list_organizations('-name', true, $4, $5, $1::bigint::int, $2, $3)",
};

sorts! {
    /// The order of the platform's organization list.
    AdminOrganizationSort {
        CreatedAt = "created_at" => BY_CREATED,
        CreatedAtDesc = "-created_at" => BY_CREATED_DESC,
        Name = "name" => BY_NAME,
        NameDesc = "-name" => BY_NAME_DESC,
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AdminOrganizationFilter {
    /// Only suspended (true) or active (false) organizations.
    pub suspended: Option<bool>,
    /// Only organizations in this region.
    #[param(inline)]
    pub region: Option<Region>,
    /// `created_at` (default, oldest first), `-created_at`, `name` or `-name`.
    #[param(inline)]
    pub sort: Option<AdminOrganizationSort>,
}

/// List every organization (platform admins only), filtered by state and region. `count` is
/// not offered here: it would count the whole platform.
#[utoipa::path(
    tag = "admin",
    params(AdminOrganizationFilter, PageQuery),
    responses(
        (status = 200, description = "Organizations", body = Page<AdminOrganization>),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a platform admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid filter, sort, limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/admin/organizations")]
pub async fn list_all_organizations(
    state: web::Data<AppState>,
    principal: Principal,
    filter: web::Query<AdminOrganizationFilter>,
    query: web::Query<PageQuery>,
) -> Result<web::Json<Page<AdminOrganization>>, ApiError> {
    require_user(&principal)?;
    let sort = filter.sort.unwrap_or_default();
    let page = query.parse(sort.keyset())?;
    let region = filter.region.map(|r| r.as_str());
    let mut tx = TenantTx::begin_user(&state.db, principal.actor()).await?;
    let rows = tx.query(page.sql(), &page.with_keys(vec![page.fetch(), &filter.suspended, &region])).await?;
    tx.commit().await?;
    let items = rows
        .iter()
        .map(|r| AdminOrganization {
            id: OrgId(r.get("id")),
            name: r.get("name"),
            slug: r.get("slug"),
            region: r.get("region"),
            data_mode: r.get("data_mode"),
            suspended_at: r.get("suspended_at"),
            created_at: r.get("created_at"),
            members: r.get("members"),
        })
        .collect();
    Ok(web::Json(page.page(items, None, |o| match sort {
        AdminOrganizationSort::Name | AdminOrganizationSort::NameDesc => Key::Text(o.name.clone(), o.id.0),
        _ => Key::Id(o.id.0),
    })))
}

/// Suspend an organization: every request to it is refused until reactivated (audited).
#[utoipa::path(
    tag = "admin",
    params(OrgPath),
    responses(
        (status = 204, description = "Suspended"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a platform admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[post("/admin/organizations/{org_id}/suspend")]
pub async fn suspend_organization(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
) -> Result<HttpResponse, ApiError> {
    change(&state, &principal, &meta, path.org_id, "suspend", None).await
}

/// Reactivate a suspended organization (audited).
#[utoipa::path(
    tag = "admin",
    params(OrgPath),
    responses(
        (status = 204, description = "Reactivated"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a platform admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[post("/admin/organizations/{org_id}/reactivate")]
pub async fn reactivate_organization(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
) -> Result<HttpResponse, ApiError> {
    change(&state, &principal, &meta, path.org_id, "reactivate", None).await
}

/// Move an organization to another region (audited); its requests then belong there.
#[utoipa::path(
    tag = "admin",
    params(OrgPath),
    request_body = MoveRegionRequest,
    responses(
        (status = 204, description = "Moved"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a platform admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid region", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[post("/admin/organizations/{org_id}/region")]
pub async fn update_organization_region(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
    body: ApiJson<MoveRegionRequest>,
) -> Result<HttpResponse, ApiError> {
    change(&state, &principal, &meta, path.org_id, "move_region", Some(body.region)).await
}

/// System health for platform admins: pool, migrations, policy check.
#[utoipa::path(
    tag = "admin",
    responses(
        (status = 200, description = "System health", body = SystemHealth),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a platform admin", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/admin/health")]
pub async fn get_system_health(
    state: web::Data<AppState>,
    principal: Principal,
) -> Result<web::Json<SystemHealth>, ApiError> {
    require_user(&principal)?;
    let mut tx = TenantTx::begin_user(&state.db, principal.actor()).await?;
    let is_admin: bool = tx.query_found("select app.is_platform_admin()", &[]).await?.get(0);
    tx.commit().await?;
    if !is_admin {
        return Err(ApiError::Forbidden("platform:admin".into()));
    }
    let readiness = check::readiness(&state.db).await?;
    let status = state.db.status();
    Ok(web::Json(SystemHealth {
        pool_size: status.size,
        pool_available: status.available,
        pool_waiting: status.waiting,
        migrations_applied: readiness.applied_version,
        migrations_expected: readiness.expected_version,
        policy_violations: readiness.violations.iter().map(ToString::to_string).collect(),
        region: state.db.region,
    }))
}
