//! Feature flags: the platform defines them (platform admins), each organization configures its
//! own rollout, and `POST /orgs/{org_id}/flags/evaluate` answers every flag for the caller with
//! the rule that decided it. Evaluation is the one read served from memory: the organization's
//! rules and the caller's standing come from caches kept current by LISTEN/NOTIFY
//! (`crate::flags`), so a warm evaluation makes no database round trip.

use std::sync::Arc;

use actix_web::{HttpResponse, delete, get, post, put, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::audit::{AuditEntry, record};
use super::authz::{authorize, authorize_in};
use super::conditional::{Preconditions, tagged};
use super::extract::{ApiJson, RequestMeta};
use super::orgs::OrgPath;
use super::{AppState, require_user};
use crate::api::ApiError;
use crate::api::problem::Problem;
use crate::auth::Principal;
use crate::db::{TenantTx, tenant};
use crate::domain::{FieldError, OrgId, Permission};
use crate::flags::{FlagRule, RULES_SQL, Reason, evaluate, rule_from_row};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct FlagPath {
    /// Organization id.
    pub org_id: Uuid,
    /// The flag's key, e.g. `new-editor`.
    pub flag_key: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct PlatformFlagPath {
    /// The flag's key, e.g. `new-editor`.
    pub flag_key: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct FlagTargetPath {
    /// The flag's key, e.g. `new-editor`.
    pub flag_key: String,
    /// Organization id.
    pub org_id: Uuid,
}

/// A flag key as the platform defines them: 1-64 of a-z, 0-9, `_`, `.`, `-`, starting with a
/// letter. Anything else cannot exist, so it is a 404.
fn flag_key(key: &str) -> Result<&str, ApiError> {
    let ok = (1..=64).contains(&key.len())
        && key.starts_with(|c: char| c.is_ascii_lowercase())
        && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if ok { Ok(key) } else { Err(ApiError::NotFound) }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FlagValue {
    pub key: String,
    pub value: bool,
    pub reason: Reason,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EvaluateResponse {
    /// Every platform flag, by key.
    pub flags: Vec<FlagValue>,
}

/// An organization's configuration of a flag.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgFlagConfig {
    /// On or off for the whole organization; null leaves it to the percentage, targeting or
    /// default.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// 0 to 100: the share of users who get it (sticky per user).
    #[serde(default)]
    pub rollout_percentage: Option<i32>,
    /// Users who always get it (unless killed).
    #[serde(default)]
    pub allow_users: Vec<Uuid>,
    /// Users who never get it; beats the allow list.
    #[serde(default)]
    pub deny_users: Vec<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrgFlagResponse {
    pub key: String,
    pub description: String,
    pub default_enabled: bool,
    pub kill_switch: bool,
    /// The platform's targeting of this organization, if any.
    pub targeted: Option<bool>,
    /// This organization's configuration, if any.
    pub config: Option<OrgFlagConfig>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"description": "The new editor", "default_enabled": false, "kill_switch": false}))]
pub struct PutPlatformFlagRequest {
    pub description: Option<String>,
    pub default_enabled: Option<bool>,
    /// On: the flag is off for everyone, whatever any rule says.
    pub kill_switch: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PlatformFlag {
    pub key: String,
    pub description: String,
    pub default_enabled: bool,
    pub kill_switch: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"enabled": true}))]
pub struct TargetFlagRequest {
    pub enabled: bool,
}

