//! Extractors: the authenticated `Principal`, and JSON/path/query error handling that turns
//! every rejection into a problem document naming the field.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::error::{PathError, PayloadError, QueryPayloadError};
use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, web};

use super::AppState;
use crate::api::ApiError;
use crate::auth::Principal;
use crate::domain::FieldError;

/// The request's authentication outcome: a principal, or why it was refused.
#[derive(Clone)]
enum AuthOutcome {
    Admitted(Principal),
    Refused,
    CsrfRejected,
}

/// How a request presented its credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presented {
    /// `Authorization: Bearer` (an access token or an API key).
    Bearer,
    /// The web console's session cookie (`console::COOKIE`); its state-changing requests must
    /// also carry the CSRF token.
    ConsoleCookie,
}

/// The longest credential looked at; anything longer is refused unread.
const MAX_CREDENTIAL: usize = 8192;

/// The request's credential: its bearer token, else the console's session cookie. Bounded,
/// and nothing is looked up here.
pub fn presented_credential(headers: &header::HeaderMap) -> Option<(String, Presented)> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let token = value.to_str().ok().and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })?;
        return (!token.is_empty() && token.len() <= MAX_CREDENTIAL)
            .then(|| (token.to_owned(), Presented::Bearer));
    }
    headers
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| super::console::is_session_cookie(name))
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty() && value.len() <= MAX_CREDENTIAL)
        .map(|value| (value.to_owned(), Presented::ConsoleCookie))
}

/// A cookie-authenticated request that changes something must carry the session's CSRF token
/// (`X-CSRF-Token`); a cross-site page can make the browser send the cookie, never the token.
fn csrf_satisfied(req: &HttpRequest, presented: &Option<(String, Presented)>) -> bool {
    match presented {
        Some((cookie, Presented::ConsoleCookie)) if !req.method().is_safe() => {
            req.headers().get(super::console::CSRF_HEADER).is_some_and(|sent| {
                crate::auth::api_keys::hashes_equal(
                    sent.as_bytes(),
                    crate::auth::sessions::console_csrf_token(cookie).as_bytes(),
                )
            })
        }
        _ => true,
    }
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Principal, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // Authenticated once per request: middleware (rate limits, idempotency) and the handler
        // share the outcome, so a forged credential costs one lookup, not one per layer.
        if let Some(outcome) = req.extensions().get::<AuthOutcome>().cloned() {
            return Box::pin(async move {
                match outcome {
                    AuthOutcome::Admitted(principal) => Ok(principal),
                    AuthOutcome::Refused => Err(ApiError::Unauthorized),
                    AuthOutcome::CsrfRejected => Err(ApiError::CsrfRejected),
                }
            });
        }
        let request = req.clone();
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let presented = presented_credential(req.headers());
        // Checked before any lookup: a forged cross-site request costs nothing.
        if !csrf_satisfied(req, &presented) {
            req.extensions_mut().insert(AuthOutcome::CsrfRejected);
            tracing::info!("console request without its CSRF token refused");
            return Box::pin(async { Err(ApiError::CsrfRejected) });
        }
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("app state missing")))?;
            let (token, _) = presented.ok_or(ApiError::Unauthorized)?;
            let outcome = state.auth.authenticate(&token).await;
            match &outcome {
                Ok(principal) => request.extensions_mut().insert(AuthOutcome::Admitted(principal.clone())),
                Err(crate::auth::AuthError::Token(_) | crate::auth::AuthError::ApiKey(_)) => {
                    request.extensions_mut().insert(AuthOutcome::Refused)
                }
                Err(crate::auth::AuthError::Database(_)) => None, // not remembered: may succeed on retry
            };
            match outcome {
                Ok(principal) => {
                    let span = tracing::Span::current();
                    match &principal {
                        Principal::User(u) => span.record("user.id", tracing::field::display(u.user_id)),
                        Principal::ApiKey(k) => span.record("api_key.id", tracing::field::display(k.key_id)),
                    };
                    Ok(principal)
                }
                Err(crate::auth::AuthError::Token(reason)) => {
                    tracing::info!(%reason, "bearer token refused");
                    Err(ApiError::Unauthorized)
                }
                Err(crate::auth::AuthError::ApiKey(reason)) => {
                    tracing::info!(reason, "API key refused");
                    Err(ApiError::Unauthorized)
                }
                Err(crate::auth::AuthError::Database(e)) => Err(e.into()),
            }
        })
    }
}

/// A JSON request body. Unlike `web::Json`, a rejection names the offending field by its path
/// (`region`, `items[2].name`), including for enum values, and is always a problem document.
/// The size limit is the app's `PayloadConfig` (`max_body_bytes`).
pub struct ApiJson<T>(pub T);

impl<T> ApiJson<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

