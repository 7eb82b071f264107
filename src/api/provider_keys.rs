//! Bring-your-own LLM provider keys, per workspace. A key is validated (its format, and on
//! request a live check with the provider), encrypted with the organization's data key
//! (AES-256-GCM, see `crate::crypto`) and stored as ciphertext. Only its last four characters are
//! ever returned. It is decrypted only where it is used: the verify operation here, and a worker
//! step that calls the provider.

use actix_web::{HttpResponse, delete, get, post, put, web};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::audit::{AuditEntry, record};
use super::authz::{authorize, authorize_in};
use super::conditional::{Preconditions, tagged};
use super::extract::{ApiJson, RequestMeta};
use super::workspaces::WorkspacePath;
use crate::api::ApiError;
use crate::api::problem::Problem;
use crate::auth::Principal;
use crate::auth::events::{SecurityEvent, emit};
use crate::crypto::{CryptoError, DataKey, MasterKeys};
use crate::db::{TenantTx, tenant};
use crate::domain::{OrgId, Permission};
use crate::providers::{LiveCheckError, Provider, key_suffix, live_check};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ProviderKeyPath {
    /// Organization id.
    pub org_id: Uuid,
    /// Workspace id.
    pub workspace_id: Uuid,
    /// `openai`, `azure_openai` or `anthropic`.
    #[param(inline)]
    pub provider: Provider,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"api_key": "sk-proj-0123456789abcdefghijklmnopqrstuv", "live_check": false}))]
