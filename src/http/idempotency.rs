//! `Idempotency-Key` for mutating POSTs under `/api/v1/orgs/{org_id}/`: the first response is
//! kept per organization, principal and key (`idempotency_keys`, visible to that principal only),
//! and a retry gets it back (`Idempotent-Replayed: true`) instead of acting twice.
//!
//! - The same key with another method, path or body: 422 `idempotency_key_reused`.
//! - The same key while the first request is still running: 409 `idempotency_request_in_progress`.
//! - A 5xx is not kept (the client may retry). Keys expire after `idempotency_ttl_secs`; a request
//!   that died mid-way frees its key after five minutes.
//!
//! - A response that shows a one-time secret (a new API key, an invitation token; the handler
//!   marks it with `OneTimeSecret`) is never kept: only its status and `Location` are, and a
//!   replay answers 409 `idempotent_secret_withheld` pointing there. A secret exists in plaintext
//!   only in the response that minted it.
//!
//! Requests without the header, other methods, and routes outside an organization pass through
//! untouched; so does a caller who is not authenticated or not a member (the handler answers them).

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::web::{Bytes, BytesMut};
use actix_web::{Error, FromRequest, HttpMessage as _, HttpResponse, ResponseError, web};
use futures_util::StreamExt as _;
use uuid::Uuid;

use crate::api::ApiError;
use crate::api::{AppState, OneTimeSecret};
use crate::auth::Principal;
use crate::db::TenantTx;
use crate::domain::OrgId;

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The organization of a route inside one (`/orgs/{org_id}/...`; not the organization itself).
fn org_of(path: &str) -> Option<OrgId> {
    let (_, tail) = path.strip_prefix("/api/v1/orgs/")?.split_once('/')?;
    (!tail.is_empty()).then_some(())?;
    super::org_of_path(path)
}

