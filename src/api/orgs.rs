//! Organizations: the tenants. Creating one makes the caller its owner (through the
//! `app.create_organization` definer function: a new tenant has no member yet who could pass a
//! policy). Everything else goes through the policies like any other table.

use actix_web::http::header;
use actix_web::{HttpResponse, delete, get, patch, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::audit::{AuditEntry, record};
use super::authz::{authorize, authorize_in};
use super::conditional::{Preconditions, etag, tagged};
use super::extract::{ApiJson, Patch, RequestMeta};
use super::pagination::{COUNT_FETCH, Key, Keyset, Page, PageQuery, prefix_pattern, total};
use super::{AppState, require_user};
use crate::api::ApiError;
use crate::api::problem::Problem;
use crate::auth::Principal;
use crate::db::{TenantTx, tenant};
use crate::domain::{DataMode, FieldError, Name, OrgId, Permission, Region, Role, Slug};
use crate::{keyset, sorts};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct OrgPath {
    /// Organization id.
    pub org_id: Uuid,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": "01936f7e-5b1a-7c2d-8e3f-4a5b6c7d8e9f", "name": "Acme Corp", "slug": "acme", "region": "us", "data_mode": "metadata_only", "role": "owner", "created_at": "2026-11-02T09:30:00Z", "updated_at": "2026-11-02T09:30:00Z"}))]
pub struct OrganizationResponse {
    pub id: OrgId,
    pub name: String,
    pub slug: String,
    pub region: Region,
    pub data_mode: DataMode,
    /// The caller's role in this organization (null for an API key).
    pub role: Option<Role>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Acme Corp", "slug": "acme", "region": "us", "data_mode": "metadata_only"}))]
pub struct CreateOrganizationRequest {
    #[schema(example = "Acme Inc.")]
    pub name: String,
    #[schema(example = "acme")]
    pub slug: String,
    /// Home region; defaults to the serving instance's, and must be it (else 421).
    pub region: Option<Region>,
    /// Default `metadata_only`: content is never stored unless set to `full`.
    pub data_mode: Option<DataMode>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Acme Corporation"}))]
pub struct UpdateOrganizationRequest {
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub name: Patch<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub slug: Patch<String>,
    #[serde(default)]
    #[schema(value_type = Option<DataMode>)]
    pub data_mode: Patch<DataMode>,
}

fn organization_from_row(row: &Row, role: Option<Role>) -> Result<OrganizationResponse, ApiError> {
    let bad = |what: &str| ApiError::Internal(anyhow::anyhow!("unexpected {what} in organizations row"));
    Ok(OrganizationResponse {
        id: OrgId(row.get("id")),
        name: row.get("name"),
        slug: row.get("slug"),
        region: Region::from_db(row.get("region")).ok_or_else(|| bad("region"))?,
        data_mode: DataMode::from_db(row.get("data_mode")).ok_or_else(|| bad("data_mode"))?,
        role,
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    })
}

/// Create an organization; the caller becomes its owner.
#[utoipa::path(
    tag = "organizations",
    request_body = CreateOrganizationRequest,
    responses(
        (status = 201, description = "Created", body = OrganizationResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Slug taken", body = Problem, content_type = "application/problem+json"),
        (status = 421, description = "The region asked for is served by another instance (`region` names it)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[post("/orgs")]
#[tracing::instrument(skip_all)]
pub async fn create_organization(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    body: ApiJson<CreateOrganizationRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut errors = Vec::new();
    let name = Name::parse("name", &body.name).map_err(|e| errors.push(e)).ok();
    let slug = Slug::parse("slug", &body.slug).map_err(|e| errors.push(e)).ok();
    let (Some(name), Some(slug)) = (name, slug) else { return Err(ApiError::Validation(errors)) };
    let id = OrgId::new();
    // An organization is created in the region of the instance that serves it.
    let region = body.region.unwrap_or(state.db.region);
    if region != state.db.region {
        return Err(ApiError::Misdirected(region.as_str().to_owned()));
    }
    let data_mode = body.data_mode.unwrap_or(DataMode::MetadataOnly);

    require_user(&principal)?;
    let mut tx = TenantTx::begin_user(&state.db, principal.actor()).await?;
    // Creates it, writes its first audit entry (organization.create, with this request's
    // metadata) and reads it back, all as the definer (sql/06_organizations.sql says why).
    let row = tx
        .query_found(
            "select o.id, o.name, o.slug, o.region, o.data_mode, o.created_at, o.updated_at, o.row_version \
             from app.create_organization_recorded($1, $2, $3, $4, $5, $6, $7, $8) o",
            &[
                id.as_uuid(),
                &name.as_str(),
                &slug.as_str(),
                &region.as_str(),
                &data_mode.as_str(),
                &meta.ip,
                &meta.user_agent,
                &meta.request_id,
            ],
        )
        .await?;
    // The new organization is the one in context for the rest of the transaction.
    tx.enter_org(id).await?;
    tx.commit().await?;
    let org = organization_from_row(&row, Some(Role::Owner))?;
    tracing::info!(org.id = %id, "organization created");
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/orgs/{id}")))
        .insert_header((header::ETAG, etag(row.get("row_version"))))
        .json(org))
}

/// The caller's organizations (`app.caller_organizations()`: their memberships, with each
/// organization, read by the definer for the verified user): `$1` limit, `$2` role, `$3` name prefix pattern, then the cursor's keys. Driven
/// by `memberships_user_id_idx (user_id, organization_id)`: a person's organizations are few, and
/// sorted after that lookup.
macro_rules! organizations {
    () => {
        "select o.id, o.name, o.slug, o.region, o.data_mode, o.created_at, o.updated_at, o.role \
         from app.caller_organizations() o \
         where ($2::text is null or o.role = $2) and ($3::text is null or lower(o.name) like $3)"
    };
}
macro_rules! organizations_plain {
    () => {
        "select o.id, o.name, o.slug, o.region, o.data_mode, o.created_at, o.updated_at, o.role \
         from app.caller_organizations() o \
         where $2::text is null and $3::text is null"
    };
}
static BY_CREATED: Keyset =
    keyset!(1, Id, asc, organizations, organizations_plain, "", "o.id", "$4", "o.id", "o.id desc", "$1");
static BY_CREATED_DESC: Keyset =
    keyset!(2, Id, desc, organizations, organizations_plain, "", "o.id", "$4", "o.id", "o.id desc", "$1");
static BY_NAME: Keyset = keyset!(
    3,
    Text,
    asc,
    organizations,
    organizations_plain,
    "",
    "(o.name, o.id)",
    "($4, $5)",
    "o.name, o.id",
    "o.name desc, o.id desc",
    "$1"
);
static BY_NAME_DESC: Keyset = keyset!(
    4,
    Text,
    desc,
    organizations,
    organizations_plain,
    "",
    "(o.name, o.id)",
    "($4, $5)",
    "o.name, o.id",
    "o.name desc, o.id desc",
    "$1"
);
const COUNT_ORGANIZATIONS: &str = concat!("select count(*) from (", organizations!(), " limit $1) c");

sorts! {
    /// The order of an organization list.
    OrganizationSort {
        CreatedAt = "created_at" => BY_CREATED,
        CreatedAtDesc = "-created_at" => BY_CREATED_DESC,
        Name = "name" => BY_NAME,
        NameDesc = "-name" => BY_NAME_DESC,
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OrganizationFilter {
    /// Only organizations where the caller has this role.
    #[param(inline)]
    pub role: Option<Role>,
    /// Only organizations whose name starts with this (case-insensitive).
    #[param(example = "acme")]
    pub name_prefix: Option<String>,
    /// `created_at` (default, oldest first), `-created_at`, `name` or `-name`.
    #[param(inline)]
    pub sort: Option<OrganizationSort>,
}

/// List the organizations the caller belongs to, filtered by the caller's role and name prefix.
#[utoipa::path(
    tag = "organizations",
    params(OrganizationFilter, PageQuery),
    responses(
        (status = 200, description = "The caller's organizations", body = Page<OrganizationResponse>),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "API keys belong to one organization and cannot list them", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid filter, sort, limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs")]
#[tracing::instrument(skip_all)]
pub async fn list_organizations(
    state: web::Data<AppState>,
    principal: Principal,
    filter: web::Query<OrganizationFilter>,
    query: web::Query<PageQuery>,
) -> Result<web::Json<Page<OrganizationResponse>>, ApiError> {
    require_user(&principal)?;
    let sort = filter.sort.unwrap_or_default();
    let page = query.parse(sort.keyset())?.filtered(filter.role.is_some() || filter.name_prefix.is_some());
    let prefix = prefix_pattern("name_prefix", filter.name_prefix.as_deref())?;
    let role = filter.role.as_ref().map(Role::as_str);
    let (_, rows) = page
        .read(&state.db, principal.actor(), None, &page.with_keys(vec![page.fetch(), &role, &prefix]))
        .await?;
    let total =
        total(&state.db, &principal, None, &page, COUNT_ORGANIZATIONS, &[&COUNT_FETCH, &role, &prefix])
            .await?;
    let items = rows
        .iter()
        .map(|row| {
            let role = Role::from_db(row.get("role"))
                .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("unexpected role")))?;
            organization_from_row(row, Some(role))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(web::Json(page.page(items, total, |o| match sort {
        OrganizationSort::Name | OrganizationSort::NameDesc => Key::Text(o.name.clone(), o.id.0),
        _ => Key::Id(o.id.0),
    })))
}

/// Whether the organization exists (after a guarded write matched nothing: 412 or 404).
const ORGANIZATION_EXISTS: &str = "select 1 from organizations where id = $1";

/// Get an organization. Its ETag versions the organization; `role` is the caller's standing.
#[utoipa::path(
    tag = "organizations",
    params(OrgPath),
    responses(
        (status = 200, description = "The organization", body = OrganizationResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn get_organization(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let org = OrgId(path.org_id);
    let (membership, rows) = tenant::read(
        &state.db,
        principal.actor(),
        Some(org),
        "select o.id, o.name, o.slug, o.region, o.data_mode, o.created_at, o.updated_at, o.row_version \
         from organizations o where o.id = $1",
        &[org.as_uuid()],
    )
    .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::OrgRead, "organization.get").await?;
    let row = rows.first().ok_or(ApiError::NotFound)?;
    Ok(preconditions.respond(row.get("row_version"), &organization_from_row(row, membership.role)?))
}

/// Update an organization's name, slug or data mode (permission `org:update`).
#[utoipa::path(
    tag = "organizations",
    params(OrgPath),
    request_body = UpdateOrganizationRequest,
    responses(
        (status = 200, description = "Updated", body = OrganizationResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission org:update", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Slug taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[patch("/orgs/{org_id}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn update_organization(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
    body: ApiJson<UpdateOrganizationRequest>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let org = OrgId(path.org_id);
    let body = body.into_inner();
    let name = body.name.required("name")?.map(|n| Name::parse("name", &n)).transpose()?;
    let slug = body.slug.required("slug")?.map(|s| Slug::parse("slug", &s)).transpose()?;
    let data_mode = body.data_mode.required("data_mode")?;
    if name.is_none() && slug.is_none() && data_mode.is_none() {
        return Err(FieldError::new("body", "at least one of name, slug, data_mode is required").into());
    }
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::OrgUpdate, "organization.update")
        .await?;
    let row = tx
        .query_opt(
            "update organizations o set name = coalesce($2, o.name), slug = coalesce($3, o.slug), \
             data_mode = coalesce($4, o.data_mode) \
             where o.id = $1 and ($5::bigint[] is null or o.row_version = any($5)) \
             returning o.id, o.name, o.slug, o.region, o.data_mode, o.created_at, o.updated_at, o.row_version",
            &[
                org.as_uuid(),
                &name.as_ref().map(Name::as_str),
                &slug.as_ref().map(Slug::as_str),
                &data_mode.map(|m| m.as_str()),
                &preconditions.versions(),
            ],
        )
        .await?;
    let Some(row) = row else {
        return Err(preconditions.missed(&mut tx, ORGANIZATION_EXISTS, &[org.as_uuid()]).await);
    };
    let entry = AuditEntry::allowed("organization.update", "organization", org, &meta).with_details(
        serde_json::json!({"name": name.as_ref().map(Name::as_str), "slug": slug.as_ref().map(Slug::as_str), "data_mode": data_mode}),
    );
    record(&mut tx, &principal, entry).await?;
    tx.commit().await?;
    Ok(tagged(HttpResponse::Ok(), row.get("row_version"), &organization_from_row(&row, membership.role)?))
}

/// Delete an organization and everything in it (permission `org:delete`).
#[utoipa::path(
    tag = "organizations",
    params(OrgPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission org:delete", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[delete("/orgs/{org_id}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn delete_organization(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let org = OrgId(path.org_id);
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::OrgDelete, "organization.delete")
        .await?;
    if preconditions.has_if_match() {
        let current = tx
            .query_opt(
                "select row_version from organizations where id = $1 for no key update",
                &[org.as_uuid()],
            )
            .await?;
        preconditions.check_write(current.map(|r| r.get(0)))?;
    }
    // Recorded first: once the organization is gone, nothing can be written in its name. The
    // log itself outlives it.
    record(&mut tx, &principal, AuditEntry::allowed("organization.delete", "organization", org, &meta))
        .await?;
    if tx.execute("delete from organizations where id = $1", &[org.as_uuid()]).await? != 1 {
        return Err(ApiError::NotFound);
    }
    if state.settings.audit_on_organization_delete == crate::config::AuditRetention::Anonymise {
        tx.query_found("select app.anonymise_organization_audit($1)", &[org.as_uuid()]).await?;
    }
    tx.commit().await?;
    tracing::info!("organization deleted");
    Ok(HttpResponse::NoContent().finish())
}