/// Every flag's value for the caller, with the rule that decided it (permission `flags:read`).
#[utoipa::path(
    tag = "flags",
    params(OrgPath),
    responses(
        (status = 200, description = "Every flag's value", body = EvaluateResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission flags:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[post("/orgs/{org_id}/flags/evaluate")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn evaluate_flags(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
) -> Result<web::Json<EvaluateResponse>, ApiError> {
    let org = OrgId(path.org_id);
    let actor = principal.actor();
    let (flags_epoch, standing_epoch) = (state.flags.epoch(), state.standing.epoch());
    let (membership, rules) = match (state.standing.get(actor, org), state.flags.get(org)) {
        // Both known: no database round trip at all.
        (Some(membership), Some(rules)) => (membership, rules),
        _ => {
            let (membership, rows) =
                tenant::read(&state.db, actor, Some(org), RULES_SQL, &[org.as_uuid()]).await?;
            let membership = membership.ok_or(ApiError::NotFound)?;
            // Checked before caching the rules: read without flags:read they would be incomplete.
            authorize(&state, &principal, &meta, &membership, Permission::FlagsRead, "flag.evaluate").await?;
            let rules: Arc<Vec<FlagRule>> = Arc::new(rows.iter().map(rule_from_row).collect());
            state.flags.insert(org, rules.clone(), flags_epoch);
            state.standing.insert(actor, org, membership.clone(), standing_epoch);
            (membership, rules)
        }
    };
    authorize(&state, &principal, &meta, &membership, Permission::FlagsRead, "flag.evaluate").await?;
    crate::request::note_admitted(org, actor.api_key); // counted even when served from memory
    let user = principal.as_user().map(|u| u.user_id.0);
    let subject = user.or(principal.actor().api_key).unwrap_or_default();
    let flags = rules
        .iter()
        .map(|rule| {
            let (value, reason) = evaluate(rule, user, subject);
            FlagValue { key: rule.key.clone(), value, reason }
        })
        .collect();
    Ok(web::Json(EvaluateResponse { flags }))
}

/// Every flag with this organization's configuration and targeting (permission `flags:read`).
#[utoipa::path(
    tag = "flags",
    params(OrgPath),
    responses(
        (status = 200, description = "Flags", body = Vec<OrgFlagResponse>),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission flags:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/flags")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn list_flags(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
) -> Result<web::Json<Vec<OrgFlagResponse>>, ApiError> {
    let (membership, rows) = tenant::read(
        &state.db,
        principal.actor(),
        Some(OrgId(path.org_id)),
        "select f.key, f.description, f.default_enabled, f.kill_switch, t.enabled as targeted, \
           c.flag_key is not null as configured, c.enabled, c.rollout_percentage, c.allow_users, c.deny_users \
         from feature_flags f \
         left join organization_flags c on c.organization_id = $1 and c.flag_key = f.key \
         left join feature_flag_targets t on t.organization_id = $1 and t.flag_key = f.key \
         order by f.key",
        &[&path.org_id],
    )
    .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::FlagsRead, "flag.list").await?;
    Ok(web::Json(
        rows.iter()
            .map(|r| OrgFlagResponse {
                key: r.get("key"),
                description: r.get("description"),
                default_enabled: r.get("default_enabled"),
                kill_switch: r.get("kill_switch"),
                targeted: r.get("targeted"),
                config: r.get::<_, bool>("configured").then(|| OrgFlagConfig {
                    enabled: r.get("enabled"),
                    rollout_percentage: r.get("rollout_percentage"),
                    allow_users: r.get("allow_users"),
                    deny_users: r.get("deny_users"),
                }),
            })
            .collect(),
    ))
}

fn validate_config(config: &OrgFlagConfig) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    if config.rollout_percentage.is_some_and(|p| !(0..=100).contains(&p)) {
        errors.push(FieldError::new("rollout_percentage", "must be between 0 and 100"));
    }
    for (field, list) in [("allow_users", &config.allow_users), ("deny_users", &config.deny_users)] {
        if list.len() > 1000 {
            errors.push(FieldError::new(field, "holds at most 1000 users"));
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(ApiError::Validation(errors)) }
}

/// Configure a flag for this organization (permission `flags:write`; audited).
#[utoipa::path(
    tag = "flags",
    params(FlagPath),
    request_body = OrgFlagConfig,
    responses(
        (status = 200, description = "Configured", body = OrgFlagConfig),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission flags:write", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such flag", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid configuration", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[put("/orgs/{org_id}/flags/{flag_key}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn put_flag_config(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<FlagPath>,
    body: ApiJson<OrgFlagConfig>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let key = flag_key(&path.flag_key)?;
    let config = body.into_inner();
    validate_config(&config)?;
    let org = OrgId(path.org_id);
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::FlagsWrite, "flag.configure").await?;
    tx.query_found("select 1 from feature_flags where key = $1", &[&key]).await?;
    if preconditions.is_conditional() {
        // Locked: the setting cannot change or vanish between this check and the write.
        let current = tx
            .query_opt(
                "select row_version from organization_flags where organization_id = $1 and flag_key = $2 \
                 for no key update",
                &[org.as_uuid(), &key],
            )
            .await?;
        preconditions.check_upsert(current.map(|r| r.get(0)))?;
    }
    // `where not $8`: with If-None-Match, a setting created concurrently is not replaced (412).
    let version: i64 = tx
        .query_opt(
        "insert into organization_flags (organization_id, flag_key, enabled, rollout_percentage, allow_users, \
           deny_users, updated_by) values ($1, $2, $3, $4, $5, $6, $7) \
         on conflict (organization_id, flag_key) do update set enabled = excluded.enabled, \
           rollout_percentage = excluded.rollout_percentage, allow_users = excluded.allow_users, \
           deny_users = excluded.deny_users, updated_by = excluded.updated_by \
         where not $8 \
         returning row_version",
        &[
            org.as_uuid(),
            &key,
            &config.enabled,
            &config.rollout_percentage,
            &config.allow_users,
            &config.deny_users,
            &principal.as_user().map(|u| u.user_id.0),
            &preconditions.create_only(),
        ],
    )
    .await?
    .ok_or(ApiError::PreconditionFailed)?
    .get(0);
    let entry =
        AuditEntry::allowed("flag.configure", "feature_flag", key, &meta).with_details(serde_json::json!({
            "enabled": config.enabled, "rollout_percentage": config.rollout_percentage,
            "allow_users": config.allow_users.len(), "deny_users": config.deny_users.len(),
        }));
    record(&mut tx, &principal, entry).await?;
    tx.commit().await?;
    // This server answers the change at once; the others on the NOTIFY.
    state.flags.invalidate(Some(org));
    Ok(tagged(HttpResponse::Ok(), version, &config))
}

/// Remove this organization's configuration of a flag (permission `flags:write`; audited).
#[utoipa::path(
    tag = "flags",
    params(FlagPath),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission flags:write", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not configured", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[delete("/orgs/{org_id}/flags/{flag_key}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn delete_flag_config(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<FlagPath>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let key = flag_key(&path.flag_key)?;
    let org = OrgId(path.org_id);
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::FlagsWrite, "flag.reset").await?;
    let deleted = tx
        .execute(
            "delete from organization_flags where organization_id = $1 and flag_key = $2 \
               and ($3::bigint[] is null or row_version = any($3))",
            &[org.as_uuid(), &key, &preconditions.versions()],
        )
        .await?;
    if deleted != 1 {
        let exists = "select 1 from organization_flags where organization_id = $1 and flag_key = $2";
        return Err(preconditions.missed(&mut tx, exists, &[org.as_uuid(), &key]).await);
    }
    record(&mut tx, &principal, AuditEntry::allowed("flag.reset", "feature_flag", key, &meta)).await?;
    tx.commit().await?;
    state.flags.invalidate(Some(org));
    Ok(HttpResponse::NoContent().finish())
}

/// Every platform flag (platform admins only).
#[utoipa::path(
    tag = "admin",
    responses(
        (status = 200, description = "Flags", body = Vec<PlatformFlag>),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a platform admin", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/admin/flags")]
pub async fn list_platform_flags(
    state: web::Data<AppState>,
    principal: Principal,
) -> Result<web::Json<Vec<PlatformFlag>>, ApiError> {
    require_user(&principal)?;
    let mut tx = TenantTx::begin_user(&state.db, principal.actor()).await?;
    if !tx.query_found("select app.is_platform_admin()", &[]).await?.get::<_, bool>(0) {
        return Err(crate::db::DbError::PermissionDenied.into());
    }
    let rows = tx
        .query(
            "select key, description, default_enabled, kill_switch, created_at, updated_at from feature_flags order by key",
            &[],
        )
        .await?;
    tx.commit().await?;
    Ok(web::Json(
        rows.iter()
            .map(|r| PlatformFlag {
                key: r.get("key"),
                description: r.get("description"),
                default_enabled: r.get("default_enabled"),
                kill_switch: r.get("kill_switch"),
                created_at: r.get("created_at"),
                updated_at: r.get("updated_at"),
            })
            .collect(),
    ))
}

fn platform_key(key: &str) -> Result<&str, ApiError> {
    flag_key(key).map_err(|_| {
        ApiError::invalid_field("flag_key", "use 1-64 of a-z, 0-9, _, . or -, starting with a letter")
    })
}

/// Create or change a platform flag, e.g. pull its kill switch (platform admins only; audited).
#[utoipa::path(
    tag = "admin",
    params(PlatformFlagPath),
    request_body = PutPlatformFlagRequest,
    responses(
        (status = 201, description = "Created"),
        (status = 204, description = "Changed"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a platform admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid key or description", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[put("/admin/flags/{flag_key}")]
pub async fn put_platform_flag(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<PlatformFlagPath>,
    body: ApiJson<PutPlatformFlagRequest>,
) -> Result<HttpResponse, ApiError> {
    require_user(&principal)?;
    let key = platform_key(&path.flag_key)?;
    if body.description.as_ref().is_some_and(|d| d.chars().count() > 500) {
        return Err(ApiError::invalid_field("description", "is longer than 500 characters"));
    }
    let mut tx = TenantTx::begin_user(&state.db, principal.actor()).await?;
    let created: bool = tx
        .query_found(
            "select app.admin_put_flag($1, $2, $3, $4, $5, $6, $7)",
            &[
                &key,
                &body.description,
                &body.default_enabled,
                &body.kill_switch,
                &meta.ip,
                &meta.user_agent,
                &meta.request_id,
            ],
        )
        .await?
        .get(0);
    tx.commit().await?;
    state.flags.invalidate(None);
    Ok(if created { HttpResponse::Created().finish() } else { HttpResponse::NoContent().finish() })
}

async fn target(
    state: &AppState,
    principal: &Principal,
    meta: &RequestMeta,
    key: &str,
    org: Uuid,
    enabled: Option<bool>,
) -> Result<HttpResponse, ApiError> {
    require_user(principal)?;
    let key = flag_key(key)?;
    let mut tx = TenantTx::begin_user(&state.db, principal.actor()).await?;
    let done: bool = tx
        .query_found(
            "select app.admin_target_flag($1, $2, $3, $4, $5, $6)",
            &[&key, &org, &enabled, &meta.ip, &meta.user_agent, &meta.request_id],
        )
        .await?
        .get(0);
    if !done {
        return Err(ApiError::NotFound);
    }
    tx.commit().await?;
    state.flags.invalidate(Some(OrgId(org)));
    Ok(HttpResponse::NoContent().finish())
}

/// Switch a flag on or off for one organization (platform admins only; audited).
#[utoipa::path(
    tag = "admin",
    params(FlagTargetPath),
    request_body = TargetFlagRequest,
    responses(
        (status = 204, description = "Targeted"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a platform admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such flag or organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[put("/admin/flags/{flag_key}/organizations/{org_id}")]
pub async fn put_flag_target(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<FlagTargetPath>,
    body: ApiJson<TargetFlagRequest>,
) -> Result<HttpResponse, ApiError> {
    target(&state, &principal, &meta, &path.flag_key, path.org_id, Some(body.enabled)).await
}

/// Remove a flag's targeting of one organization (platform admins only; audited).
#[utoipa::path(
    tag = "admin",
    params(FlagTargetPath),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a platform admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such flag or organization", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[delete("/admin/flags/{flag_key}/organizations/{org_id}")]
pub async fn delete_flag_target(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<FlagTargetPath>,
) -> Result<HttpResponse, ApiError> {
    target(&state, &principal, &meta, &path.flag_key, path.org_id, None).await
}