/// One member of a PATCH body, read as an RFC 7396 merge patch (whether the body is sent as
/// `application/merge-patch+json` or `application/json`): absent leaves the field as it is,
/// `null` removes it (resets it to its default, or is refused where it cannot be removed) and a
/// value replaces it. Fields take `#[serde(default)]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Patch<T> {
    #[default]
    Absent,
    Null,
    Value(T),
}

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Patch<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Option::<T>::deserialize(deserializer).map(|v| v.map_or(Patch::Null, Patch::Value))
    }
}

impl<T> Patch<T> {
    /// For a field that cannot be removed: `null` is a 422 naming it; else the new value, if any.
    pub fn required(self, field: &'static str) -> Result<Option<T>, ApiError> {
        match self {
            Patch::Absent => Ok(None),
            Patch::Null => {
                Err(FieldError::new(field, "cannot be removed (null); send a value or leave it out").into())
            }
            Patch::Value(value) => Ok(Some(value)),
        }
    }

    /// For a field whose removal resets it to `default`.
    pub fn or_reset(self, default: impl FnOnce() -> T) -> Option<T> {
        match self {
            Patch::Absent => None,
            Patch::Null => Some(default()),
            Patch::Value(value) => Some(value),
        }
    }
}

impl<T> std::ops::Deref for ApiJson<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: serde::de::DeserializeOwned + 'static> FromRequest for ApiJson<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<ApiJson<T>, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let is_json = req
            .mime_type()
            .ok()
            .flatten()
            .is_some_and(|m| m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON));
        let body = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            if !is_json {
                return Err(ApiError::BadRequest {
                    code: "unsupported_media_type",
                    detail: "The request body must be application/json.".into(),
                });
            }
            let bytes = body.await.map_err(|e| match e.as_error::<PayloadError>() {
                Some(PayloadError::Overflow) => ApiError::PayloadTooLarge,
                _ => ApiError::BadRequest {
                    code: "invalid_body",
                    detail: "The request body could not be read.".into(),
                },
            })?;
            let de = &mut serde_json::Deserializer::from_slice(&bytes);
            match serde_path_to_error::deserialize(de) {
                Ok(value) => Ok(ApiJson(value)),
                Err(e) if e.inner().is_data() => {
                    let path = e.path().to_string();
                    let message = data_error_message(e.inner());
                    // serde_path_to_error puts an unknown field in the path already; a missing
                    // one is reported at its parent, so append its name.
                    let field = match field_of(&message) {
                        Some(name) if message.starts_with("missing field") => {
                            if path == "." {
                                name
                            } else {
                                format!("{path}.{name}")
                            }
                        }
                        _ if path == "." => "body".to_owned(),
                        _ => path,
                    };
                    Err(ApiError::Validation(vec![FieldError::new(field, message)]))
                }
                Err(e) => Err(ApiError::BadRequest {
                    code: "invalid_json",
                    detail: format!("The request body is not valid JSON: {}.", e.inner()),
                }),
            }
        })
    }
}

/// serde names the offending field between backticks ("unknown field `x`", "missing field `y`").
fn field_of(message: &str) -> Option<String> {
    message
        .split('`')
        .nth(1)
        .filter(|f| f.len() <= 64 && f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .map(str::to_owned)
}

fn data_error_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    // Drop serde's " at line X column Y" suffix: the field name says where.
    match text.find(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// A path that does not parse (e.g. a malformed id) cannot name anything that exists: 404,
/// the same answer as for an id that does not exist.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|_err: PathError, _req| ApiError::NotFound.into())
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err: QueryPayloadError, _req| {
        let message = err.to_string();
        ApiError::Validation(vec![FieldError::new(field_of_query(&message), message)]).into()
    })
}

fn field_of_query(message: &str) -> String {
    ["limit", "cursor"]
        .into_iter()
        .find(|field| message.contains(field))
        .map(str::to_owned)
        .or_else(|| field_of(message))
        .unwrap_or_else(|| "query".to_owned())
}

/// Who sent a request, for the audit log: client address (behind trusted proxies, the one they
/// report), user agent, request id.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub ip: Option<std::net::IpAddr>,
    pub user_agent: Option<String>,
    pub request_id: String,
}

impl RequestMeta {
    pub fn of(req: &HttpRequest) -> RequestMeta {
        let user_agent = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(500).collect());
        let trusted = req.app_data::<web::Data<AppState>>().map(|s| s.settings.trusted_proxies.as_slice());
        RequestMeta {
            ip: crate::request::client_addr(req, trusted.unwrap_or_default()),
            user_agent,
            request_id: crate::request::current_request_id(),
        }
    }
}

impl FromRequest for RequestMeta {
    type Error = ApiError;
    type Future = std::future::Ready<Result<RequestMeta, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(Ok(RequestMeta::of(req)))
    }
}
