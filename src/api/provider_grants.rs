//! An organization's consent to sign-in role mappings. The platform's configuration says which
//! identity-provider claims map to which role in which organization; a mapping takes effect only
//! where the organization has granted that provider that role here. Granting needs
//! `members:manage` and every permission of the role (it is a way of handing the role out), and
//! is not open to a member restricted to some workspaces (provider-granted members are not).

use actix_web::http::header;
use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::audit::{AuditEntry, record};
use super::authz::{authorize, authorize_grant, authorize_in, deny_restricted, restriction};
use super::conditional::{Preconditions, etag};
use super::extract::{ApiJson, RequestMeta};
use super::orgs::OrgPath;
use crate::api::ApiError;
use crate::api::problem::Problem;
use crate::auth::Principal;
use crate::db::{TenantTx, tenant};
use crate::domain::{OrgId, Permission, Role, UserId};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ProviderGrantPath {
    /// Organization id.
    pub org_id: Uuid,
    /// The grant's id.
    pub grant_id: Uuid,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"provider": "issuer:https://login.acme.example", "role": "viewer"}))]
pub struct CreateProviderGrantRequest {
    /// A sign-in provider's name (`GET /api/v1/auth/providers`), or `issuer:<iss>` for a trusted
    /// token issuer.
    #[schema(example = "okta")]
    pub provider: String,
    /// The built-in role its mappings may give members here.
    pub role: Role,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderGrantResponse {
    pub id: Uuid,
    pub provider: String,
    pub role: Role,
    pub granted_by: Option<UserId>,
    pub created_at: DateTime<Utc>,
}

fn grant_from_row(row: &Row) -> Result<ProviderGrantResponse, ApiError> {
    Ok(ProviderGrantResponse {
        id: row.get("id"),
        provider: row.get("provider"),
        role: Role::from_db(row.get("role"))
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("unexpected role")))?,
        granted_by: row.get::<_, Option<Uuid>>("granted_by").map(UserId),
        created_at: row.get("created_at"),
    })
}

/// The grant sources this deployment knows: its sign-in providers and trusted issuers.
fn known_provider(state: &AppState, provider: &str) -> bool {
    state.settings.auth.providers.iter().any(|p| p.name == provider)
        || state.settings.auth.trusted_issuers.iter().any(|i| i.grant_source() == provider)
}

/// The roles identity providers' mappings may give in the organization (permission `members:read`).
#[utoipa::path(
    tag = "members",
    params(OrgPath),
    responses(
        (status = 200, description = "The organization's consents", body = Vec<ProviderGrantResponse>),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission members:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/provider-grants")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn list_provider_grants(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
) -> Result<web::Json<Vec<ProviderGrantResponse>>, ApiError> {
    let (membership, rows) = tenant::read(
        &state.db,
        principal.actor(),
        Some(OrgId(path.org_id)),
        // Whole, not paged: at most one grant per configured provider and built-in role
        // (unique (organization_id, provider, role)), so the list is bounded by configuration.
        "select id, provider, role, granted_by, created_at from provider_grants \
         where organization_id = $1 order by provider, role",
        &[&path.org_id],
    )
    .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::MembersRead, "provider_grant.list").await?;
    Ok(web::Json(rows.iter().map(grant_from_row).collect::<Result<_, _>>()?))
}

/// One consent (permission `members:read`).
#[utoipa::path(
    tag = "members",
    params(ProviderGrantPath),
    responses(
        (status = 200, description = "The consent", body = ProviderGrantResponse),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission members:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such grant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/provider-grants/{grant_id}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn get_provider_grant(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<ProviderGrantPath>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let (membership, rows) = tenant::read(
        &state.db,
        principal.actor(),
        Some(OrgId(path.org_id)),
        "select id, provider, role, granted_by, created_at, row_version from provider_grants \
         where organization_id = $1 and id = $2",
        &[&path.org_id, &path.grant_id],
    )
    .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::MembersRead, "provider_grant.get").await?;
    let row = rows.first().ok_or(ApiError::NotFound)?;
    Ok(preconditions.respond(row.get("row_version"), &grant_from_row(row)?))
}

/// Let an identity provider's role mappings give `role` here (permission `members:manage`, and
/// every permission the role grants).
#[utoipa::path(
    tag = "members",
    params(OrgPath),
    request_body = CreateProviderGrantRequest,
    responses(
        (status = 201, description = "Granted", body = ProviderGrantResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission, or restricted to some workspaces", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already granted", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown provider, or not a built-in role", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[post("/orgs/{org_id}/provider-grants")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn create_provider_grant(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
    body: ApiJson<CreateProviderGrantRequest>,
) -> Result<HttpResponse, ApiError> {
    let org = OrgId(path.org_id);
    if !known_provider(&state, &body.provider) {
        return Err(ApiError::invalid_field("provider", "is not a sign-in provider or trusted issuer here"));
    }
    if body.role == Role::Custom {
        return Err(ApiError::invalid_field("role", "identity providers grant built-in roles only"));
    }
    let action = "provider_grant.create";
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::MembersManage, action).await?;
    authorize_grant(&mut tx, &principal, &meta, &membership, (body.role, None), action).await?;
    if restriction(&mut tx).await?.is_some() {
        return deny_restricted(&mut tx, &principal, &meta, action).await;
    }
    let id = Uuid::now_v7();
    let granted_by = principal.as_user().map(|u| u.user_id.0);
    let row = tx
        .query_found(
            "insert into provider_grants (organization_id, id, provider, role, granted_by) \
             values ($1, $2, $3, $4, $5) returning id, provider, role, granted_by, created_at, row_version",
            &[org.as_uuid(), &id, &body.provider, &body.role.as_str(), &granted_by],
        )
        .await?;
    let entry = AuditEntry::allowed(action, "provider_grant", id, &meta)
        .with_details(serde_json::json!({"provider": body.provider, "role": body.role}));
    record(&mut tx, &principal, entry).await?;
    tx.commit().await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/orgs/{org}/provider-grants/{id}")))
        .insert_header((header::ETAG, etag(row.get("row_version"))))
        .json(grant_from_row(&row)?))
}

/// Withdraw a consent: members the provider granted that role lose it at their next sign-in
/// through it (permission `members:manage`, and every permission of the role).
#[utoipa::path(
    tag = "members",
    params(ProviderGrantPath),
    responses(
        (status = 204, description = "Withdrawn"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such grant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[delete("/orgs/{org_id}/provider-grants/{grant_id}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn delete_provider_grant(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<ProviderGrantPath>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let org = OrgId(path.org_id);
    let action = "provider_grant.delete";
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::MembersManage, action).await?;
    let row = tx
        .query_found(
            "select role from provider_grants where organization_id = $1 and id = $2",
            &[org.as_uuid(), &path.grant_id],
        )
        .await?;
    let role = Role::from_db(row.get("role")).ok_or(ApiError::NotFound)?;
    authorize_grant(&mut tx, &principal, &meta, &membership, (role, None), action).await?;
    let deleted = tx
        .execute(
            "delete from provider_grants where organization_id = $1 and id = $2 \
               and ($3::bigint[] is null or row_version = any($3))",
            &[org.as_uuid(), &path.grant_id, &preconditions.versions()],
        )
        .await?;
    if deleted != 1 {
        let exists = "select 1 from provider_grants where organization_id = $1 and id = $2";
        return Err(preconditions.missed(&mut tx, exists, &[org.as_uuid(), &path.grant_id]).await);
    }
    record(&mut tx, &principal, AuditEntry::allowed(action, "provider_grant", path.grant_id, &meta)).await?;
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}
