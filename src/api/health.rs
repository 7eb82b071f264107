//! Liveness (no database) and readiness: the database answers as the app role, migrations are
//! at this binary's version, and the catalog check passes. Readiness is cached for a few
//! seconds so probes cannot load the database.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::{HttpResponse, get, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::db::check;

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthResponse {
    /// Always `ok`.
    pub status: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReadinessResponse {
    /// `ready` or `not_ready`.
    pub status: String,
    pub checks: ReadinessChecks,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReadinessChecks {
    pub database: CheckResult,
    pub migrations: CheckResult,
    pub policies: CheckResult,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckResult {
    pub ok: bool,
    pub detail: String,
}

#[derive(Default)]
pub struct ReadinessCache(Mutex<Option<(Instant, ReadinessResponse)>>);

const READINESS_TTL: Duration = Duration::from_secs(2);

/// Liveness: the process is up. Never touches the database.
#[utoipa::path(tag = "health", responses((status = 200, description = "Alive", body = HealthResponse)), security(()))]
#[get("/health")]
pub async fn health() -> web::Json<HealthResponse> {
    web::Json(HealthResponse { status: "ok".into() })
}

/// Readiness: database reachable as the app role, migrations current, policy check passing.
#[utoipa::path(
    tag = "health",
    path = "/health/ready",
    responses(
        (status = 200, description = "Ready", body = ReadinessResponse),
        (status = 503, description = "Not ready", body = ReadinessResponse),
    ),
    security(())
)]
#[get("/health/ready")]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let report = readiness_report(&state).await;
    if report.status == "ready" {
        HttpResponse::Ok().json(report)
    } else {
        HttpResponse::ServiceUnavailable().json(report)
    }
}

/// The readiness checks, evaluated at most once per `READINESS_TTL` (probes and scrapes share
/// the answer).
pub async fn readiness_report(state: &AppState) -> ReadinessResponse {
    let cached = state
        .readiness
        .0
        .lock()
        .ok()
        .and_then(|c| c.as_ref().filter(|(at, _)| at.elapsed() < READINESS_TTL).map(|(_, r)| r.clone()));
    match cached {
        Some(r) => r,
        None => {
            let r = evaluate(state).await;
            if let Ok(mut c) = state.readiness.0.lock() {
                *c = Some((Instant::now(), r.clone()));
            }
            r
        }
    }
}

async fn evaluate(state: &AppState) -> ReadinessResponse {
    let fail = |detail: String| CheckResult { ok: false, detail };
    let checks = match check::readiness(&state.db).await {
        Err(e) => ReadinessChecks {
            database: fail(format!("unreachable: {}", e.kind())),
            migrations: fail("unknown".into()),
            policies: fail("unknown".into()),
        },
        Ok(r) => ReadinessChecks {
            database: CheckResult { ok: true, detail: format!("connected as {}", r.role) },
            // At or ahead of this binary: during a rolling deploy the new release migrates
            // (expand-only) while this one still serves.
            migrations: CheckResult {
                ok: r.applied_version >= r.expected_version,
                detail: match r.applied_version.cmp(&r.expected_version) {
                    std::cmp::Ordering::Less => {
                        format!(
                            "applied {} of {}: run `tenantry migrate`",
                            r.applied_version, r.expected_version
                        )
                    }
                    std::cmp::Ordering::Equal => {
                        format!("applied {} of {}", r.applied_version, r.expected_version)
                    }
                    std::cmp::Ordering::Greater => format!(
                        "applied {}, ahead of this binary's {} (a newer release migrated; compatible by expand/contract)",
                        r.applied_version, r.expected_version
                    ),
                },
            },
            policies: CheckResult {
                ok: r.violations.is_empty(),
                detail: if r.violations.is_empty() {
                    "no violations".into()
                } else {
                    format!("{} violation(s); run `tenantry check`", r.violations.len())
                },
            },
        },
    };
    let ok = checks.database.ok && checks.migrations.ok && checks.policies.ok;
    ReadinessResponse { status: if ok { "ready" } else { "not_ready" }.into(), checks }
}