fn valid_key(key: &str) -> bool {
    (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// The middleware (`actix_web::middleware::from_fn(idempotency)`).
pub async fn idempotency(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let key = req.headers().get(IDEMPOTENCY_KEY).map(|v| v.to_str().map(str::to_owned));
    let (Some(key), Some(org)) = (key, org_of(req.path())) else {
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    };
    if req.method() != Method::POST {
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    }
    let Some(key) = key.ok().filter(|k| valid_key(k)) else {
        let err = ApiError::BadRequest {
            code: "invalid_idempotency_key",
            detail: "Idempotency-Key must be 1 to 255 visible ASCII characters.".into(),
        };
        return Ok(req.into_response(err.error_response()));
    };
    guarded(next, req, org, key).await
}

enum Claimed {
    /// Ours: run the request and keep its response.
    New,
    Replay {
        status: u16,
        content_type: Option<String>,
        location: Option<String>,
        body: Vec<u8>,
    },
    /// The first response showed a one-time secret; it is not shown again.
    Withheld {
        location: Option<String>,
    },
    Refused(ApiError),
}

async fn guarded(
    next: Next<impl MessageBody + 'static>,
    mut req: ServiceRequest,
    org: OrgId,
    key: String,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    };
    // Unauthenticated: let the handler answer 401.
    let Ok(principal) = Principal::from_request(req.request(), &mut Payload::None).await else {
        return next.call(req).await.map(ServiceResponse::map_into_boxed_body);
    };
    // The body, for the request's fingerprint; then handed back to the handler.
    let mut payload = req.take_payload();
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > state.settings.max_body_bytes {
            return Ok(req.into_response(ApiError::PayloadTooLarge.error_response()));
        }
        body.extend_from_slice(&chunk);
    }
    let body = body.freeze();
    let mut fingerprint = Vec::with_capacity(body.len() + 64);
    fingerprint.extend_from_slice(req.method().as_str().as_bytes());
    fingerprint.push(b' ');
    fingerprint.extend_from_slice(req.uri().to_string().as_bytes());
    fingerprint.push(b'\n');
    fingerprint.extend_from_slice(&body);
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &fingerprint).as_ref().to_vec();
    req.set_payload(Payload::from(body));

    let principal_id =
        principal.as_user().map(|u| u.user_id.0).or(principal.actor().api_key).unwrap_or_default();
    let ttl = i32::try_from(state.settings.idempotency_ttl_secs).unwrap_or(i32::MAX);
    let claimed = match claim(&state, &principal, org, principal_id, &key, &hash, ttl).await {
        Ok(Some(claimed)) => claimed,
        // Not a member (or no such organization): the handler gives its 404.
        Ok(None) => return next.call(req).await.map(ServiceResponse::map_into_boxed_body),
        Err(e) => return Ok(req.into_response(e.error_response())),
    };
    match claimed {
        Claimed::Refused(err) => Ok(req.into_response(err.error_response())),
        Claimed::Withheld { location } => {
            let err = ApiError::Conflict {
                code: "idempotent_secret_withheld",
                detail:
                    "This request already succeeded. Its response held a secret that is shown only once; \
                         the resource it created is at Location."
                        .into(),
            };
            let mut response = err.error_response();
            if let Some(location) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
                .headers_mut()
                .insert(HeaderName::from_static("idempotent-replayed"), HeaderValue::from_static("true"));
            Ok(req.into_response(response))
        }
        Claimed::Replay { status, content_type, location, body } => {
            let mut response = HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::OK));
            if let Some(ct) = content_type {
                response.insert_header((header::CONTENT_TYPE, ct));
            }
            if let Some(location) = location {
                response.insert_header((header::LOCATION, location));
            }
            response.insert_header((
                HeaderName::from_static("idempotent-replayed"),
                HeaderValue::from_static("true"),
            ));
            Ok(req.into_response(response.body(body)))
        }
        Claimed::New => {
            let res = match next.call(req).await {
                Ok(res) => res,
                Err(e) => {
                    // A timeout (or another error answered as a 5xx): the client may retry.
                    release(&state, &principal, org, principal_id, &key).await;
                    return Err(e);
                }
            };
            let (req, res) = res.into_parts();
            let status = res.status();
            let content_type =
                res.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let location =
                res.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let withheld = res.extensions().get::<OneTimeSecret>().is_some();
            let (head, body) = res.into_parts();
            let bytes: Bytes = match actix_web::body::to_bytes(body).await {
                Ok(bytes) => bytes,
                Err(_) => {
                    release(&state, &principal, org, principal_id, &key).await;
                    return Ok(ServiceResponse::new(req, ApiError::Unavailable.error_response()));
                }
            };
            if status.is_server_error() {
                release(&state, &principal, org, principal_id, &key).await;
            } else {
                let kept = Kept { status, content_type, location, body: (!withheld).then_some(&bytes[..]) };
                let stored = complete(&state, &principal, org, principal_id, &key, kept).await;
                if let Err(e) = stored {
                    tracing::error!(error = %e, "keeping an idempotent response failed");
                }
            }
            let res = head.set_body(BoxBody::new(bytes));
            Ok(ServiceResponse::new(req, res))
        }
    }
}

