//! Sign-in through identity providers: list them, start (redirect to the provider), and the
//! callback that finishes the flow, starts a session and hands out our tokens.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, web};
use serde::Deserialize;
use utoipa::IntoParams;

use super::AppState;
use super::sessions::TokenResponse;
use crate::api::ApiError;
use crate::api::problem::Problem;
use crate::auth::sessions::{SessionError, SignInContext};
use crate::auth::signin::{BROWSER_COOKIE, CallbackParams, FOR_CONSOLE, ProviderInfo, SignInError};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ProviderPath {
    /// Provider name, as listed by `GET /api/v1/auth/providers`.
    pub provider: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LoginQuery {
    /// Where to send the browser after sign-in (must be registered in `auth.allowed_redirects`);
    /// the tokens then travel in the URL fragment. Without it the callback answers JSON.
    pub redirect_to: Option<String>,
    /// Passed to the provider to preselect an account.
    pub login_hint: Option<String>,
}

pub(crate) fn sign_in_error(e: SignInError) -> ApiError {
    match e {
        SignInError::UnknownProvider => ApiError::NotFound,
        SignInError::RedirectNotAllowed => {
            ApiError::invalid_field("redirect_to", "is not a registered redirect target")
        }
        SignInError::InvalidState => ApiError::BadRequest {
            code: "invalid_state",
            detail: "This sign-in attempt is unknown, expired or already used; start again.".into(),
        },
        SignInError::Refused(_) => ApiError::SignInFailed,
        SignInError::Unavailable(cause) => {
            tracing::warn!(%cause, "identity provider unavailable");
            ApiError::Unavailable
        }
        SignInError::Database(e) => e.into(),
    }
}

/// The identity providers people can sign in through.
#[utoipa::path(
    tag = "auth",
    responses((status = 200, description = "Configured providers", body = Vec<ProviderInfo>)),
    security(())
)]
#[get("/auth/providers")]
pub async fn list_providers(state: web::Data<AppState>) -> web::Json<Vec<ProviderInfo>> {
    web::Json(state.sign_in.list())
}

/// Start signing in: redirects (303) to the provider with PKCE, `state` and `nonce`.
#[utoipa::path(
    tag = "auth",
    params(ProviderPath, LoginQuery),
    responses(
        (status = 303, description = "Redirect to the provider"),
        (status = 404, description = "No such provider", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "redirect_to is not registered", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The provider cannot be reached", body = Problem, content_type = "application/problem+json"),
    ),
    security(())
)]
#[get("/auth/{provider}/login")]
#[tracing::instrument(skip_all, fields(provider = %path.provider))]
pub async fn sign_in_start(
    state: web::Data<AppState>,
    path: web::Path<ProviderPath>,
    query: web::Query<LoginQuery>,
) -> Result<HttpResponse, ApiError> {
    let hint = query.login_hint.as_deref().filter(|h| h.len() <= 320);
    let started = state
        .sign_in
        .login(&state.db, &path.provider, query.redirect_to.as_deref(), hint)
        .await
        .map_err(sign_in_error)?;
    Ok(redirect_to_provider(&state, started))
}

/// The redirect to the provider, with the cookie that binds the attempt to this browser (the
/// callback must come back with it). SameSite=Lax, so it is sent on the provider's top-level
/// redirect back to us.
pub(crate) fn redirect_to_provider(
    state: &AppState,
    started: crate::auth::signin::StartedSignIn,
) -> HttpResponse {
    let cookie = actix_web::cookie::Cookie::build(BROWSER_COOKIE, started.browser_secret)
        .path("/api/v1/auth")
        .http_only(true)
        .secure(state.settings.environment != crate::config::Environment::Development)
        .same_site(actix_web::cookie::SameSite::Lax)
        .max_age(actix_web::cookie::time::Duration::seconds(
            i64::try_from(state.settings.auth.login_attempt_ttl_secs).unwrap_or(600),
        ))
        .finish();
    HttpResponse::SeeOther().cookie(cookie).insert_header((header::LOCATION, started.url)).finish()
}

/// The provider's redirect back: finishes sign-in, starts a session, returns our tokens (JSON,
/// or a 303 to the registered `redirect_to` with the tokens in the fragment).
#[utoipa::path(
    tag = "auth",
    params(ProviderPath, CallbackParams),
    responses(
        (status = 200, description = "Signed in", body = TokenResponse),
        (status = 303, description = "Signed in; redirect to the registered target"),
        (status = 400, description = "Unknown, expired or replayed state", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "The provider's answer was refused", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such provider", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The provider cannot be reached", body = Problem, content_type = "application/problem+json"),
    ),
    security(())
)]
#[get("/auth/{provider}/callback")]
#[tracing::instrument(skip_all, fields(provider = %path.provider))]
pub async fn sign_in_callback(
    state: web::Data<AppState>,
    path: web::Path<ProviderPath>,
    query: web::Query<CallbackParams>,
    request: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let browser = request.cookie(BROWSER_COOKIE);
    let done = state
        .sign_in
        .callback(&state.db, &path.provider, &query, browser.as_ref().map(|c| c.value()))
        .await
        .map_err(sign_in_error)?;
    let user_agent = request.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok());
    let ip = crate::request::client_addr(&request, &state.settings.trusted_proxies);
    let context = SignInContext { provider: &done.provider, user_agent, ip };
    let failed = |e: SessionError| match e {
        SessionError::Database(e) => ApiError::from(e),
        other => ApiError::Internal(anyhow::anyhow!("starting a session: {other}")),
    };
    // The binding has done its work (the attempt is gone): the browser can forget it.
    let mut spent = actix_web::cookie::Cookie::build(BROWSER_COOKIE, "").path("/api/v1/auth").finish();
    spent.make_removal();
    // Started by the web console: a console session, its cookie, and no token at all.
    if done.redirect_to.as_deref() == Some(FOR_CONSOLE) {
        super::console::end_presented_session(&state, &request).await?;
        let session =
            state.sessions.start_console(done.user, done.completion, &context).await.map_err(failed)?;
        return Ok(HttpResponse::SeeOther()
            .cookie(spent)
            .cookie(super::console::session_cookie(&state, &session))
            .insert_header((header::LOCATION, "/console/"))
            .finish());
    }
    let pair = state.sessions.start(done.user, done.completion, &context).await.map_err(failed)?;
    let tokens = TokenResponse::from(pair);
    match done.redirect_to {
        Some(target) => {
            let fragment = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("access_token", &tokens.access_token)
                .append_pair("token_type", "Bearer")
                .append_pair("expires_in", &tokens.expires_in.to_string())
                .append_pair("refresh_token", &tokens.refresh_token)
                .finish();
            Ok(HttpResponse::SeeOther()
                .cookie(spent)
                .insert_header((header::LOCATION, format!("{target}#{fragment}")))
                .finish())
        }
        None => Ok(HttpResponse::Ok().cookie(spent).json(tokens)),
    }
}
