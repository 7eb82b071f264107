//! Organization API keys. A key is a service principal confined to its organization by the
//! same RLS context as a member; its scopes are a subset of its creator's permissions. The
//! plaintext is returned once, at creation; only SHA-256 of its secret is stored. Managing keys
//! needs `api_keys:manage` and a signed-in user (a key cannot mint or revoke keys).

use actix_web::http::header;
use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::audit::{AuditEntry, record};
use super::authz::{authorize, authorize_in, authorize_workspaces};
use super::conditional::{Preconditions, etag};
use super::extract::{ApiJson, RequestMeta};
use super::members::{check_workspaces, sorted};
use super::orgs::OrgPath;
use super::pagination::{COUNT_FETCH, Key, Keyset, Page, PageQuery, prefix_pattern, total};
use super::{AppState, require_user};
use crate::api::ApiError;
use crate::api::problem::Problem;
use crate::auth::Principal;
use crate::auth::api_keys;
use crate::auth::events::{SecurityEvent, emit};
use crate::db::{TenantTx, tenant};
use crate::domain::{FieldError, Name, OrgId, Permission, UserId, supported_time};
use crate::{keyset, sorts};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ApiKeyPath {
    /// Organization id.
    pub org_id: Uuid,
    /// API key id.
    pub key_id: Uuid,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "ci-deploy", "scopes": ["workspaces:read", "runs:execute"], "expires_at": "2027-06-30T00:00:00Z"}))]