/// Records the key as in progress, or tells what an earlier request with it left.
async fn claim(
    state: &AppState,
    principal: &Principal,
    org: OrgId,
    principal_id: Uuid,
    key: &str,
    hash: &[u8],
    ttl_secs: i32,
) -> Result<Option<Claimed>, ApiError> {
    let (mut tx, _) = match TenantTx::begin_org(&state.db, principal.actor(), org).await {
        Ok(tx) => tx,
        Err(crate::db::DbError::NotFound) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // Expired keys, and requests that died mid-way, free their key.
    tx.execute(
        "delete from idempotency_keys where organization_id = $1 and principal_id = $2 \
           and (expires_at < now() or (status = 'in_progress' and created_at < now() - interval '5 minutes'))",
        &[org.as_uuid(), &principal_id],
    )
    .await?;
    let inserted = tx
        .query_opt(
            "insert into idempotency_keys (organization_id, principal_id, key, request_hash, status, expires_at) \
             values ($1, $2, $3, $4, 'in_progress', now() + $5::integer * interval '1 second') \
             on conflict (organization_id, principal_id, key) do nothing returning 1",
            &[org.as_uuid(), &principal_id, &key, &hash, &ttl_secs],
        )
        .await?;
    if inserted.is_some() {
        tx.commit().await?;
        return Ok(Some(Claimed::New));
    }
    let row = tx
        .query_found(
            "select request_hash, status, response_status, response_type, response_location, response_body, \
                    secret_withheld \
             from idempotency_keys where organization_id = $1 and principal_id = $2 and key = $3",
            &[org.as_uuid(), &principal_id, &key],
        )
        .await?;
    tx.commit().await?;
    if row.get::<_, Vec<u8>>("request_hash") != hash {
        return Ok(Some(Claimed::Refused(ApiError::Validation(vec![crate::domain::FieldError::new(
            "Idempotency-Key",
            "was already used for a different request",
        )]))));
    }
    if row.get::<_, String>("status") == "in_progress" {
        return Ok(Some(Claimed::Refused(ApiError::Conflict {
            code: "idempotency_request_in_progress",
            detail: "A request with this Idempotency-Key is still running; retry shortly.".into(),
        })));
    }
    if row.get::<_, bool>("secret_withheld") {
        return Ok(Some(Claimed::Withheld { location: row.get("response_location") }));
    }
    Ok(Some(Claimed::Replay {
        status: u16::try_from(row.get::<_, i32>("response_status")).unwrap_or(200),
        content_type: row.get("response_type"),
        location: row.get("response_location"),
        body: row.get::<_, Option<Vec<u8>>>("response_body").unwrap_or_default(),
    }))
}

/// What is kept of a response: everything, or (`body: None`) its status and Location only.
struct Kept<'a> {
    status: StatusCode,
    content_type: Option<String>,
    location: Option<String>,
    body: Option<&'a [u8]>,
}

async fn complete(
    state: &AppState,
    principal: &Principal,
    org: OrgId,
    principal_id: Uuid,
    key: &str,
    kept: Kept<'_>,
) -> Result<(), ApiError> {
    let (mut tx, _) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    let withheld = kept.body.is_none();
    let content_type = kept.content_type.filter(|_| !withheld);
    tx.execute(
        "update idempotency_keys set status = 'completed', response_status = $4, response_type = $5, \
           response_location = $6, response_body = $7, secret_withheld = $8 \
         where organization_id = $1 and principal_id = $2 and key = $3",
        &[
            org.as_uuid(),
            &principal_id,
            &key,
            &i32::from(kept.status.as_u16()),
            &content_type,
            &kept.location,
            &kept.body,
            &withheld,
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Forgets a key whose request failed on our side, so the client can retry it.
async fn release(state: &AppState, principal: &Principal, org: OrgId, principal_id: Uuid, key: &str) {
    let released = async {
        let (mut tx, _) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
        tx.execute(
            "delete from idempotency_keys where organization_id = $1 and principal_id = $2 and key = $3",
            &[org.as_uuid(), &principal_id, &key],
        )
        .await?;
        tx.commit().await
    }
    .await;
    if let Err(e) = released {
        tracing::warn!(error = %e, "releasing an idempotency key failed; it frees itself in five minutes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_org_scoped_paths_and_sane_keys_qualify() {
        let org = Uuid::new_v4();
        assert_eq!(org_of(&format!("/api/v1/orgs/{org}/workspaces")), Some(OrgId(org)));
        assert_eq!(org_of(&format!("/api/v1/orgs/{org}")), None);
        assert_eq!(org_of("/api/v1/orgs"), None);
        assert_eq!(org_of("/api/v1/orgs/not-a-uuid/workspaces"), None);
        assert!(valid_key("order-2026-11-22_001"));
        assert!(!valid_key("") && !valid_key("has space") && !valid_key(&"k".repeat(256)));
    }
}
