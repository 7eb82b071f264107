//! The web console at `/console`: a small static app (no build step; `console/` holds its three
//! files, compiled into the binary) that calls the public API like any client, with the same
//! permissions. What is its own is the browser session:
//!
//! - Signing in (through an identity provider, or with a pasted token in development) starts a
//!   console session: an `HttpOnly`, `SameSite=Strict` cookie (`Secure` and `__Host-` outside
//!   development) whose secret only the session row's hash knows. No access or refresh token is
//!   issued, so none can reach the page's script or storage.
//! - The API takes that cookie in place of a bearer token (`extract::presented_credential`); a
//!   request that changes something must also carry the session's CSRF token, which the script
//!   reads from `GET /console/session`.
//! - Every console response carries a strict Content-Security-Policy: scripts, styles and
//!   requests from this origin only, nothing inline, no framing.
//!
//! These routes are the console's, not the public API's: they are not in the OpenAPI document.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, Presented, RequestMeta, presented_credential};
use super::{AppState, sessions::end_current_session, signin};
use crate::api::ApiError;
use crate::auth::Principal;
use crate::auth::sessions::{ConsoleSession, SessionError, SignInContext, console_csrf_token};
use crate::config::Environment;
use crate::db::{DbError, TenantTx};

/// The session cookie in development (plain HTTP).
pub const COOKIE: &str = "tenantry_console";
/// The session cookie elsewhere: `__Host-` makes the browser insist on Secure, Path=/ and no
/// Domain, so a sibling subdomain cannot plant or overwrite it.
pub const SECURE_COOKIE: &str = "__Host-tenantry_console";
/// The header a cookie-authenticated state-changing request carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Nothing but this origin's own files; no inline script or style, no framing, no plugins.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const INDEX_HTML: &str = include_str!("../../console/index.html");
const APP_JS: &str = include_str!("../../console/app.js");
const APP_CSS: &str = include_str!("../../console/app.css");

pub fn is_session_cookie(name: &str) -> bool {
    name == COOKIE || name == SECURE_COOKIE
}

fn secure(state: &AppState) -> bool {
    state.settings.environment != Environment::Development
}

/// The cookie of a started console session.
pub fn session_cookie<'a>(state: &AppState, session: &'a ConsoleSession) -> Cookie<'a> {
    let name = if secure(state) { SECURE_COOKIE } else { COOKIE };
    Cookie::build(name, session.cookie.as_str())
        .path("/")
        .http_only(true)
        .secure(secure(state))
        .same_site(SameSite::Strict)
        .max_age(actix_web::cookie::time::Duration::seconds(session.max_age_secs))
        .finish()
}

