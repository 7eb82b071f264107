//! Extractors: the authenticated `Principal`, and JSON/path/query error handling that turns
//! every rejection into a problem document naming the field.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};

use super::AppState;
use crate::auth::Principal;
use crate::domain::FieldError;
use crate::http::ApiError;

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Principal, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
            });
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("app state missing")))?;
            let token = token.filter(|t| !t.is_empty() && t.len() <= 8192).ok_or(ApiError::Unauthorized)?;
            match state.auth.authenticate(&token).await {
                Ok(principal) => {
                    tracing::Span::current().record("user.id", tracing::field::display(principal.user_id));
                    Ok(principal)
                }
                Err(crate::auth::AuthError::Token(reason)) => {
                    tracing::info!(%reason, "bearer token refused");
                    Err(ApiError::Unauthorized)
                }
                Err(crate::auth::AuthError::Database(e)) => Err(e.into()),
            }
        })
    }
}

pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|err, _req| json_error(err).into())
}

fn json_error(err: JsonPayloadError) -> ApiError {
    match err {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::PayloadTooLarge
        }
        JsonPayloadError::ContentType => ApiError::BadRequest {
            code: "unsupported_media_type",
            detail: "The request body must be application/json.".into(),
        },
        JsonPayloadError::Deserialize(e) if e.is_data() => {
            ApiError::Validation(vec![FieldError::new(field_of(&e.to_string()), data_error_message(&e))])
        }
        JsonPayloadError::Deserialize(e) => ApiError::BadRequest {
            code: "invalid_json",
            detail: format!("The request body is not valid JSON: {e}."),
        },
        _ => ApiError::BadRequest { code: "invalid_body", detail: "The request body could not be read.".into() },
    }
}

/// serde names the offending field between backticks ("unknown field `x`", "missing field `y`").
fn field_of(message: &str) -> String {
    message
        .split('`')
        .nth(1)
        .filter(|f| f.len() <= 64 && f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or("body")
        .to_owned()
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
    for field in ["limit", "cursor"] {
        if message.contains(field) {
            return field.to_owned();
        }
    }
    field_of(message)
}