pub struct PutProviderKeyRequest {
    /// The provider's API key. Stored encrypted; never returned.
    #[schema(value_type = String, example = "sk-proj-...")]
    pub api_key: SecretString,
    /// Azure OpenAI only: the resource endpoint, `https://NAME.openai.azure.com`.
    pub endpoint: Option<String>,
    /// Ask the provider whether it accepts the key before storing it (default false).
    #[serde(default)]
    pub live_check: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VerifyQuery {
    /// Also ask the provider (default true); false checks only that the stored key decrypts and
    /// is well-formed.
    pub live_check: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderKeyResponse {
    pub workspace_id: Uuid,
    pub provider: Provider,
    /// The key's last four characters, e.g. `…3xQa`.
    pub masked_key: String,
    pub endpoint: Option<String>,
    /// When the provider last accepted it (live check).
    pub last_verified_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyResponse {
    pub provider: Provider,
    /// The stored key decrypts, is well-formed and (if checked live) the provider accepts it.
    pub valid: bool,
    pub live_checked: bool,
    pub checked_at: DateTime<Utc>,
}

fn key_from_row(row: &Row) -> Result<ProviderKeyResponse, ApiError> {
    let provider: String = row.get("provider");
    Ok(ProviderKeyResponse {
        workspace_id: row.get("workspace_id"),
        provider: Provider::from_db(&provider)
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("unknown provider in database")))?,
        masked_key: format!("…{}", row.get::<_, String>("key_suffix")),
        endpoint: row.get("endpoint"),
        last_verified_at: row.get("last_verified_at"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    })
}

/// Where a ciphertext belongs, bound into it as AEAD associated data.
fn key_aad(org: OrgId, workspace: Uuid, provider: Provider) -> Vec<u8> {
    format!("tenantry/provider-key/v1/{org}/{workspace}/{}", provider.as_str()).into_bytes()
}

/// A crypto failure as the caller sees it, logged as a security event (ids only).
fn unreadable(org: OrgId, workspace: Uuid, provider: Provider, err: CryptoError) -> ApiError {
    let reason = match &err {
        CryptoError::UnknownMasterKey(_) => "master key version not configured",
        CryptoError::Decrypt => "decryption failed",
        CryptoError::Random => "random number generator failed",
    };
    emit(SecurityEvent::ProviderKeyUnreadable { org, workspace, provider: provider.as_str(), reason });
    match err {
        CryptoError::Decrypt => ApiError::Conflict {
            code: "provider_key_unreadable",
            detail: "The stored key cannot be decrypted; store it again.".into(),
        },
        CryptoError::UnknownMasterKey(_) => ApiError::Unavailable,
        CryptoError::Random => ApiError::Internal(anyhow::anyhow!("random number generator failed")),
    }
}

/// The organization's data key (created on first use), failures as this module reports them.
async fn data_key_or_create(
    tx: &mut TenantTx,
    keys: &MasterKeys,
    org: OrgId,
    workspace: Uuid,
    provider: Provider,
) -> Result<(Uuid, DataKey), ApiError> {
    super::data_keys::data_key_or_create(tx, keys, org)
        .await?
        .map_err(|e| unreadable(org, workspace, provider, e))
}

/// A stored key, decrypted for use, with its endpoint. `None` when there is none. This and the
/// worker are the only places a plaintext key exists, and only for as long as it is used.
pub async fn decrypt_for_use(
    tx: &mut TenantTx,
    keys: &MasterKeys,
    org: OrgId,
    workspace: Uuid,
    provider: Provider,
) -> Result<Option<(SecretString, Option<String>)>, ApiError> {
    let Some(row) = tx
        .query_opt(
            "select p.nonce, p.ciphertext, p.endpoint, k.id as key_id, k.wrapped_key, k.master_key_version \
             from provider_keys p join organization_data_keys k \
               on k.organization_id = p.organization_id and k.id = p.data_key_id \
             where p.organization_id = $1 and p.workspace_id = $2 and p.provider = $3",
            &[org.as_uuid(), &workspace, &provider.as_str()],
        )
        .await?
    else {
        return Ok(None);
    };
    let fail = |e| unreadable(org, workspace, provider, e);
    let data_key = keys
        .unwrap(org.0, row.get("key_id"), row.get("master_key_version"), row.get("wrapped_key"))
        .map_err(fail)?;
    let plain = data_key
        .open(&key_aad(org, workspace, provider), row.get("nonce"), row.get("ciphertext"))
        .map_err(|e| unreadable(org, workspace, provider, e))?;
    let text = String::from_utf8(plain.to_vec())
        .map_err(|_| unreadable(org, workspace, provider, CryptoError::Decrypt))?;
    Ok(Some((SecretString::from(text), row.get("endpoint"))))
}

/// A refused Azure endpoint is the caller's input (422); any other failure is the upstream's.
fn live_check_error(provider: Provider, err: LiveCheckError) -> ApiError {
    match err {
        LiveCheckError::Refused(why) if provider == Provider::AzureOpenai => {
            ApiError::invalid_field("endpoint", format!("cannot be checked: {why}"))
        }
        LiveCheckError::Refused(why) => ApiError::BadGateway {
            code: "provider_unreachable",
            detail: format!("The provider's configured address is refused: {why}."),
        },
        LiveCheckError::Unreachable(why) => ApiError::BadGateway {
            code: "provider_unreachable",
            detail: format!("The provider could not confirm the key: {why}."),
        },
    }
}

/// Store or replace a workspace's key for a provider (permission `provider_keys:manage`).
#[utoipa::path(
    tag = "provider_keys",
    params(ProviderKeyPath),
    request_body = PutProviderKeyRequest,
    responses(
        (status = 200, description = "Replaced", body = ProviderKeyResponse),
        (status = 201, description = "Stored", body = ProviderKeyResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission provider_keys:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such workspace or provider", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Malformed key or endpoint, or the provider rejected the key", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The live check could not reach the provider", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[put("/orgs/{org_id}/workspaces/{workspace_id}/provider-keys/{provider}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn put_provider_key(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<ProviderKeyPath>,
    body: ApiJson<PutProviderKeyRequest>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let (org, workspace, provider) = (OrgId(path.org_id), path.workspace_id, path.provider);
    let key = body.api_key.expose_secret();
    provider.validate_key(key)?;
    let endpoint = provider.validate_endpoint(body.endpoint.as_deref())?;
    let mut verified_at = None;
    if body.live_check {
        // Authorize before calling out, so nobody can use this server to test keys or probe
        // hosts; no transaction stays open during the call.
        let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
        authorize_in(
            &mut tx,
            &principal,
            &meta,
            &membership,
            Permission::ProviderKeysManage,
            "provider_key.set",
        )
        .await?;
        tx.query_found(
            "select 1 from workspaces where organization_id = $1 and id = $2",
            &[org.as_uuid(), &workspace],
        )
        .await?;
        tx.commit().await?;
        match live_check(&state.settings.provider_keys, provider, &body.api_key, endpoint.as_deref()).await {
            Ok(true) => verified_at = Some(Utc::now()),
            Ok(false) => return Err(ApiError::invalid_field("api_key", "was rejected by the provider")),
            Err(e) => return Err(live_check_error(provider, e)),
        }
    }
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::ProviderKeysManage, "provider_key.set")
        .await?;
    tx.query_found(
        "select 1 from workspaces where organization_id = $1 and id = $2",
        &[org.as_uuid(), &workspace],
    )
    .await?;
    if preconditions.is_conditional() {
        // Locked: the key cannot change or vanish between this check and the write.
        let current = tx
            .query_opt(
                "select row_version from provider_keys \
                 where organization_id = $1 and workspace_id = $2 and provider = $3 for no key update",
                &[org.as_uuid(), &workspace, &provider.as_str()],
            )
            .await?;
        preconditions.check_upsert(current.map(|r| r.get(0)))?;
    }
    let (data_key_id, data_key) =
        data_key_or_create(&mut tx, &state.master_keys, org, workspace, provider).await?;
    let (nonce, ciphertext) = data_key
        .seal(&key_aad(org, workspace, provider), key.as_bytes())
        .map_err(|e| ApiError::Internal(e.into()))?;
    drop(data_key);
    let suffix = key_suffix(key);
    // `where not $11`: with If-None-Match, a key created concurrently is not replaced (412).
    let row = tx
        .query_opt(
            "insert into provider_keys (organization_id, workspace_id, provider, data_key_id, nonce, ciphertext, \
               key_suffix, endpoint, last_verified_at, created_by) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             on conflict (organization_id, workspace_id, provider) do update set data_key_id = excluded.data_key_id, \
               nonce = excluded.nonce, ciphertext = excluded.ciphertext, key_suffix = excluded.key_suffix, \
               endpoint = excluded.endpoint, last_verified_at = excluded.last_verified_at \
             where not $11 \
             returning workspace_id, provider, key_suffix, endpoint, last_verified_at, created_at, updated_at, \
               row_version, (xmax = 0) as created",
            &[
                org.as_uuid(),
                &workspace,
                &provider.as_str(),
                &data_key_id,
                &nonce.as_slice(),
                &ciphertext,
                &suffix,
                &endpoint,
                &verified_at,
                &principal.as_user().map(|u| u.user_id.0),
                &preconditions.create_only(),
            ],
        )
        .await?
        .ok_or(ApiError::PreconditionFailed)?;
    let created: bool = row.get("created");
    let entry = AuditEntry::allowed("provider_key.set", "provider_key", workspace, &meta).with_details(serde_json::json!({
        "provider": provider.as_str(), "masked_key": format!("…{suffix}"), "live_checked": verified_at.is_some(),
        "replaced": !created,
    }));
    record(&mut tx, &principal, entry).await?;
    tx.commit().await?;
    let response = key_from_row(&row)?;
    let status = if created { HttpResponse::Created() } else { HttpResponse::Ok() };
    Ok(tagged(status, row.get("row_version"), &response))
}

/// List a workspace's provider keys, masked (permission `provider_keys:manage`).
#[utoipa::path(
    tag = "provider_keys",
    params(WorkspacePath),
    responses(
        (status = 200, description = "Keys, masked", body = Vec<ProviderKeyResponse>),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission provider_keys:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such workspace", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/workspaces/{workspace_id}/provider-keys")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn list_provider_keys(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<WorkspacePath>,
) -> Result<web::Json<Vec<ProviderKeyResponse>>, ApiError> {
    let (membership, rows) = tenant::read(
        &state.db,
        principal.actor(),
        Some(OrgId(path.org_id)),
        // Driven by the workspace: a missing workspace is a 404, an empty one an empty list.
        "select p.workspace_id, p.provider, p.key_suffix, p.endpoint, p.last_verified_at, p.created_at, p.updated_at \
         from workspaces s left join provider_keys p on p.organization_id = s.organization_id and p.workspace_id = s.id \
         where s.organization_id = $1 and s.id = $2 order by p.provider",
        &[&path.org_id, &path.workspace_id],
    )
    .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::ProviderKeysManage, "provider_key.list")
        .await?;
    if rows.is_empty() {
        return Err(ApiError::NotFound);
    }
    let keys = rows.iter().filter(|r| r.get::<_, Option<String>>("provider").is_some()).map(key_from_row);
    Ok(web::Json(keys.collect::<Result<_, _>>()?))
}

/// Get a provider key, masked (permission `provider_keys:manage`).
#[utoipa::path(
    tag = "provider_keys",
    params(ProviderKeyPath),
    responses(
        (status = 200, description = "The key, masked", body = ProviderKeyResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission provider_keys:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No key for this provider", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/workspaces/{workspace_id}/provider-keys/{provider}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn get_provider_key(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<ProviderKeyPath>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let (membership, rows) = tenant::read(
        &state.db,
        principal.actor(),
        Some(OrgId(path.org_id)),
        "select workspace_id, provider, key_suffix, endpoint, last_verified_at, created_at, updated_at, row_version \
         from provider_keys where organization_id = $1 and workspace_id = $2 and provider = $3",
        &[&path.org_id, &path.workspace_id, &path.provider.as_str()],
    )
    .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::ProviderKeysManage, "provider_key.get")
        .await?;
    let row = rows.first().ok_or(ApiError::NotFound)?;
    Ok(preconditions.respond(row.get("row_version"), &key_from_row(row)?))
}

/// Delete a provider key (permission `provider_keys:manage`).
#[utoipa::path(
    tag = "provider_keys",
    params(ProviderKeyPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission provider_keys:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No key for this provider", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[delete("/orgs/{org_id}/workspaces/{workspace_id}/provider-keys/{provider}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn delete_provider_key(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<ProviderKeyPath>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), OrgId(path.org_id)).await?;
    authorize_in(
        &mut tx,
        &principal,
        &meta,
        &membership,
        Permission::ProviderKeysManage,
        "provider_key.delete",
    )
    .await?;
    let key: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
        [&path.org_id, &path.workspace_id, &path.provider.as_str()];
    let deleted = tx
        .execute(
            "delete from provider_keys where organization_id = $1 and workspace_id = $2 and provider = $3 \
               and ($4::bigint[] is null or row_version = any($4))",
            &[key[0], key[1], key[2], &preconditions.versions()],
        )
        .await?;
    if deleted != 1 {
        let exists =
            "select 1 from provider_keys where organization_id = $1 and workspace_id = $2 and provider = $3";
        return Err(preconditions.missed(&mut tx, exists, &key).await);
    }
    let entry = AuditEntry::allowed("provider_key.delete", "provider_key", path.workspace_id, &meta)
        .with_details(serde_json::json!({"provider": path.provider.as_str()}));
    record(&mut tx, &principal, entry).await?;
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Check a stored key: it decrypts and is well-formed, and (by default) the provider accepts it
/// (permission `provider_keys:manage`).
#[utoipa::path(
    tag = "provider_keys",
    params(ProviderKeyPath, VerifyQuery),
    responses(
        (status = 200, description = "Checked; `valid` says whether the key works", body = VerifyResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission provider_keys:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No key for this provider", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The stored key cannot be decrypted", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The provider refused the key, or its answer was not understood", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The provider could not be reached", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[post("/orgs/{org_id}/workspaces/{workspace_id}/provider-keys/{provider}/verify")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn verify_provider_key(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<ProviderKeyPath>,
    query: web::Query<VerifyQuery>,
) -> Result<web::Json<VerifyResponse>, ApiError> {
    let (org, workspace, provider) = (OrgId(path.org_id), path.workspace_id, path.provider);
    let live = query.live_check.unwrap_or(true);
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(
        &mut tx,
        &principal,
        &meta,
        &membership,
        Permission::ProviderKeysManage,
        "provider_key.verify",
    )
    .await?;
    let (key, endpoint) = decrypt_for_use(&mut tx, &state.master_keys, org, workspace, provider)
        .await?
        .ok_or(ApiError::NotFound)?;
    let entry = AuditEntry::allowed("provider_key.verify", "provider_key", workspace, &meta)
        .with_details(serde_json::json!({"provider": provider.as_str(), "live_check": live}));
    record(&mut tx, &principal, entry).await?;
    tx.commit().await?;
    let mut valid = provider.validate_key(key.expose_secret()).is_ok();
    if live && valid {
        valid = live_check(&state.settings.provider_keys, provider, &key, endpoint.as_deref())
            .await
            .map_err(|e| live_check_error(provider, e))?;
        if valid {
            let (mut tx, _) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
            tx.execute(
                "update provider_keys set last_verified_at = now() \
                 where organization_id = $1 and workspace_id = $2 and provider = $3",
                &[org.as_uuid(), &workspace, &provider.as_str()],
            )
            .await?;
            tx.commit().await?;
        }
    }
    drop(key);
    Ok(web::Json(VerifyResponse { provider, valid, live_checked: live, checked_at: Utc::now() }))
}