pub struct CreateApiKeyRequest {
    #[schema(example = "CI deploys")]
    pub name: String,
    /// Permissions the key gets; each must be one you hold in this organization.
    #[schema(example = json!(["workspaces:read"]))]
    pub scopes: Vec<String>,
    /// Optional expiry, in the future.
    pub expires_at: Option<DateTime<Utc>>,
    /// Restrict the key to these workspaces. A key made by a restricted member is always
    /// restricted, to some of that member's workspaces (by default all of them).
    pub workspace_ids: Option<Vec<Uuid>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyResponse {
    pub id: Uuid,
    pub organization_id: OrgId,
    pub name: String,
    pub scopes: Vec<String>,
    /// The workspaces the key is restricted to (null: every workspace).
    pub workspace_ids: Option<Vec<Uuid>>,
    pub created_by: Option<UserId>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Updated at most once a minute.
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKeyResponse {
    #[serde(flatten)]
    pub key: ApiKeyResponse,
    /// The key itself, for `Authorization: Bearer`. Shown only now: store it safely.
    pub secret: String,
}

fn key_from_row(row: &Row) -> ApiKeyResponse {
    ApiKeyResponse {
        id: row.get("id"),
        organization_id: OrgId(row.get("organization_id")),
        name: row.get("name"),
        scopes: row.get("scopes"),
        workspace_ids: row.get("workspace_ids"),
        created_by: row.get::<_, Option<Uuid>>("created_by").map(UserId),
        created_at: row.get("created_at"),
        expires_at: row.get("expires_at"),
        last_used_at: row.get("last_used_at"),
        revoked_at: row.get("revoked_at"),
    }
}

/// Create an API key (permission `api_keys:manage`). The response holds the key, once.
#[utoipa::path(
    tag = "api_keys",
    params(OrgPath),
    request_body = CreateApiKeyRequest,
    responses(
        (status = 201, description = "Created; `secret` is shown only in this response", body = CreatedApiKeyResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission api_keys:manage, or called with an API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field (e.g. a scope you do not hold)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[post("/orgs/{org_id}/api-keys")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn create_api_key(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
    body: ApiJson<CreateApiKeyRequest>,
) -> Result<HttpResponse, ApiError> {
    let user = require_user(&principal)?;
    let org = OrgId(path.org_id);
    let body = body.into_inner();
    let name = Name::parse("name", &body.name)?;
    if let Some(expires_at) = body.expires_at
        && (expires_at <= state.clock.now() || supported_time("expires_at", expires_at).is_err())
    {
        return Err(FieldError::new("expires_at", "must be in the future, before 9999").into());
    }
    let requested = body.workspace_ids.clone().map(sorted);
    if requested.as_ref().is_some_and(Vec::is_empty) {
        return Err(FieldError::new("workspace_ids", "name at least one workspace, or leave it out").into());
    }
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::ApiKeysManage, "api_key.create")
        .await?;
    let mut scopes = body.scopes.clone();
    scopes.sort();
    scopes.dedup();
    if scopes.is_empty() {
        return Err(FieldError::new("scopes", "at least one permission is required").into());
    }
    let errors: Vec<FieldError> = body
        .scopes
        .iter()
        .enumerate()
        .filter(|(_, s)| !membership.permissions.contains(s))
        .map(|(i, s)| {
            FieldError::new(format!("scopes[{i}]"), format!("{s:?} is not a permission you hold here"))
        })
        .collect();
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let workspaces = authorize_workspaces(&mut tx, &principal, &meta, requested, "api_key.create").await?;
    if let Some(ids) = &workspaces {
        check_workspaces(&mut tx, org, ids).await?;
    }
    let key = api_keys::generate();
    let row = tx
        .query_found(
            "insert into api_keys (organization_id, id, name, secret_hash, scopes, created_by, expires_at, workspace_ids) \
             values ($1, $2, $3, $4, $5, $6, $7, $8) \
             returning organization_id, id, name, scopes, workspace_ids, created_by, created_at, expires_at, \
                       last_used_at, revoked_at, row_version",
            &[
                org.as_uuid(),
                &key.id,
                &name.as_str(),
                &key.secret_hash.as_slice(),
                &scopes,
                user.user_id.as_uuid(),
                &body.expires_at,
                &workspaces,
            ],
        )
        .await?;
    let entry = AuditEntry::allowed("api_key.create", "api_key", key.id, &meta).with_details(
        serde_json::json!({"name": name.as_str(), "scopes": scopes, "expires_at": body.expires_at,
                           "workspace_ids": workspaces}),
    );
    record(&mut tx, &principal, entry).await?;
    tx.commit().await?;
    emit(SecurityEvent::ApiKeyCreated { org, key: key.id, by: user.user_id });
    let mut response = HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/orgs/{org}/api-keys/{}", key.id)))
        .insert_header((header::ETAG, etag(row.get("row_version"))))
        .json(CreatedApiKeyResponse { key: key_from_row(&row), secret: key.plaintext });
    // Never kept for an idempotent replay: the key exists in plaintext only in this response.
    response.extensions_mut().insert(super::OneTimeSecret);
    Ok(response)
}

/// The key list's statements: `$1` organization, `$2` limit, `$3` state, `$4` name prefix
/// pattern, then the cursor's keys. Indexes: the primary key `(organization_id, id)` for
/// creation order, `api_keys_by_name` for names and the prefix; the state (which depends on the
/// clock) is checked on the rows that index scan reads.
macro_rules! keys {
    () => {
        "select organization_id, id, name, scopes, workspace_ids, created_by, created_at, expires_at, last_used_at, \
                revoked_at from api_keys \
         where organization_id = $1 \
           and ($3::text is null \
                or ($3 = 'revoked' and revoked_at is not null) \
                or ($3 = 'expired' and revoked_at is null and expires_at <= now()) \
                or ($3 = 'active' and revoked_at is null and (expires_at is null or expires_at > now()))) \
           and ($4::text is null or lower(name) like $4)"
    };
}
macro_rules! keys_plain {
    () => {
        "select organization_id, id, name, scopes, workspace_ids, created_by, created_at, expires_at, last_used_at, \
                revoked_at from api_keys where organization_id = $1 and $3::text is null and $4::text is null"
    };
}
static BY_CREATED: Keyset = keyset!(1, Id, asc, keys, keys_plain, "", "id", "$5", "id", "id desc", "$2");
static BY_CREATED_DESC: Keyset =
    keyset!(2, Id, desc, keys, keys_plain, "", "id", "$5", "id", "id desc", "$2");
static BY_NAME: Keyset = keyset!(
    3,
    Text,
    asc,
    keys,
    keys_plain,
    "",
    "(name, id)",
    "($5, $6)",
    "name, id",
    "name desc, id desc",
    "$2"
);
static BY_NAME_DESC: Keyset = keyset!(
    4,
    Text,
    desc,
    keys,
    keys_plain,
    "",
    "(name, id)",
    "($5, $6)",
    "name, id",
    "name desc, id desc",
    "$2"
);
const COUNT_KEYS: &str = concat!("select count(*) from (", keys!(), " limit $2) c");

sorts! {
    /// The order of an API key list.
    ApiKeySort {
        CreatedAt = "created_at" => BY_CREATED,
        CreatedAtDesc = "-created_at" => BY_CREATED_DESC,
        Name = "name" => BY_NAME,
        NameDesc = "-name" => BY_NAME_DESC,
    }
}

/// Whether a key still works.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApiKeyState {
    Active,
    Expired,
    Revoked,
}

impl ApiKeyState {
    fn as_str(self) -> &'static str {
        match self {
            ApiKeyState::Active => "active",
            ApiKeyState::Expired => "expired",
            ApiKeyState::Revoked => "revoked",
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ApiKeyFilter {
    /// Only keys in this state.
    #[param(inline)]
    pub state: Option<ApiKeyState>,
    /// Only keys whose name starts with this (case-insensitive).
    #[param(example = "ci")]
    pub name_prefix: Option<String>,
    /// `created_at` (default, oldest first), `-created_at`, `name` or `-name`.
    #[param(inline)]
    pub sort: Option<ApiKeySort>,
}

/// List the organization's API keys (never their secrets), filtered by state and name prefix.
#[utoipa::path(
    tag = "api_keys",
    params(OrgPath, ApiKeyFilter, PageQuery),
    responses(
        (status = 200, description = "API keys", body = Page<ApiKeyResponse>),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission api_keys:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid filter, sort, limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/api-keys")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn list_api_keys(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
    filter: web::Query<ApiKeyFilter>,
    query: web::Query<PageQuery>,
) -> Result<web::Json<Page<ApiKeyResponse>>, ApiError> {
    let sort = filter.sort.unwrap_or_default();
    let page = query.parse(sort.keyset())?.filtered(filter.state.is_some() || filter.name_prefix.is_some());
    let prefix = prefix_pattern("name_prefix", filter.name_prefix.as_deref())?;
    let key_state = filter.state.map(ApiKeyState::as_str);
    let org = OrgId(path.org_id);
    let (membership, rows) = page
        .read(
            &state.db,
            principal.actor(),
            Some(org),
            &page.with_keys(vec![org.as_uuid(), page.fetch(), &key_state, &prefix]),
        )
        .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::ApiKeysManage, "api_key.list").await?;
    let count_params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [org.as_uuid(), &COUNT_FETCH, &key_state, &prefix];
    let total = total(&state.db, &principal, Some(org), &page, COUNT_KEYS, &count_params).await?;
    let items = rows.iter().map(key_from_row).collect();
    Ok(web::Json(page.page(items, total, |k| match sort {
        ApiKeySort::Name | ApiKeySort::NameDesc => Key::Text(k.name.clone(), k.id),
        _ => Key::Id(k.id),
    })))
}

/// Get one API key (never its secret; permission `api_keys:manage`).
#[utoipa::path(
    tag = "api_keys",
    params(ApiKeyPath),
    responses(
        (status = 200, description = "The key", body = ApiKeyResponse),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission api_keys:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such key", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/api-keys/{key_id}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn get_api_key(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<ApiKeyPath>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let (membership, rows) = tenant::read(
        &state.db,
        principal.actor(),
        Some(OrgId(path.org_id)),
        "select organization_id, id, name, scopes, workspace_ids, created_by, created_at, expires_at, last_used_at, \
                revoked_at, row_version \
         from api_keys where organization_id = $1 and id = $2",
        &[&path.org_id, &path.key_id],
    )
    .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::ApiKeysManage, "api_key.get").await?;
    let row = rows.first().ok_or(ApiError::NotFound)?;
    Ok(preconditions.respond(row.get("row_version"), &key_from_row(row)))
}

/// Revoke an API key; it is refused from its next request on.
#[utoipa::path(
    tag = "api_keys",
    params(ApiKeyPath),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission api_keys:manage, or called with an API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such key", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[delete("/orgs/{org_id}/api-keys/{key_id}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn delete_api_key(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<ApiKeyPath>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let user = require_user(&principal)?;
    let org = OrgId(path.org_id);
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::ApiKeysManage, "api_key.revoke")
        .await?;
    let changed = tx
        .execute(
            // least(), not coalesce(): the first revocation's time stays (least() skips a NULL), and
            // Citus evaluates now() for an UPDATE anywhere but inside CASE or COALESCE.
            "update api_keys set revoked_at = least(revoked_at, now()) where organization_id = $1 and id = $2 \
               and ($3::bigint[] is null or row_version = any($3))",
            &[org.as_uuid(), &path.key_id, &preconditions.versions()],
        )
        .await?;
    if changed != 1 {
        let exists = "select 1 from api_keys where organization_id = $1 and id = $2";
        return Err(preconditions.missed(&mut tx, exists, &[org.as_uuid(), &path.key_id]).await);
    }
    record(&mut tx, &principal, AuditEntry::allowed("api_key.revoke", "api_key", path.key_id, &meta)).await?;
    tx.commit().await?;
    emit(SecurityEvent::ApiKeyRevoked { org, key: path.key_id, by: user.user_id });
    Ok(HttpResponse::NoContent().finish())
}
