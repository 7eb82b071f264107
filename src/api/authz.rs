//! Is this caller allowed? The permission checks every handler makes before it writes (a 403
//! naming the permission, recorded in the organization's audit log), and the checks on the paths
//! by which permissions flow between principals: nobody can give a role, a key scope or workspace
//! access beyond what they hold themselves. The database refuses the same in its policies
//! (`app.can_grant_role`, `app.within_restriction`); these exist so the caller learns why.

use uuid::Uuid;

use super::AppState;
use super::audit::{AuditEntry, record};
use super::extract::RequestMeta;
use crate::api::ApiError;
use crate::auth::Principal;
use crate::db::TenantTx;
use crate::domain::{Membership, Permission, Role};

pub(super) fn denial<'a>(permission: &str, action: &'static str, meta: &'a RequestMeta) -> AuditEntry<'a> {
    AuditEntry {
        action,
        target_type: "permission",
        target_id: Some(permission.to_owned()),
        outcome: "denied",
        details: serde_json::json!({ "missing_permission": permission }),
        meta,
    }
}

/// The permission check of the handlers that write: allowed, or a 403 recorded in the
/// organization's log in the handler's own transaction, which is then committed. So every check
/// must come before the handler's first write. (Holding one connection while asking for another
/// could starve the pool under load.)
pub async fn authorize_in(
    tx: &mut TenantTx,
    principal: &Principal,
    meta: &RequestMeta,
    membership: &Membership,
    permission: Permission,
    action: &'static str,
) -> Result<(), ApiError> {
    authorize_named_in(tx, principal, meta, membership, permission.as_str(), action).await
}

/// As `authorize_in`, for a permission named by data (e.g. one a custom role grants).
pub async fn authorize_named_in(
    tx: &mut TenantTx,
    principal: &Principal,
    meta: &RequestMeta,
    membership: &Membership,
    permission: &str,
    action: &'static str,
) -> Result<(), ApiError> {
    if membership.permissions.iter().any(|p| p == permission) {
        return Ok(());
    }
    record_denial(tx, principal, denial(permission, action, meta)).await;
    Err(ApiError::Forbidden(permission.to_owned()))
}

/// Appends a denial to the organization's log in the handler's transaction and commits it (the
/// handler then answers 403; nothing else of its transaction has been written yet).
async fn record_denial(tx: &mut TenantTx, principal: &Principal, entry: AuditEntry<'_>) {
    let recorded = async {
        record(tx, principal, entry).await?;
        tx.commit_in_place().await
    }
    .await;
    if let Err(e) = recorded {
        tracing::error!(error = %e, "recording a denied attempt failed");
    }
}

/// The permission check of the pipelined reads (whose connection is already back in the pool):
/// allowed, or a 403 recorded in a transaction of its own.
pub async fn authorize(
    state: &AppState,
    principal: &Principal,
    meta: &RequestMeta,
    membership: &Membership,
    permission: Permission,
    action: &'static str,
) -> Result<(), ApiError> {
    if membership.has(permission) {
        return Ok(());
    }
    let recorded = async {
        let (mut tx, _) = TenantTx::begin_org(&state.db, principal.actor(), membership.org_id).await?;
        record(&mut tx, principal, denial(permission.as_str(), action, meta)).await?;
        tx.commit().await
    }
    .await;
    if let Err(e) = recorded {
        tracing::error!(error = %e, "recording a denied attempt failed");
    }
    Err(ApiError::forbidden(permission))
}

/// Giving `role` (a custom one: `custom_role`) needs every permission it grants; the first one
/// the caller lacks is the 403 (recorded). Acting on a member who holds the role needs the same.
pub async fn authorize_grant(
    tx: &mut TenantTx,
    principal: &Principal,
    meta: &RequestMeta,
    membership: &Membership,
    (role, custom_role): (Role, Option<Uuid>),
    action: &'static str,
) -> Result<(), ApiError> {
    let mut grants: Vec<String> =
        tx.query_found("select app.role_grants($1, $2)", &[&role.as_str(), &custom_role]).await?.get(0);
    // What sets owners apart is named first: an admin lacking it learns the real reason.
    grants.sort_by_key(|p| p != Permission::OwnersManage.as_str());
    for permission in grants {
        authorize_named_in(tx, principal, meta, membership, &permission, action).await?;
    }
    Ok(())
}

/// The caller's workspace restriction here: `None` when unrestricted, else the workspaces it
/// may work in (possibly none).
pub async fn restriction(tx: &mut TenantTx) -> Result<Option<Vec<Uuid>>, ApiError> {
    let row = tx
        .query_found("select app.workspace_restricted(), array(select app.allowed_workspace_ids())", &[])
        .await?;
    Ok(row.get::<_, bool>(0).then(|| row.get(1)))
}

/// A restricted caller can hand out only workspaces within its own: `requested` (or, when none are
/// named, its own set) if that holds, else a 403 `workspace_restricted` (recorded). An
/// unrestricted caller gets back what it asked for (`None`: unrestricted).
pub async fn authorize_workspaces(
    tx: &mut TenantTx,
    principal: &Principal,
    meta: &RequestMeta,
    requested: Option<Vec<Uuid>>,
    action: &'static str,
) -> Result<Option<Vec<Uuid>>, ApiError> {
    let Some(own) = restriction(tx).await? else { return Ok(requested) };
    let granted = match requested {
        None => own.clone(),
        Some(ids) => ids,
    };
    if !granted.is_empty() && granted.iter().all(|w| own.contains(w)) {
        return Ok(Some(granted));
    }
    deny_restricted(tx, principal, meta, action).await
}

/// The 403 of a restricted caller reaching beyond its workspaces, recorded like any denial.
pub async fn deny_restricted<T>(
    tx: &mut TenantTx,
    principal: &Principal,
    meta: &RequestMeta,
    action: &'static str,
) -> Result<T, ApiError> {
    let entry = AuditEntry {
        action,
        target_type: "permission",
        target_id: Some("workspace_restriction".into()),
        outcome: "denied",
        details: serde_json::json!({ "reason": "beyond the caller's workspace restriction" }),
        meta,
    };
    record_denial(tx, principal, entry).await;
    Err(ApiError::WorkspaceRestricted)
}
