//! The REST API under `/api/v1`: one module per resource, each holding its handlers, their
//! OpenAPI annotations, request/response types and SQL. Routes are collected from the handlers
//! by utoipa-actix-web, so the OpenAPI document can never miss one.

pub mod admin;
pub mod api_keys;
pub mod audit;
pub mod authz;
pub mod billing;
pub mod conditional;
pub mod console;
pub mod contract;
pub mod csv;
pub mod data_keys;
pub mod events;
pub mod exports;
pub mod extract;
pub mod flags;
pub mod health;
pub mod invitations;
pub mod ledger;
pub mod me;
pub mod members;
pub mod orgs;
pub mod pagination;
pub mod permissions;
pub mod problem;
pub mod provider_grants;
pub mod provider_keys;
pub mod roles;
pub mod runs;
pub mod sessions;
pub mod signin;
pub mod usage;
pub mod webhook_deliveries;
pub mod webhook_endpoints;
pub mod webhooks;
pub mod workflows;
pub mod workspaces;

use std::sync::Arc;

use actix_web::web;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_actix_web::AppExt as _;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::Authenticator;
use crate::auth::clock::Clock;
use crate::auth::keys::SigningKeys;
use crate::auth::sessions::SessionService;
use crate::auth::signin::SignInProviders;
use crate::config::Settings;
use crate::domain::{Membership, Permission};
pub use problem::ApiError;

/// Everything a handler may use. No globals: this travels in actix's app data.
pub struct AppState {
    pub db: crate::db::Db,
    pub auth: Authenticator,
    pub sessions: SessionService,
    pub sign_in: SignInProviders,
    pub keys: Arc<SigningKeys>,
    pub clock: Arc<dyn Clock>,
    pub settings: Arc<Settings>,
    pub readiness: health::ReadinessCache,
    /// Wrap and unwrap organizations' data keys (provider keys).
    pub master_keys: Arc<crate::crypto::MasterKeys>,
    /// Organizations' flag rules, invalidated through LISTEN/NOTIFY.
    pub flags: Arc<crate::flags::FlagCache>,
    /// Callers' standing in organizations, for flag evaluation only (see `crate::flags`).
    pub standing: Arc<crate::flags::StandingCache>,
    /// Requests counted since the last flush (`crate::usage`).
    pub usage: Arc<crate::usage::UsageMeter>,
    /// Export jobs this server may run at once (`exports::CONCURRENT_EXPORTS`).
    pub export_slots: tokio::sync::Semaphore,
}

/// Set in a response's extensions by a handler whose body shows a one-time secret (a new API
/// key, an invitation token): the idempotency middleware then keeps no copy of the body.
#[derive(Debug, Clone, Copy)]
pub struct OneTimeSecret;

/// The handler-side permission check, made before any write so the caller gets a 403 naming
/// the permission; the write policies check the same permission again in the database.
pub fn require(membership: &Membership, permission: Permission) -> Result<(), ApiError> {
    if membership.has(permission) { Ok(()) } else { Err(ApiError::forbidden(permission)) }
}

