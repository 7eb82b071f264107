//! One error type for every handler, rendered as RFC 9457 `application/problem+json` with a
//! stable snake_case `code` and the request id. 5xx bodies never carry internal details; the
//! cause is logged once, here.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::db::DbError;
use crate::domain::{FieldError, Permission};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid credentials")]
    Unauthorized,
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    #[error("sign-in failed")]
    SignInFailed,
    /// A state-changing request authenticated by the console's cookie without its CSRF token.
    #[error("CSRF token missing or wrong")]
    CsrfRejected,
    #[error("missing permission {0}")]
    Forbidden(String),
    #[error("this operation needs a signed-in user, not an API key")]
    UserRequired,
    /// A caller restricted to some workspaces reached beyond them (a grant, a key, a member).
    #[error("beyond the caller's workspace restriction")]
    WorkspaceRestricted,
    #[error("not found")]
    NotFound,
    /// The path exists, the method does not (the response carries `Allow`).
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("misdirected: organization in region {0}")]
    Misdirected(String),
    #[error("organization suspended")]
    Suspended,
    #[error("conflict: {code}")]
    Conflict { code: &'static str, detail: String },
    #[error("gone: {code}")]
    Gone { code: &'static str, detail: String },
    /// `If-Match` (or `If-None-Match` on a write) named a version the resource is not at.
    #[error("precondition failed")]
    PreconditionFailed,
    /// A write that must name the version it replaces came without `If-Match`.
    #[error("precondition required")]
    PreconditionRequired(&'static str),
    #[error("invalid request body")]
    BadRequest { code: &'static str, detail: String },
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("service unavailable")]
    Unavailable,
    /// The request ran past `request_timeout_secs` and was abandoned (its transaction rolled back).
    #[error("request timed out")]
    TimedOut { after_secs: u64 },
    /// A webhook whose signature does not verify (or is too old).
    #[error("invalid signature")]
    InvalidSignature(&'static str),
    /// Over a rate limit (`principal` or `organization`).
    #[error("rate limited ({policy})")]
    RateLimited { policy: &'static str, retry_after_secs: u64 },
    /// An upstream we call (e.g. an LLM provider checking a key) failed or did not answer.
    #[error("bad gateway: {code}")]
    BadGateway { code: &'static str, detail: String },
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn forbidden(permission: Permission) -> ApiError {
        ApiError::Forbidden(permission.as_str().to_owned())
    }

    pub fn invalid_field(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::Validation(vec![FieldError::new(field, message)])
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::InvalidRefreshToken => "invalid_refresh_token",
            ApiError::SignInFailed => "sign_in_failed",
            ApiError::CsrfRejected => "csrf_rejected",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::UserRequired => "user_required",
            ApiError::WorkspaceRestricted => "workspace_restricted",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Misdirected(_) => "misdirected_region",
            ApiError::Suspended => "organization_suspended",
            ApiError::Conflict { code, .. } | ApiError::Gone { code, .. } => code,
            ApiError::BadRequest { code, .. } => code,
            ApiError::PreconditionFailed => "precondition_failed",
            ApiError::PreconditionRequired(_) => "precondition_required",
            ApiError::Validation(_) => "validation_failed",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::Unavailable => "unavailable",
            ApiError::TimedOut { .. } => "timeout",
            ApiError::InvalidSignature(_) => "invalid_signature",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::BadGateway { code, .. } => code,
            ApiError::Internal(_) => "internal",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::Unauthorized | ApiError::InvalidRefreshToken | ApiError::SignInFailed => "Unauthorized",
            ApiError::Forbidden(_)
            | ApiError::UserRequired
            | ApiError::WorkspaceRestricted
            | ApiError::CsrfRejected => "Forbidden",
            ApiError::NotFound => "Not Found",
            ApiError::MethodNotAllowed => "Method Not Allowed",
            ApiError::Misdirected(_) => "Misdirected Request",
            ApiError::Suspended => "Forbidden",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Gone { .. } => "Gone",
            ApiError::BadRequest { .. } => "Bad Request",
            ApiError::PreconditionFailed => "Precondition Failed",
            ApiError::PreconditionRequired(_) => "Precondition Required",
            ApiError::Validation(_) => "Unprocessable Content",
            ApiError::PayloadTooLarge => "Content Too Large",
            ApiError::Unavailable | ApiError::TimedOut { .. } => "Service Unavailable",
            ApiError::InvalidSignature(_) => "Unauthorized",
            ApiError::RateLimited { .. } => "Too Many Requests",
            ApiError::BadGateway { .. } => "Bad Gateway",
            ApiError::Internal(_) => "Internal Server Error",
        }
    }

    fn detail(&self) -> String {
        match self {
            ApiError::Unauthorized => "A valid bearer token is required.".into(),
            ApiError::SignInFailed => {
                "The identity provider's answer could not be accepted; start again.".into()
            }
            ApiError::InvalidRefreshToken => {
                "The refresh token is invalid, spent, expired or revoked; sign in again.".into()
            }
            ApiError::Forbidden(p) => format!("This operation requires the permission {p}."),
            ApiError::UserRequired => "This operation needs a signed-in user; API keys cannot use it.".into(),
            ApiError::CsrfRejected => {
                "A request that changes something, made with the console's session cookie, must carry \
                 the session's X-CSRF-Token header (from GET /console/session)."
                    .into()
            }
            ApiError::WorkspaceRestricted => {
                "You are restricted to some workspaces: you can grant access, make keys \
                 and manage members only within them, and cannot lift a restriction."
                    .into()
            }
            ApiError::NotFound => "The resource does not exist or you do not have access to it.".into(),
            ApiError::MethodNotAllowed => {
                "This path does not take this method; Allow lists those it takes.".into()
            }
            ApiError::Suspended => "This organization is suspended; contact the platform's support.".into(),
            ApiError::Misdirected(region) => {
                format!(
                    "This organization lives in region {region}; send its requests to the {region} endpoint."
                )
            }
            ApiError::Conflict { detail, .. }
            | ApiError::BadRequest { detail, .. }
            | ApiError::Gone { detail, .. }
            | ApiError::BadGateway { detail, .. } => detail.clone(),
            ApiError::PreconditionFailed => {
                "The resource has changed since the version you named (If-Match); fetch it again, \
                 reapply your change and send its new ETag."
                    .into()
            }
            ApiError::PreconditionRequired(why) => (*why).into(),
            ApiError::Validation(errors) => {
                let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
                format!("Invalid value for: {}.", fields.join(", "))
            }
            ApiError::PayloadTooLarge => "The request body is larger than this server accepts.".into(),
            ApiError::Unavailable => "The service is temporarily unavailable; retry shortly.".into(),
            ApiError::TimedOut { after_secs } => format!(
                "The request took longer than {after_secs} s and was abandoned; what it had not committed \
                 was rolled back. Retry shortly (with an Idempotency-Key, a retry cannot act twice)."
            ),
            ApiError::InvalidSignature(why) => format!("The webhook signature was refused: {why}."),
            ApiError::RateLimited { policy, retry_after_secs } => {
                format!("Too many requests for this {policy}; retry in {retry_after_secs} s.")
            }
            ApiError::Internal(_) => "An unexpected error occurred.".into(),
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"type": "urn:tenantry:problem:precondition_failed", "title": "Precondition Failed", "status": 412, "detail": "The resource has changed since the version you named (If-Match); fetch it again, reapply your change and send its new ETag.", "code": "precondition_failed", "request_id": "01936f80-1b2c-7d3e-8f40-5a6b7c8d9e0f"}))]
pub struct Problem {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable code, e.g. `not_found`, `forbidden`, `slug_taken`.
    pub code: String,
    /// The request id, also in the `X-Request-Id` response header.
    pub request_id: String,
    /// The missing permission (403 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permission: Option<String>,
    /// The organization's home region (421 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Invalid fields (422 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<ProblemField>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemField {
    pub field: String,
    pub message: String,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized | ApiError::InvalidRefreshToken | ApiError::SignInFailed => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::Forbidden(_)
            | ApiError::UserRequired
            | ApiError::WorkspaceRestricted
            | ApiError::CsrfRejected => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Misdirected(_) => StatusCode::MISDIRECTED_REQUEST,
            ApiError::Suspended => StatusCode::FORBIDDEN,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Gone { .. } => StatusCode::GONE,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ApiError::PreconditionRequired(_) => StatusCode::PRECONDITION_REQUIRED,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable | ApiError::TimedOut { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::InvalidSignature(_) => StatusCode::UNAUTHORIZED,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        match self {
            ApiError::Internal(cause) => tracing::error!(error = ?cause, "request failed"),
            ApiError::Unavailable => tracing::warn!("request refused: service unavailable"),
            ApiError::TimedOut { after_secs } => tracing::warn!(after_secs, "request timed out"),
            _ => {}
        }
        let problem = Problem {
            type_: format!("urn:tenantry:problem:{}", self.code()),
            title: self.title().to_owned(),
            status: status.as_u16(),
            detail: self.detail(),
            code: self.code().to_owned(),
            request_id: crate::request::current_request_id(),
            permission: match self {
                ApiError::Forbidden(p) => Some(p.clone()),
                _ => None,
            },
            region: match self {
                ApiError::Misdirected(region) => Some(region.clone()),
                _ => None,
            },
            errors: match self {
                ApiError::Validation(errors) => Some(
                    errors
                        .iter()
                        .map(|e| ProblemField { field: e.field.clone(), message: e.message.clone() })
                        .collect(),
                ),
                _ => None,
            },
        };
        let mut response = HttpResponse::build(status);
        response.insert_header((header::CONTENT_TYPE, "application/problem+json"));
        if let ApiError::Unauthorized = self {
            response.insert_header((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="tenantry", error="invalid_token""#),
            ));
        }
        if let ApiError::Unavailable | ApiError::TimedOut { .. } = self {
            response.insert_header((header::RETRY_AFTER, "1"));
        }
        if let ApiError::RateLimited { retry_after_secs, .. } = self {
            response.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
        }
        response.body(serde_json::to_vec(&problem).unwrap_or_default())
    }
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> ApiError {
        match err {
            DbError::NotFound => ApiError::NotFound,
            DbError::Misdirected(region) => ApiError::Misdirected(region),
            DbError::Suspended => ApiError::Suspended,
            DbError::PermissionDenied => ApiError::Forbidden("platform:admin".into()),
            DbError::Unauthenticated => ApiError::Unauthorized,
            DbError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable");
                ApiError::Unavailable
            }
            DbError::TimedOut(after_secs) => ApiError::TimedOut { after_secs },
            DbError::UniqueViolation { constraint } => match constraint.as_deref() {
                Some("organizations_slug_key") => ApiError::Conflict {
                    code: "slug_taken",
                    detail: "An organization with this slug already exists.".into(),
                },
                Some("workflows_name_key") => ApiError::Conflict {
                    code: "name_taken",
                    detail: "A workflow with this name already exists in the workspace.".into(),
                },
                Some("workspaces_name_key") => ApiError::Conflict {
                    code: "name_taken",
                    detail: "A workspace with this name already exists in the organization.".into(),
                },
                Some("roles_name_key") => ApiError::Conflict {
                    code: "name_taken",
                    detail: "A role with this name already exists in the organization.".into(),
                },
                Some("memberships_pkey") => ApiError::Conflict {
                    code: "already_member",
                    detail: "The user is already a member of this organization.".into(),
                },
                _ => ApiError::Conflict { code: "conflict", detail: "The resource already exists.".into() },
            },
            DbError::ForeignKeyViolation { constraint } => match constraint.as_deref() {
                Some("memberships_user_id_fkey") => ApiError::invalid_field("user_id", "no such user"),
                Some("memberships_custom_role_fkey") => ApiError::Conflict {
                    code: "role_in_use",
                    detail: "The role is assigned to members; give them another role first.".into(),
                },
                Some("role_permissions_permission_fkey") => {
                    ApiError::invalid_field("permissions", "not a permission in the catalogue")
                }
                _ => ApiError::NotFound,
            },
            DbError::LastOwner => ApiError::Conflict {
                code: "last_owner",
                detail: "An organization must keep at least one owner.".into(),
            },
            DbError::PolicyViolation => ApiError::NotFound,
            DbError::Invitation("expired") => {
                ApiError::Gone { code: "invitation_expired", detail: "This invitation has expired.".into() }
            }
            DbError::Invitation("revoked") => {
                ApiError::Gone { code: "invitation_revoked", detail: "This invitation was revoked.".into() }
            }
            DbError::Invitation("used") => ApiError::Conflict {
                code: "invitation_used",
                detail: "This invitation has already been accepted.".into(),
            },
            DbError::Invitation("beyond_inviter") => ApiError::Conflict {
                code: "invitation_beyond_inviter",
                detail:
                    "Whoever invited you can no longer grant this role or these workspaces; ask for a new \
                         invitation."
                        .into(),
            },
            DbError::Invitation(_) => ApiError::NotFound,
            DbError::Immutable => ApiError::Conflict {
                code: "immutable",
                detail: "Published versions cannot be changed; publish a new one.".into(),
            },
            DbError::IllegalTransition("run") => {
                ApiError::Conflict { code: "run_finished", detail: "The run has already finished.".into() }
            }
            DbError::IllegalTransition("invoice") => ApiError::Conflict {
                code: "invoice_final",
                detail: "The invoice is paid or void and cannot change.".into(),
            },
            DbError::IllegalTransition(_) => ApiError::Conflict {
                code: "subscription_state",
                detail: "The subscription cannot move to that state from its current one.".into(),
            },
            DbError::ContentNotAllowed => ApiError::Conflict {
                code: "data_mode_forbids_content",
                detail: "This organization's data mode is metadata_only: content is not stored.".into(),
            },
            DbError::InvalidValue(cause) => {
                tracing::info!(error = %cause, "a value the database cannot take");
                ApiError::Validation(vec![FieldError::new(
                    "request",
                    "contains a value out of range or not representable (e.g. a NUL character)",
                )])
            }
            DbError::Other(cause) => ApiError::Internal(cause),
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(err: FieldError) -> ApiError {
        ApiError::Validation(vec![err])
    }
}