fn removed_cookie(state: &AppState) -> Cookie<'static> {
    let name = if secure(state) { SECURE_COOKIE } else { COOKIE };
    let mut cookie = Cookie::build(name, "").path("/").secure(secure(state)).finish();
    cookie.make_removal();
    cookie
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/console", web::get().to(|| async { redirect("/console/") }))
        .route("/console/", web::get().to(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/console/app.js", web::get().to(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/console/app.css", web::get().to(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .route("/console/session", web::get().to(session))
        .route("/console/session/token", web::post().to(sign_in_with_token))
        .route("/console/session/logout", web::post().to(sign_out))
        .route("/console/login/{provider}", web::get().to(sign_in_start));
}

/// The headers every console response carries (the edge adds nosniff, DENY and no-referrer).
fn console_headers(res: &mut HttpResponse) {
    let headers = res.headers_mut();
    headers
        .insert(header::CONTENT_SECURITY_POLICY, header::HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        header::HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        header::HeaderName::from_static("cross-origin-resource-policy"),
        header::HeaderValue::from_static("same-origin"),
    );
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    // Revalidated on every load: a new release's files are never mixed with an old one's.
    let mut res = HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body);
    console_headers(&mut res);
    res
}

fn redirect(to: &'static str) -> HttpResponse {
    let mut res = HttpResponse::SeeOther().insert_header((header::LOCATION, to)).finish();
    console_headers(&mut res);
    res
}

/// Refuses what a browser marks as sent from another site (`Sec-Fetch-Site`), for the routes
/// that start or end a session: with the cookie's SameSite=Strict and the JSON body (which a
/// cross-site form cannot send), a login CSRF has no way in.
fn same_origin(req: &HttpRequest) -> Result<(), ApiError> {
    match req.headers().get("sec-fetch-site").map(|v| v.as_bytes()) {
        None | Some(b"same-origin") => Ok(()),
        Some(_) => Err(ApiError::CsrfRejected),
    }
}

#[derive(Serialize)]
struct SessionInfo {
    signed_in: bool,
    /// Whether the sign-in page offers pasting a token (development only).
    token_sign_in: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<uuid::Uuid>,
    /// Send it as `X-CSRF-Token` with every request that changes something.
    #[serde(skip_serializing_if = "Option::is_none")]
    csrf_token: Option<String>,
}

/// The console's session: whether the cookie is live, and its CSRF token. Answers 200 either
/// way (the console then shows its sign-in page), never with a token of any kind.
async fn session(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let token_sign_in = state.settings.environment == Environment::Development;
    let mut info = SessionInfo { signed_in: false, token_sign_in, session_id: None, csrf_token: None };
    if let Some((cookie, Presented::ConsoleCookie)) = presented_credential(req.headers()) {
        match state.auth.authenticate(&cookie).await {
            Ok(Principal::User(user)) => {
                // The session itself, not the cache's memory of its cookie: signed out on another
                // instance a moment ago is signed out here.
                let actor = crate::db::Actor {
                    user: Some(user.user_id),
                    session: user.session_id,
                    ..Default::default()
                };
                match TenantTx::begin_user(&state.db, actor).await {
                    Ok(tx) => tx.commit().await?,
                    Err(DbError::Unauthenticated) => return Ok(session_response(info)),
                    Err(e) => return Err(e.into()),
                }
                info = SessionInfo {
                    signed_in: true,
                    token_sign_in,
                    session_id: user.session_id,
                    csrf_token: Some(console_csrf_token(&cookie)),
                }
            }
            Ok(Principal::ApiKey(_))
            | Err(crate::auth::AuthError::Token(_) | crate::auth::AuthError::ApiKey(_)) => {}
            Err(crate::auth::AuthError::Database(e)) => return Err(e.into()),
        }
    }
    Ok(session_response(info))
}

fn session_response(info: SessionInfo) -> HttpResponse {
    let mut res = HttpResponse::Ok().json(info);
    console_headers(&mut res);
    res
}

/// A new sign-in from a browser that still holds a console cookie ends that cookie's session
/// first: one live session per browser, and a cookie planted before sign-in (session fixation)
/// never becomes a signed-in one.
pub(crate) async fn end_presented_session(state: &AppState, req: &HttpRequest) -> Result<(), ApiError> {
    let Some((cookie, Presented::ConsoleCookie)) = presented_credential(req.headers()) else { return Ok(()) };
    let principal = match state.auth.authenticate(&cookie).await {
        Ok(principal @ Principal::User(_)) => principal,
        Ok(Principal::ApiKey(_))
        | Err(crate::auth::AuthError::Token(_) | crate::auth::AuthError::ApiKey(_)) => {
            return Ok(());
        }
        Err(crate::auth::AuthError::Database(e)) => return Err(e.into()),
    };
    let meta = RequestMeta::of(req);
    match end_current_session(state, &principal, &meta).await {
        Ok(()) | Err(ApiError::Unauthorized) => Ok(()),
        Err(e) => Err(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenSignIn {
    /// An access token of a user (e.g. one `make run` prints).
    token: String,
}

/// Development only: a pasted user access token starts a console session for its user. The
/// token is checked like any bearer token and kept nowhere.
async fn sign_in_with_token(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: ApiJson<TokenSignIn>,
) -> Result<HttpResponse, ApiError> {
    if state.settings.environment != Environment::Development {
        return Err(ApiError::NotFound);
    }
    same_origin(&req)?;
    let token = body.into_inner().token;
    let token = token.trim();
    if token.is_empty() || token.len() > 8192 {
        return Err(ApiError::invalid_field("token", "must be an access token"));
    }
    let user = match state.auth.authenticate(token).await {
        Ok(Principal::User(user)) => user,
        Ok(Principal::ApiKey(_)) => {
            return Err(ApiError::invalid_field(
                "token",
                "is an API key; the console needs a person's token",
            ));
        }
        Err(crate::auth::AuthError::Database(e)) => return Err(e.into()),
        Err(_) => return Err(ApiError::Unauthorized),
    };
    let user_agent = req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok());
    let ip = crate::request::client_addr(&req, &state.settings.trusted_proxies);
    let context = SignInContext { provider: "development-token", user_agent, ip };
    end_presented_session(&state, &req).await?;
    let session =
        state.sessions.start_console_verified(user.user_id, &context).await.map_err(|e| match e {
            SessionError::Database(e) => ApiError::from(e),
            other => ApiError::Internal(anyhow::anyhow!("starting a console session: {other}")),
        })?;
    let mut res = HttpResponse::NoContent().cookie(session_cookie(&state, &session)).finish();
    console_headers(&mut res);
    Ok(res)
}

/// Signs out: the session ends in the database (at once, on every instance) and the browser
/// forgets the cookie. Needs the cookie and its CSRF token.
async fn sign_out(
    state: web::Data<AppState>,
    req: HttpRequest,
    principal: Principal,
    meta: RequestMeta,
) -> Result<HttpResponse, ApiError> {
    same_origin(&req)?;
    if !matches!(presented_credential(req.headers()), Some((_, Presented::ConsoleCookie))) {
        return Err(ApiError::BadRequest {
            code: "no_console_session",
            detail: "This signs out of the console; API clients use POST /api/v1/auth/logout.".into(),
        });
    }
    end_current_session(&state, &principal, &meta).await?;
    let mut res = HttpResponse::NoContent().cookie(removed_cookie(&state)).finish();
    console_headers(&mut res);
    Ok(res)
}

#[derive(Deserialize)]
struct LoginQuery {
    login_hint: Option<String>,
}

/// Starts signing in to the console through an identity provider (a browser navigation).
async fn sign_in_start(
    state: web::Data<AppState>,
    provider: web::Path<String>,
    query: web::Query<LoginQuery>,
) -> Result<HttpResponse, ApiError> {
    let hint = query.login_hint.as_deref().filter(|h| h.len() <= 320);
    let started =
        state.sign_in.login_for_console(&state.db, &provider, hint).await.map_err(signin::sign_in_error)?;
    Ok(signin::redirect_to_provider(&state, started))
}