/// Routes about a person (their organizations, profile, sessions) are not for API keys.
pub fn require_user(principal: &crate::auth::Principal) -> Result<&crate::auth::UserPrincipal, ApiError> {
    principal.as_user().ok_or(ApiError::UserRequired)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tenantry",
        description = "Multi-tenant SaaS backend. PostgreSQL row-level security isolates every \
                       organization: another organization's resources answer 404, exactly like \
                       ids that do not exist. Errors are RFC 9457 problem documents.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    components(schemas(crate::api::problem::Problem, crate::api::problem::ProblemField)),
    tags(
        (name = "health", description = "Liveness and readiness"),
        (name = "me", description = "The caller"),
        (name = "organizations", description = "Organizations (tenants)"),
        (name = "members", description = "Members of an organization and their roles"),
        (name = "workspaces", description = "Workspaces inside an organization"),
        (name = "api_keys", description = "Organization API keys for services"),
        (name = "auth", description = "Tokens and sessions"),
        (name = "audit", description = "The organization's tamper-evident audit log"),
        (name = "roles", description = "Permissions and roles"),
        (name = "admin", description = "Platform administration (platform admins only)"),
        (name = "workflows", description = "Workflows, their drafts and immutable published versions"),
        (name = "billing", description = "Plans, the subscription, invoices and the ledger"),
        (name = "flags", description = "Feature flags: evaluate for the caller, configure per organization"),
        (name = "provider_keys", description = "Bring-your-own LLM provider keys, encrypted, shown masked"),
        (name = "runs", description = "Workflow runs: queued, executed by `tenantry worker`, cancellable"),
        (name = "events", description = "What happened in an organization, written with the change itself"),
        (name = "webhooks", description = "Outbound webhooks: endpoints that receive the organization's events, signed (Standard Webhooks)"),
    )
)]
struct BaseDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token from `tenantry token` or a trusted identity provider.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Registers every API route; shared by the server and by `openapi_document()`.
pub fn routes(cfg: &mut ServiceConfig) {
    cfg.service(health::health)
        .service(health::ready)
        .service(me::get_me)
        .service(me::delete_me)
        .service(permissions::list_permissions)
        .service(events::list_event_types)
        .service(events::list_events)
        .service(events::get_event)
        .service(webhook_endpoints::create_webhook_endpoint)
        .service(webhook_endpoints::list_webhook_endpoints)
        .service(webhook_endpoints::get_webhook_endpoint)
        .service(webhook_endpoints::update_webhook_endpoint)
        .service(webhook_endpoints::delete_webhook_endpoint)
        .service(webhook_endpoints::rotate_webhook_secret)
        .service(webhook_deliveries::list_webhook_deliveries)
        .service(webhook_deliveries::get_webhook_delivery)
        .service(webhook_deliveries::retry_webhook_delivery)
        .service(webhook_deliveries::test_webhook_endpoint)
        .service(orgs::create_organization)
        .service(orgs::list_organizations)
        .service(orgs::get_organization)
        .service(orgs::update_organization)
        .service(orgs::delete_organization)
        .service(members::list_members)
        .service(members::get_member)
        .service(members::add_member)
        .service(members::update_member)
        .service(members::remove_member)
        .service(members::get_member_workspaces)
        .service(members::update_member_workspaces)
        .service(provider_grants::list_provider_grants)
        .service(provider_grants::get_provider_grant)
        .service(provider_grants::create_provider_grant)
        .service(provider_grants::delete_provider_grant)
        .service(workspaces::list_workspaces)
        .service(workspaces::create_workspace)
        .service(workspaces::get_workspace)
        .service(workspaces::update_workspace)
        .service(workspaces::delete_workspace)
        .service(workflows::create_workflow)
        .service(workflows::list_workflows)
        .service(workflows::get_workflow)
        .service(workflows::update_workflow)
        .service(workflows::archive_workflow)
        .service(workflows::create_workflow_version)
        .service(workflows::list_workflow_versions)
        .service(workflows::get_workflow_version)
        .service(runs::start_run)
        .service(runs::list_runs)
        .service(runs::get_run)
        .service(runs::cancel_run)
        .service(provider_keys::list_provider_keys)
        .service(provider_keys::get_provider_key)
        .service(provider_keys::put_provider_key)
        .service(provider_keys::delete_provider_key)
        .service(provider_keys::verify_provider_key)
        .service(billing::list_plans)
        .service(billing::get_subscription)
        .service(billing::put_subscription)
        .service(billing::delete_subscription)
        .service(billing::list_invoices)
        .service(billing::get_invoice)
        .service(ledger::list_ledger_balances)
        .service(ledger::list_journal)
        .service(usage::get_usage)
        .service(webhooks::receive_stripe_webhook)
        .service(webhooks::receive_razorpay_webhook)
        .service(webhooks::list_webhook_events)
        .service(flags::evaluate_flags)
        .service(flags::list_flags)
        .service(flags::put_flag_config)
        .service(flags::delete_flag_config)
        .service(flags::list_platform_flags)
        .service(flags::put_platform_flag)
        .service(flags::put_flag_target)
        .service(flags::delete_flag_target)
        .service(admin::list_all_organizations)
        .service(admin::suspend_organization)
        .service(admin::reactivate_organization)
        .service(admin::update_organization_region)
        .service(admin::get_system_health)
        .service(exports::create_export)
        .service(exports::get_export)
        .service(exports::get_export_file)
        .service(invitations::create_invitation)
        .service(invitations::create_invitations)
        .service(invitations::list_invitations)
        .service(invitations::get_invitation)
        .service(invitations::delete_invitation)
        .service(invitations::accept_invitation)
        .service(roles::list_roles)
        .service(roles::get_role)
        .service(roles::create_role)
        .service(roles::update_role)
        .service(roles::delete_role)
        .service(audit::list_audit_events)
        .service(audit::verify_audit_events)
        .service(api_keys::create_api_key)
        .service(api_keys::list_api_keys)
        .service(api_keys::get_api_key)
        .service(api_keys::delete_api_key)
        .service(signin::list_providers)
        .service(signin::sign_in_start)
        .service(signin::sign_in_callback)
        .service(sessions::refresh_session)
        .service(sessions::sign_out)
        .service(sessions::list_sessions)
        .service(sessions::delete_session);
}

pub const API_PREFIX: &str = "/api/v1";

/// Builds the app's routes and the OpenAPI document from the same registrations. The document
/// itself is served at `/api/v1/openapi.json` from `openapi_json` in app data (it has to live
/// inside the `/api/v1` scope, and it is not an API operation of its own).
pub fn build_api<T>(app: actix_web::App<T>) -> (actix_web::App<T>, utoipa::openapi::OpenApi)
where
    T: actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Error = actix_web::Error,
            InitError = (),
        >,
{
    app.into_utoipa_app()
        .openapi(BaseDoc::openapi())
        .service(sessions::get_jwks)
        .service(
            utoipa_actix_web::scope(API_PREFIX)
                .configure(routes)
                .map(|scope| scope.route("/openapi.json", web::get().to(serve_openapi))),
        )
        .split_for_parts()
}

/// The generated document, rendered once at start-up.
pub struct OpenApiJson(pub String);

async fn serve_openapi(doc: web::Data<OpenApiJson>) -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok().content_type("application/json").body(doc.0.clone())
}

/// The OpenAPI document, exactly as the server serves it.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    build_api(actix_web::App::new()).1
}

/// The served document: the handlers' annotations completed by `contract` (what every
/// operation answers alike). Pretty JSON with a trailing newline: what `openapi/openapi.json`
/// holds.
pub fn openapi_json() -> String {
    let mut doc = serde_json::to_value(openapi_document()).expect("the document is JSON");
    contract::complete(&mut doc);
    let mut json = serde_json::to_string_pretty(&doc).expect("the document is JSON");
    json.push('\n');
    json
}

/// JSON, path and query extractor settings: every rejection becomes a problem document.
pub fn extractor_config(cfg: &mut web::ServiceConfig, max_body_bytes: usize) {
    cfg.app_data(web::PayloadConfig::new(max_body_bytes))
        .app_data(extract::path_config())
        .app_data(extract::query_config());
}
