//! The permission catalogue and what each built-in role grants, read from the database (where
//! they are defined once and enforced by the policies).

use actix_web::{get, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::api::ApiError;
use crate::api::problem::Problem;
use crate::auth::Principal;
use crate::db::tenant;
use crate::domain::Role;

#[derive(Debug, Serialize, ToSchema)]
pub struct PermissionResponse {
    /// e.g. `workspaces:write`.
    pub name: String,
    pub description: String,
    /// The built-in roles that grant it.
    pub granted_to: Vec<Role>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BuiltinRoleResponse {
    pub name: Role,
    pub permissions: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PermissionCatalogue {
    pub permissions: Vec<PermissionResponse>,
    pub builtin_roles: Vec<BuiltinRoleResponse>,
}

/// The permission catalogue and the built-in roles.
#[utoipa::path(
    tag = "roles",
    responses(
        (status = 200, description = "Every permission and what each built-in role grants", body = PermissionCatalogue),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/permissions")]
pub async fn list_permissions(
    state: web::Data<AppState>,
    principal: Principal,
) -> Result<web::Json<PermissionCatalogue>, ApiError> {
    let (_, rows) = tenant::read(
        &state.db,
        principal.actor(),
        None,
        "select p.name, p.description, \
                array(select rp.role from builtin_role_permissions rp where rp.permission = p.name) as roles \
         from permissions p order by p.name",
        &[],
    )
    .await?;
    let mut permissions = Vec::with_capacity(rows.len());
    for row in &rows {
        let roles: Vec<String> = row.get("roles");
        let mut granted_to: Vec<Role> = roles.iter().filter_map(|r| Role::from_db(r)).collect();
        granted_to.sort_by_key(|r| std::cmp::Reverse(r.rank()));
        permissions.push(PermissionResponse {
            name: row.get("name"),
            description: row.get("description"),
            granted_to,
        });
    }
    let builtin_roles = Role::builtin()
        .map(|role| BuiltinRoleResponse {
            name: role,
            permissions: permissions
                .iter()
                .filter(|p| p.granted_to.contains(&role))
                .map(|p| p.name.clone())
                .collect(),
        })
        .collect();
    Ok(web::Json(PermissionCatalogue { permissions, builtin_roles }))
}
