//! Webhook endpoints (permission `webhooks:manage`): where an organization's events are
//! delivered, signed as Standard Webhooks with the endpoint's secret. The secret is shown once,
//! when it is made (creation, rotation), and stored only encrypted under the organization's data
//! key (`data_keys`), bound to its endpoint. After a rotation the previous secret keeps signing,
//! beside the new one, for the overlap asked for (at most 7 days), so receivers can switch over.
//! Deliveries are created by the database with each event (migrations/V28__webhook_endpoints.sql).

use actix_web::http::header;
use actix_web::{HttpResponse, delete, get, patch, post, web};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::audit::{AuditEntry, record};
use super::authz::{authorize, authorize_in};
use super::conditional::{Preconditions, etag, tagged};
use super::events::is_event_type_name;
use super::extract::{ApiJson, Patch, RequestMeta};
use super::orgs::OrgPath;
use crate::api::ApiError;
use crate::api::problem::Problem;
use crate::auth::Principal;
use crate::crypto::{CryptoError, MasterKeys};
use crate::db::{TenantTx, tenant};
use crate::domain::{FieldError, OrgId, Permission};

/// Random bytes in a signing secret (Standard Webhooks: 24 to 64).
const SECRET_BYTES: usize = 32;
/// The longest a rotated-out secret may keep signing.
const MAX_OVERLAP_SECS: i64 = 7 * 24 * 3600;

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"id": "01938f4e-7b1c-7d3e-9a51-2f0c8d7e6b5a", "url": "https://hooks.example.com/tenantry", "description": "Our CRM", "event_types": ["member.added", "run.failed"], "enabled": true, "disabled_reason": null, "consecutive_failures": 0, "failing_since": null, "previous_secret_expires_at": null, "created_at": "2026-12-01T09:30:00Z", "updated_at": "2026-12-01T09:30:00Z"}))]
pub struct WebhookEndpointResponse {
    pub id: Uuid,
    pub url: String,
    pub description: Option<String>,
    /// The event types it receives; `*` for all.
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// `manual` (disabled by a person) or `failing` (by the dispatcher after failing too long).
    pub disabled_reason: Option<String>,
    /// Failed delivery attempts in a row.
    pub consecutive_failures: i32,
    pub failing_since: Option<DateTime<Utc>>,
    /// Until when the previous secret still signs beside the current one, after a rotation.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An endpoint with its signing secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEndpointWithSecret {
    #[serde(flatten)]
    pub endpoint: WebhookEndpointResponse,
    /// `whsec_` and the base64 secret, as Standard Webhooks libraries take it. Shown once.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://hooks.example.com/tenantry", "description": "Our CRM", "event_types": ["member.added", "run.failed"]}))]
pub struct CreateWebhookEndpointRequest {
    /// https only; it must resolve to public addresses when deliveries are made.
    pub url: String,
    pub description: Option<String>,
    /// Event types from `GET /event-types`, or `["*"]` for all.
    pub event_types: Vec<String>,
    /// Default true.
    pub enabled: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"enabled": false}))]
pub struct UpdateWebhookEndpointRequest {
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub url: Patch<String>,
    /// `null` clears it (RFC 7396 merge patch).
    #[serde(default)]
    #[schema(value_type = Option<String>, nullable)]
    pub description: Patch<String>,
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    pub event_types: Patch<Vec<String>>,
    /// Enabling an endpoint (also one the dispatcher disabled) resets its failure count.
    #[serde(default)]
    #[schema(value_type = Option<bool>)]
    pub enabled: Patch<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"overlap_secs": 86400}))]
