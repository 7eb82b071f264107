//! Builds the HTTP server. `Application::build` binds the listener first, so tests can start
//! the real server on port 0 and ask which port it got.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context as _;
use tracing_actix_web::TracingLogger;
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::api::ApiError;
use crate::api::{self, AppState};
use crate::auth::clock::{Clock, SystemClock};
use crate::auth::keys::SigningKeys;
use crate::auth::sessions::SessionService;
use crate::auth::signin::SignInProviders;
use crate::auth::{Authenticator, TokenValidator};
use crate::config::{Environment, Settings};
use crate::db;
use crate::http::middleware::{RequestContext, TenantryRootSpan};

pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    edge: web::Data<crate::http::Edge>,
}

/// Our signing keys: the current one is generated on first use in development and required in
/// production; retired ones must exist.
pub fn signing_keys(settings: &Settings) -> anyhow::Result<Arc<SigningKeys>> {
    let may_generate = settings.environment == Environment::Development;
    Ok(Arc::new(SigningKeys::load(&settings.auth, may_generate)?))
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// As `build`, with the clock sessions are timed by (tests move it forward).
    pub async fn build_with_clock(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Application> {
        let connector = db::app_connector(&settings)?;
        let pool =
            db::app_pool(&connector, settings.pool_size, Duration::from_millis(settings.pool_timeout_ms))?;
        db::check::refuse_privileged_app_role(&pool).await?;
        let keys = signing_keys(&settings)?;
        let master_keys = Arc::new(settings.master_keys()?);
        let flags = Arc::new(crate::flags::FlagCache::default());
        let standing = Arc::new(crate::flags::StandingCache::default());
        {
            // Every server hears of flag and standing changes made anywhere. On (re)connection
            // both caches are emptied: notifications sent while disconnected are lost.
            let (flags, standing) = (flags.clone(), standing.clone());
            let (on_connect_flags, on_connect_standing) = (flags.clone(), standing.clone());
            tokio::spawn(db::notify::listen(
                db::listen_connector(&settings)?,
                &["tenantry_flags", "tenantry_standing"],
                move || {
                    on_connect_flags.invalidate(None);
                    on_connect_standing.invalidate(None);
                },
                move |channel, payload| match channel {
                    "tenantry_flags" => flags.on_notification(payload),
                    _ => standing.invalidate(Some(payload)),
                },
            ));
        }
        let validator = TokenValidator::new(&settings.auth, keys.clone())?;
        let db = db::Db::from_settings(pool, &connector, &settings);
        let sessions = SessionService::new(db.clone(), keys.clone(), &settings.auth, clock.clone());
        let sign_in = SignInProviders::new(&settings.auth, clock.clone())?;
        let auth = Authenticator::new(
            validator,
            settings.auth.token_cache_capacity,
            sessions.idle_timeout(),
            db.clone(),
        );
        let listener =
            TcpListener::bind(&settings.listen).with_context(|| format!("binding {}", settings.listen))?;
        let port = listener.local_addr()?.port();
        let workers =
            settings.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        let max_body = settings.max_body_bytes;
        let usage = Arc::new(crate::usage::UsageMeter::default());
        {
            let (usage, db) = (usage.clone(), db.clone());
            let every = Duration::from_secs(settings.usage_flush_secs.max(1));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    if let Err(e) = usage.flush(&db).await {
                        tracing::warn!(error = %e, "writing usage counts failed; kept for the next flush");
                    }
                }
            });
        }
        let rate_limits = Arc::new(crate::http::ratelimit::RateLimits::new(&settings.rate_limits)?);
        {
            let rate_limits = rate_limits.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    rate_limits.retain_recent();
                }
            });
        }
        let state = web::Data::new(AppState {
            db,
            auth,
            sessions,
            sign_in,
            keys,
            clock,
            settings: Arc::new(settings),
            readiness: Default::default(),
            master_keys,
            flags,
            standing,
            usage: usage.clone(),
            export_slots: tokio::sync::Semaphore::new(api::exports::CONCURRENT_EXPORTS),
        });
        let edge = web::Data::new(crate::http::Edge {
            metrics: crate::http::metrics::Metrics::new(&state.db.pool_wait),
            rate_limits,
        });
        let shared_state = state.clone();
        let shared_edge = edge.clone();
        // One document: what /api/v1/openapi.json serves and where 405's `Allow` comes from.
        let document = api::openapi_json();
        let routes = web::Data::new(crate::http::methods::Routes::from_openapi(&document));
        let openapi_json = web::Data::new(api::OpenApiJson(document));
        let tls = state.settings.tls.as_ref().map(tls_config).transpose()?;
        let cors_origins = state.settings.cors_allowed_origins.clone();
        let server = HttpServer::new(move || {
            let app = App::new()
                .app_data(state.clone())
                .app_data(edge.clone())
                .app_data(routes.clone())
                .app_data(openapi_json.clone())
                .configure(|cfg| api::extractor_config(cfg, max_body))
                .wrap(actix_web::middleware::from_fn(crate::http::middleware::time_limit))
                .wrap(actix_web::middleware::from_fn(crate::http::idempotency::idempotency))
                .wrap(actix_web::middleware::from_fn(crate::http::ratelimit::rate_limit))
                .wrap(cors(&cors_origins))
                .wrap(actix_web::middleware::from_fn(crate::http::compression::compress))
                .wrap(actix_web::middleware::from_fn(crate::http::methods::methods))
                .wrap(TracingLogger::<TenantryRootSpan>::new())
                .wrap(RequestContext);
            let (app, _) = api::build_api(app);
            // The token pasted into Authorize survives a reload of the page.
            let swagger = Config::from("/api/v1/openapi.json").persist_authorization(true);
            app.service(SwaggerUi::new("/swagger-ui/{_:.*}").config(swagger))
                .route("/swagger-ui", web::get().to(|| redirect("/swagger-ui/")))
                .route("/metrics", web::get().to(crate::http::metrics::serve))
                .configure(api::console::routes)
                .route("/", web::get().to(|| redirect("/swagger-ui/")))
                .default_service(web::to(|| async { Err::<HttpResponse, _>(ApiError::NotFound) }))
        })
        .workers(workers)
        // Signals are ours (`shutdown_signal`): actix-server stops at once on SIGINT.
        .disable_signals()
        // On shutdown: stop accepting, let requests in flight finish (up to 30 s).
        .shutdown_timeout(30);
        let server = match tls {
            Some(config) => server.listen_rustls_0_23(listener, config)?,
            None => server.listen(listener)?,
        }
        .run();
        Ok(Application { port, server, state: shared_state, edge: shared_edge })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The state the handlers share (tests use it to start sessions and read counters).
    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// The middleware's own state: its metrics (the tests read which statuses were answered).
    pub fn edge(&self) -> web::Data<crate::http::Edge> {
        self.edge.clone()
    }

    /// Serves until SIGTERM or SIGINT, then drains: no new connections, requests in flight
    /// finish (up to 30 s), the last usage counts are written.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let server = self.server;
        tokio::pin!(server);
        let result = tokio::select! {
            result = &mut server => result,
            () = shutdown_signal() => {
                tracing::info!("shutting down: draining requests in flight");
                // The command is sent now; polling the server carries it out (awaiting the
                // returned future alone would wait for a server nobody polls).
                let (result, ()) = tokio::join!(&mut server, handle.stop(true));
                result
            }
        };
        // The last counts, before the process goes.
        if let Err(e) = self.state.usage.flush(&self.state.db).await {
            tracing::warn!(error = %e, "writing the last usage counts failed");
        }
        result
    }
}

