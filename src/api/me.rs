//! The caller: their user record, as provisioned from their token.

use actix_web::{HttpResponse, delete, get, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::RequestMeta;
use super::{AppState, require_user};
use crate::api::ApiError;
use crate::api::problem::Problem;
use crate::auth::Principal;
use crate::db::TenantTx;
use crate::db::tenant;
use crate::domain::UserId;

#[derive(Debug, Serialize, ToSchema)]
pub struct MeResponse {
    pub id: UserId,
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    /// Number of organizations the caller belongs to (list them with `GET /api/v1/orgs`).
    pub organization_count: i64,
}

/// Who am I?
#[utoipa::path(
    tag = "me",
    responses(
        (status = 200, description = "The caller", body = MeResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/me")]
#[tracing::instrument(skip_all)]
pub async fn get_me(
    state: web::Data<AppState>,
    principal: Principal,
) -> Result<web::Json<MeResponse>, ApiError> {
    require_user(&principal)?;
    // The count is uncorrelated: Citus plans no correlated subquery beside a reference table.
    let (_, rows) = tenant::read(
        &state.db,
        principal.actor(),
        None,
        "select u.id, u.issuer, u.subject, u.email, u.display_name, \
         (select count(*) from memberships m where m.user_id = app.current_user_id()) as organization_count \
         from users u where u.id = app.current_user_id()",
        &[],
    )
    .await?;
    let row = rows.first().ok_or(ApiError::Unauthorized)?;
    Ok(web::Json(MeResponse {
        id: UserId(row.get("id")),
        issuer: row.get("issuer"),
        subject: row.get("subject"),
        email: row.get("email"),
        display_name: row.get("display_name"),
        organization_count: row.get("organization_count"),
    }))
}

/// Erase the caller (GDPR): their user record, memberships and sessions, in one transaction.
/// Refused while they are the last owner of an organization: transfer or delete it first.
#[utoipa::path(
    tag = "me",
    responses(
        (status = 204, description = "Erased; every token of this user stops working"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "API keys cannot be erased this way", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The last owner of an organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[delete("/me")]
#[tracing::instrument(skip_all)]
pub async fn delete_me(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
) -> Result<HttpResponse, ApiError> {
    require_user(&principal)?;
    let mut tx = TenantTx::begin_user(&state.db, principal.actor()).await?;
    tx.execute("select app.erase_current_user($1, $2, $3)", &[&meta.ip, &meta.user_agent, &meta.request_id])
        .await?;
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}