pub struct RotateWebhookSecretRequest {
    /// How long the current secret keeps signing beside the new one: 0 to 604800 (7 days),
    /// default 86400.
    pub overlap_secs: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct WebhookEndpointPath {
    /// The organization's id.
    pub org_id: Uuid,
    /// The endpoint's id.
    pub endpoint_id: Uuid,
}

/// What a response shows of an endpoint (never the secret's columns).
macro_rules! endpoint_columns {
    () => {
        "id, url, description, event_types, enabled, disabled_reason, consecutive_failures, failing_since, \
         previous_secret_expires_at, created_at, updated_at, row_version"
    };
}
const SELECT_ENDPOINT: &str =
    concat!("select ", endpoint_columns!(), " from webhook_endpoints where organization_id = $1 and id = $2");
const ENDPOINT_EXISTS: &str = "select 1 from webhook_endpoints where organization_id = $1 and id = $2";

fn endpoint_from_row(row: &Row) -> WebhookEndpointResponse {
    WebhookEndpointResponse {
        id: row.get("id"),
        url: row.get("url"),
        description: row.get("description"),
        event_types: row.get("event_types"),
        enabled: row.get("enabled"),
        disabled_reason: row.get("disabled_reason"),
        consecutive_failures: row.get("consecutive_failures"),
        failing_since: row.get("failing_since"),
        previous_secret_expires_at: row.get("previous_secret_expires_at"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    }
}

/// Where a secret belongs, bound into its ciphertext: moved to another endpoint or tenant, it
/// does not decrypt.
pub fn secret_aad(org: OrgId, endpoint: Uuid) -> Vec<u8> {
    format!("tenantry/webhook-secret/v1/{org}/{endpoint}").into_bytes()
}

fn checked_url(state: &AppState, url: &str) -> Result<String, ApiError> {
    crate::outbound::check_url(url.trim(), state.settings.webhooks.allow_private_addresses)
        .map(|url| url.to_string())
        .map_err(|why| FieldError::new("url", why).into())
}

fn checked_description(description: Option<&str>) -> Result<(), ApiError> {
    match description {
        Some(d) if d.chars().count() > 500 || d.contains('\0') => {
            Err(FieldError::new("description", "must be at most 500 characters").into())
        }
        _ => Ok(()),
    }
}

/// The event types, each from the catalogue (or `*` alone); sorted, without repeats.
async fn checked_event_types(tx: &mut TenantTx, types: &[String]) -> Result<Vec<String>, ApiError> {
    if types.is_empty() || types.len() > 100 {
        return Err(FieldError::new("event_types", "must name 1 to 100 event types, or [\"*\"]").into());
    }
    let mut types: Vec<String> = types.to_vec();
    types.sort();
    types.dedup();
    if types.iter().any(|t| t == "*") {
        return if types.len() == 1 {
            Ok(types)
        } else {
            Err(FieldError::new("event_types", "`*` (all) stands alone").into())
        };
    }
    for (i, name) in types.iter().enumerate() {
        if !is_event_type_name(name) {
            return Err(FieldError::new(format!("event_types[{i}]"), "is not an event type").into());
        }
    }
    let known = tx.query("select type from event_types where type = any($1)", &[&types]).await?;
    if known.len() != types.len() {
        let unknown = types.iter().find(|t| !known.iter().any(|r| r.get::<_, &str>(0) == t.as_str()));
        return Err(FieldError::new(
            "event_types",
            format!("{} is not in the catalogue (GET /event-types)", unknown.map_or("a type", |t| t)),
        )
        .into());
    }
    Ok(types)
}

/// A new secret: `whsec_` and 32 random bytes in base64.
fn new_secret() -> Result<SecretString, ApiError> {
    let bytes = crate::crypto::random::<SECRET_BYTES>().map_err(|e| ApiError::Internal(e.into()))?;
    Ok(SecretString::from(format!("whsec_{}", STANDARD.encode(bytes))))
}

/// Seals `secret` for `endpoint`: (data key id, nonce, ciphertext).
async fn seal_secret(
    tx: &mut TenantTx,
    keys: &MasterKeys,
    org: OrgId,
    endpoint: Uuid,
    secret: &SecretString,
) -> Result<(Uuid, Vec<u8>, Vec<u8>), ApiError> {
    let (key_id, data_key) =
        super::data_keys::data_key_or_create(tx, keys, org).await?.map_err(unavailable_key)?;
    let (nonce, sealed) = data_key
        .seal(&secret_aad(org, endpoint), secret.expose_secret().as_bytes())
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok((key_id, nonce.to_vec(), sealed))
}

fn unavailable_key(err: CryptoError) -> ApiError {
    match err {
        CryptoError::Random => ApiError::Internal(anyhow::anyhow!("random number generator failed")),
        // The organization's data key cannot be opened with the configured master keys.
        CryptoError::UnknownMasterKey(_) | CryptoError::Decrypt => ApiError::Unavailable,
    }
}

/// Create an endpoint (permission `webhooks:manage`); its signing secret is shown once.
#[utoipa::path(
    tag = "webhooks",
    params(OrgPath),
    request_body = CreateWebhookEndpointRequest,
    responses(
        (status = 201, description = "Created; the secret is shown this once", body = WebhookEndpointWithSecret),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission webhooks:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The organization has as many endpoints as it may", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid URL, description or event types", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[post("/orgs/{org_id}/webhook-endpoints")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn create_webhook_endpoint(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
    body: ApiJson<CreateWebhookEndpointRequest>,
) -> Result<HttpResponse, ApiError> {
    let org = OrgId(path.org_id);
    let url = checked_url(&state, &body.url)?;
    checked_description(body.description.as_deref())?;
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(
        &mut tx,
        &principal,
        &meta,
        &membership,
        Permission::WebhooksManage,
        "webhook_endpoint.create",
    )
    .await?;
    let event_types = checked_event_types(&mut tx, &body.event_types).await?;
    // Creates in one organization take turns (until commit), so two at once cannot both pass
    // the limit; other organizations' creates are not held up.
    tx.query(
        "select pg_advisory_xact_lock(hashtext('tenantry.webhook_endpoints'), hashtext($1::uuid::text))",
        &[org.as_uuid()],
    )
    .await?;
    let count: i64 = tx
        .query_found("select count(*) from webhook_endpoints where organization_id = $1", &[org.as_uuid()])
        .await?
        .get(0);
    let max = state.settings.webhooks.max_endpoints_per_org;
    if count >= i64::from(max) {
        return Err(ApiError::Conflict {
            code: "too_many_endpoints",
            detail: format!("An organization may have {max} webhook endpoints; delete one first."),
        });
    }
    let id = Uuid::now_v7();
    let secret = new_secret()?;
    let (key_id, nonce, sealed) = seal_secret(&mut tx, &state.master_keys, org, id, &secret).await?;
    let enabled = body.enabled.unwrap_or(true);
    let row = tx
        .query_found(
            concat!(
                "insert into webhook_endpoints (organization_id, id, url, description, event_types, enabled, \
                   disabled_reason, data_key_id, secret_nonce, secret_ciphertext, created_by) \
                 values ($1, $2, $3, $4, $5, $6, case when $6 then null else 'manual' end, $7, $8, $9, $10) \
                 returning ",
                endpoint_columns!()
            ),
            &[
                org.as_uuid(),
                &id,
                &url,
                &body.description,
                &event_types,
                &enabled,
                &key_id,
                &nonce,
                &sealed,
                &principal.as_user().map(|u| u.user_id.0),
            ],
        )
        .await?;
    let entry = AuditEntry::allowed("webhook_endpoint.create", "webhook_endpoint", id, &meta)
        .with_details(json!({"url": url, "event_types": event_types, "enabled": enabled}));
    record(&mut tx, &principal, entry).await?;
    tx.commit().await?;
    let mut response = HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/orgs/{org}/webhook-endpoints/{id}")))
        .insert_header((header::ETAG, etag(row.get("row_version"))))
        .json(WebhookEndpointWithSecret {
            endpoint: endpoint_from_row(&row),
            secret: secret.expose_secret().to_owned(),
        });
    // The secret is shown once: an idempotent replay answers without it.
    response.extensions_mut().insert(super::OneTimeSecret);
    Ok(response)
}

/// List the organization's endpoints (permission `webhooks:manage`; at most
/// `webhooks.max_endpoints_per_org`, so never paged).
#[utoipa::path(
    tag = "webhooks",
    params(OrgPath),
    responses(
        (status = 200, description = "The endpoints, oldest first (never their secrets)", body = Vec<WebhookEndpointResponse>),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission webhooks:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/webhook-endpoints")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn list_webhook_endpoints(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
) -> Result<web::Json<Vec<WebhookEndpointResponse>>, ApiError> {
    let (membership, rows) = tenant::read(
        &state.db,
        principal.actor(),
        Some(OrgId(path.org_id)),
        concat!(
            "select ",
            endpoint_columns!(),
            " from webhook_endpoints where organization_id = $1 order by id"
        ),
        &[&path.org_id],
    )
    .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::WebhooksManage, "webhook_endpoint.list")
        .await?;
    Ok(web::Json(rows.iter().map(endpoint_from_row).collect()))
}

/// Get an endpoint (permission `webhooks:manage`; never its secret).
#[utoipa::path(
    tag = "webhooks",
    params(WebhookEndpointPath),
    responses(
        (status = 200, description = "The endpoint", body = WebhookEndpointResponse),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission webhooks:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/webhook-endpoints/{endpoint_id}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn get_webhook_endpoint(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<WebhookEndpointPath>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let (membership, rows) = tenant::read(
        &state.db,
        principal.actor(),
        Some(OrgId(path.org_id)),
        SELECT_ENDPOINT,
        &[&path.org_id, &path.endpoint_id],
    )
    .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::WebhooksManage, "webhook_endpoint.get")
        .await?;
    let row = rows.first().ok_or(ApiError::NotFound)?;
    Ok(preconditions.respond(row.get("row_version"), &endpoint_from_row(row)))
}

/// Change an endpoint (permission `webhooks:manage`): its URL, description, event types, or
/// whether it is enabled. A JSON merge patch; `If-Match` makes it conditional.
#[utoipa::path(
    tag = "webhooks",
    params(WebhookEndpointPath),
    request_body(content = UpdateWebhookEndpointRequest, content_type = "application/merge-patch+json"),
    responses(
        (status = 200, description = "Updated", body = WebhookEndpointResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission webhooks:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[patch("/orgs/{org_id}/webhook-endpoints/{endpoint_id}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn update_webhook_endpoint(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<WebhookEndpointPath>,
    body: ApiJson<UpdateWebhookEndpointRequest>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let url = body.url.required("url")?.map(|u| checked_url(&state, &u)).transpose()?;
    let (description_given, description) = match body.description {
        Patch::Absent => (false, None),
        Patch::Null => (true, None),
        Patch::Value(d) => (true, Some(d)),
    };
    checked_description(description.as_deref())?;
    let enabled = body.enabled.required("enabled")?;
    let event_types = body.event_types.required("event_types")?;
    let org = OrgId(path.org_id);
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(
        &mut tx,
        &principal,
        &meta,
        &membership,
        Permission::WebhooksManage,
        "webhook_endpoint.update",
    )
    .await?;
    let event_types = match event_types {
        Some(types) => Some(checked_event_types(&mut tx, &types).await?),
        None => None,
    };
    // Enabling clears the failure record; disabling is a person's (`manual`).
    let row = tx
        .query_opt(
            concat!(
                "update webhook_endpoints set url = coalesce($3, url), \
                   description = case when $4 then $5 else description end, \
                   event_types = coalesce($6, event_types), enabled = coalesce($7, enabled), \
                   disabled_reason = case when $7 is null then disabled_reason when $7 then null else 'manual' end, \
                   consecutive_failures = case when $7 then 0 else consecutive_failures end, \
                   failing_since = case when $7 then null else failing_since end \
                 where organization_id = $1 and id = $2 and ($8::bigint[] is null or row_version = any($8)) \
                 returning ",
                endpoint_columns!()
            ),
            &[
                org.as_uuid(),
                &path.endpoint_id,
                &url,
                &description_given,
                &description,
                &event_types,
                &enabled,
                &preconditions.versions(),
            ],
        )
        .await?;
    let Some(row) = row else {
        return Err(preconditions.missed(&mut tx, ENDPOINT_EXISTS, &[&path.org_id, &path.endpoint_id]).await);
    };
    let entry = AuditEntry::allowed("webhook_endpoint.update", "webhook_endpoint", path.endpoint_id, &meta)
        .with_details(json!({"url": url, "event_types": event_types, "enabled": enabled}));
    record(&mut tx, &principal, entry).await?;
    tx.commit().await?;
    Ok(tagged(HttpResponse::Ok(), row.get("row_version"), &endpoint_from_row(&row)))
}

/// Delete an endpoint and its delivery log (permission `webhooks:manage`).
#[utoipa::path(
    tag = "webhooks",
    params(WebhookEndpointPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission webhooks:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[delete("/orgs/{org_id}/webhook-endpoints/{endpoint_id}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn delete_webhook_endpoint(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<WebhookEndpointPath>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), OrgId(path.org_id)).await?;
    authorize_in(
        &mut tx,
        &principal,
        &meta,
        &membership,
        Permission::WebhooksManage,
        "webhook_endpoint.delete",
    )
    .await?;
    let deleted = tx
        .execute(
            "delete from webhook_endpoints where organization_id = $1 and id = $2 \
               and ($3::bigint[] is null or row_version = any($3))",
            &[&path.org_id, &path.endpoint_id, &preconditions.versions()],
        )
        .await?;
    if deleted != 1 {
        return Err(preconditions.missed(&mut tx, ENDPOINT_EXISTS, &[&path.org_id, &path.endpoint_id]).await);
    }
    let entry = AuditEntry::allowed("webhook_endpoint.delete", "webhook_endpoint", path.endpoint_id, &meta);
    record(&mut tx, &principal, entry).await?;
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Rotate an endpoint's signing secret (permission `webhooks:manage`): a new secret, shown once,
/// signs from now on; the current one keeps signing beside it for `overlap_secs`.
#[utoipa::path(
    tag = "webhooks",
    params(WebhookEndpointPath),
    request_body = RotateWebhookSecretRequest,
    responses(
        (status = 200, description = "Rotated; the new secret is shown this once", body = WebhookEndpointWithSecret),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission webhooks:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such endpoint", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid overlap", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The organization's data key cannot be opened", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[post("/orgs/{org_id}/webhook-endpoints/{endpoint_id}/rotate-secret")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn rotate_webhook_secret(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<WebhookEndpointPath>,
    body: ApiJson<RotateWebhookSecretRequest>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let overlap = body.overlap_secs.unwrap_or(86_400);
    if !(0..=MAX_OVERLAP_SECS).contains(&overlap) {
        return Err(FieldError::new("overlap_secs", "must be 0 to 604800 (7 days)").into());
    }
    let org = OrgId(path.org_id);
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(
        &mut tx,
        &principal,
        &meta,
        &membership,
        Permission::WebhooksManage,
        "webhook_endpoint.rotate",
    )
    .await?;
    let secret = new_secret()?;
    let (key_id, nonce, sealed) =
        seal_secret(&mut tx, &state.master_keys, org, path.endpoint_id, &secret).await?;
    // The current secret becomes the previous one; it was sealed with the same (only) data key.
    let row = tx
        .query_opt(
            concat!(
                "update webhook_endpoints set \
                   previous_secret_nonce = case when $3::float8 > 0 then secret_nonce end, \
                   previous_secret_ciphertext = case when $3::float8 > 0 then secret_ciphertext end, \
                   previous_secret_expires_at = \
                     case when $3::float8 > 0 then now() + make_interval(secs => $3::float8) end, \
                   data_key_id = $4, secret_nonce = $5, secret_ciphertext = $6 \
                 where organization_id = $1 and id = $2 and ($7::bigint[] is null or row_version = any($7)) \
                 returning ",
                endpoint_columns!()
            ),
            &[
                org.as_uuid(),
                &path.endpoint_id,
                &(overlap as f64),
                &key_id,
                &nonce,
                &sealed,
                &preconditions.versions(),
            ],
        )
        .await?;
    let Some(row) = row else {
        return Err(preconditions.missed(&mut tx, ENDPOINT_EXISTS, &[&path.org_id, &path.endpoint_id]).await);
    };
    let entry =
        AuditEntry::allowed("webhook_endpoint.rotate_secret", "webhook_endpoint", path.endpoint_id, &meta)
            .with_details(json!({"overlap_secs": overlap}));
    record(&mut tx, &principal, entry).await?;
    tx.commit().await?;
    let mut response = tagged(
        HttpResponse::Ok(),
        row.get("row_version"),
        &WebhookEndpointWithSecret {
            endpoint: endpoint_from_row(&row),
            secret: secret.expose_secret().to_owned(),
        },
    );
    response.extensions_mut().insert(super::OneTimeSecret);
    Ok(response)
}