/// Completes on SIGTERM (what orchestrators send) or SIGINT (Ctrl-C). The server drains and the
/// worker finishes or releases its runs on either.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!(signal = "SIGTERM", "stopping"),
                    _ = int.recv() => tracing::info!(signal = "SIGINT", "stopping"),
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn redirect(to: &'static str) -> HttpResponse {
    HttpResponse::PermanentRedirect().insert_header(("Location", to)).finish()
}

/// CORS for the configured origins only. Other origins get no CORS headers (the browser then
/// refuses the response), and same-origin requests (Swagger UI) are unaffected.
fn cors(origins: &[String]) -> actix_cors::Cors {
    let mut cors = actix_cors::Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE"])
        .allowed_headers([
            actix_web::http::header::AUTHORIZATION,
            actix_web::http::header::CONTENT_TYPE,
            actix_web::http::header::HeaderName::from_static("idempotency-key"),
            actix_web::http::header::HeaderName::from_static("x-request-id"),
            actix_web::http::header::IF_MATCH,
            actix_web::http::header::IF_NONE_MATCH,
            actix_web::http::header::ACCEPT,
        ])
        .expose_headers([
            "x-request-id",
            "location",
            "retry-after",
            "idempotent-replayed",
            "etag",
            "link",
            "ratelimit",
            "ratelimit-policy",
        ])
        .max_age(600)
        .block_on_origin_mismatch(false);
    for origin in origins {
        cors = cors.allowed_origin(origin);
    }
    cors
}

/// rustls with TLS 1.2 and 1.3 only (the defaults), aws-lc-rs, our certificate chain and key;
/// actix adds ALPN for HTTP/2 and HTTP/1.1.
fn tls_config(tls: &crate::config::TlsSettings) -> anyhow::Result<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&tls.cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading the TLS certificate chain {}", tls.cert_file.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", tls.cert_file.display());
    let key = PrivateKeyDer::from_pem_file(&tls.key_file)
        .with_context(|| format!("reading the TLS private key {}", tls.key_file.display()))?;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?)
}
