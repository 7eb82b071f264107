//! `tenantry worker`: drains the workflow run queue, and delivers webhooks (`crate::dispatcher`)
//! in loops of their own. Each run is claimed with
//! `app.claim_next_run()` (exclusive: `FOR UPDATE SKIP LOCKED`), then read and finished in
//! transactions acting as `Actor::worker(claim)`, so the run's own organization's policies decide
//! what the worker sees, exactly as for a request. Nothing is held open while a run executes; the
//! claim is renewed every third of its lease, and a renewal that fails (the run was cancelled or
//! re-claimed) abandons the run and discards its result.
//!
//! Actions a step may use: `core.echo` (returns its `with`, or the run's input), `core.fail`
//! (fails with `with.message`), `core.sleep` (waits `with.ms`, at most 10 minutes) and
//! `llm.chat` (`with: {provider, model, prompt?}`; the prompt defaults to the input's `prompt`),
//! which calls the provider with the workspace's own key. Keys are decrypted when the run is
//! loaded, only for the providers its steps use, and dropped when it ends. Anything else fails
//! the run with `unknown_action`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tokio::sync::Notify;
use tracing::Instrument as _;

use secrecy::SecretString;

use crate::api::workflows::{Step, WorkflowSpec};
use crate::config::{ProviderKeySettings, WorkerSettings};
use crate::crypto::MasterKeys;
use crate::db::queue::{self, Claim};
use crate::db::{Actor, Db, DbError, TenantTx};
use crate::domain::OrgId;
use crate::metrics::WorkerMetrics;
use crate::providers::{self, Provider};

/// Why a run failed: a machine-readable code always, the step and a message (content) if known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: &'static str,
    pub step: Option<String>,
    pub message: String,
}

impl Failure {
    fn at(code: &'static str, step: &str, message: impl Into<String>) -> Failure {
        Failure { code, step: Some(step.to_owned()), message: message.into() }
    }
}

/// What became of a claimed run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    /// Cancelled or re-claimed while it ran: nothing was written.
    Abandoned,
    /// Given back to the queue by a worker shutting down, its attempt returned.
    Released,
}

impl Outcome {
    /// The metrics' and spans' name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Abandoned => "abandoned",
            Outcome::Released => "released",
        }
    }
}

/// How a claimed execution ended.
enum Execution {
    Done(Result<Value, Failure>),
    /// The claim was lost (cancelled, or re-claimed after the lease ran out).
    Lost,
    /// The worker is shutting down and released the run.
    Released,
}

/// What `llm.chat` steps need: where providers are, and the run's workspace's keys (decrypted).
pub struct Providers<'a> {
    pub settings: &'a ProviderKeySettings,
    pub keys: HashMap<Provider, (SecretString, Option<String>)>,
}

/// The providers a definition's `llm.chat` steps name (unknown names fail at that step).
fn providers_used(spec: &WorkflowSpec) -> Vec<Provider> {
    let mut used: Vec<Provider> = spec
        .steps
        .iter()
        .filter(|s| s.uses == "llm.chat")
        .filter_map(|s| s.with.as_ref()?.get("provider")?.as_str().and_then(Provider::from_db))
        .collect();
    used.sort_by_key(|p| p.as_str());
    used.dedup();
    used
}

async fn llm_chat(step: &Step, input: &Value, providers: Option<&Providers<'_>>) -> Result<Value, Failure> {
    let with = step.with.as_ref();
    let field = |name: &str| with.and_then(|w| w.get(name)).and_then(Value::as_str);
    let Some(provider) = field("provider").and_then(Provider::from_db) else {
        return Err(Failure::at(
            "invalid_step",
            &step.id,
            "with.provider must be openai, azure_openai or anthropic",
        ));
    };
    let Some(model) = field("model").filter(|m| !m.is_empty() && m.len() <= 200) else {
        return Err(Failure::at("invalid_step", &step.id, "with.model is required"));
    };
    let Some(prompt) = field("prompt").or_else(|| input.get("prompt").and_then(Value::as_str)) else {
        return Err(Failure::at(
            "invalid_step",
            &step.id,
            "with.prompt, or a prompt in the input, is required",
        ));
    };
    let Some(providers) = providers else {
        return Err(Failure::at(
            "provider_unavailable",
            &step.id,
            "this worker has no provider configuration",
        ));
    };
    let Some((key, endpoint)) = providers.keys.get(&provider) else {
        return Err(Failure::at(
            "provider_key_missing",
            &step.id,
            format!("the workspace has no {} key", provider.as_str()),
        ));
    };
    let text = providers::chat(providers.settings, provider, key, endpoint.as_deref(), model, prompt)
        .await
        .map_err(|e| Failure::at("provider_failed", &step.id, e.to_string()))?;
    Ok(serde_json::json!({ "text": text }))
}

/// Runs a definition's steps in order (a step's `needs` are always earlier steps). The output is
/// each step's output by step id.
pub async fn execute(
    spec: &WorkflowSpec,
    input: &Value,
    providers: Option<&Providers<'_>>,
    metrics: Option<&WorkerMetrics>,
) -> Result<Value, Failure> {
    let mut outputs = Map::new();
    for step in &spec.steps {
        let started = Instant::now();
        let action = step_action(&step.uses);
        let output = execute_step(step, input, providers)
            .instrument(tracing::info_span!("step", step.action = action))
            .await;
        if let Some(metrics) = metrics {
            metrics.step_finished(action, output.is_ok(), started.elapsed());
        }
        outputs.insert(step.id.clone(), output?);
    }
    Ok(Value::Object(outputs))
}

/// A step's action as metrics and spans name it: a known action, else `other` (definitions are
/// input, so the set of names stays bounded).
fn step_action(uses: &str) -> &'static str {
    match uses {
        "core.echo" => "core.echo",
        "core.fail" => "core.fail",
        "core.sleep" => "core.sleep",
        "llm.chat" => "llm.chat",
        _ => "other",
    }
}

async fn execute_step(
    step: &Step,
    input: &Value,
    providers: Option<&Providers<'_>>,
) -> Result<Value, Failure> {
    let output = match step.uses.as_str() {
        "core.echo" => step.with.clone().unwrap_or_else(|| input.clone()),
        "core.fail" => {
            let message = step.with.as_ref().and_then(|w| w.get("message")).and_then(Value::as_str);
            return Err(Failure::at("step_failed", &step.id, message.unwrap_or("the step failed")));
        }
        "core.sleep" => {
            let ms = step.with.as_ref().and_then(|w| w.get("ms")).and_then(Value::as_u64);
            let Some(ms) = ms.filter(|ms| *ms <= 600_000) else {
                return Err(Failure::at("invalid_step", &step.id, "with.ms must be 0 to 600000"));
            };
            tokio::time::sleep(Duration::from_millis(ms)).await;
            serde_json::json!({ "slept_ms": ms })
        }
        "llm.chat" => llm_chat(step, input, providers).await?,
        other => {
            return Err(Failure::at("unknown_action", &step.id, format!("no action named {other:?}")));
        }
    };
    Ok(output)
}

/// Event retention: every worker deletes expired events once an hour (several workers doing so
/// only find less to delete).
async fn prune_events_hourly(db: Db, retention_days: u32) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every.tick().await;
        match crate::db::events::prune_events(&db, retention_days).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, retention_days, "expired events deleted"),
            Err(e) => tracing::warn!(error = %e, "worker: pruning events failed; retrying in an hour"),
        }
    }
}

/// The audit watchdog: verifies every chain now and then every `every`, and exports the result.
/// A broken chain is logged (target `tenantry::security`) with the organizations it is in.
async fn verify_audit_chains_every(db: Db, metrics: WorkerMetrics, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        match crate::db::stats::verify_audit_chains(&db).await {
            Ok(result) => {
                metrics.audit_verified(result.chains, result.broken);
                if result.broken > 0 {
                    tracing::error!(
                        target: "tenantry::security",
                        event = "audit.chain_broken",
                        broken = result.broken,
                        organizations = ?result.broken_organizations,
                        "audit chain verification failed: run `tenantry audit verify`"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "audit watchdog: verification failed; retrying at the next interval")
            }
        }
    }
}

/// What the worker's metrics endpoint serves from.
struct Scrape {
    db: Db,
    metrics: WorkerMetrics,
    token: Option<SecretString>,
}

/// The worker's `GET /metrics` (the server's token rules; the queue is counted at scrape time,
/// only for a scraper that presented the token) and `GET /health` (liveness).
fn serve_metrics(listen: &str, worker: &Worker) -> anyhow::Result<actix_web::dev::Server> {
    use actix_web::{App, HttpServer, web};
    let scrape = web::Data::new(Scrape {
        db: worker.db.clone(),
        metrics: worker.metrics.clone(),
        token: worker.metrics_token.clone(),
    });
    let server = HttpServer::new(move || {
        App::new().app_data(scrape.clone()).route("/metrics", web::get().to(scrape_metrics)).route(
            "/health",
            web::get()
                .to(|| async { actix_web::HttpResponse::Ok().json(serde_json::json!({"status": "ok"})) }),
        )
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .bind(listen)
    .map_err(|e| anyhow::anyhow!("worker.metrics_listen {listen:?}: {e}"))?
    .run();
    Ok(server)
}

async fn scrape_metrics(
    req: actix_web::HttpRequest,
    scrape: actix_web::web::Data<Scrape>,
) -> actix_web::HttpResponse {
    if let Err(refused) = crate::http::metrics::admit_scraper(&req, scrape.token.as_ref()) {
        return actix_web::ResponseError::error_response(&refused);
    }
    match crate::db::stats::run_queue(&scrape.db).await {
        Ok(q) => {
            scrape.metrics.database_up(true);
            scrape.metrics.queue(
                q.queued,
                q.running,
                q.leases_expired,
                q.oldest_queued_secs,
                q.attempts_exhausted,
            );
        }
        Err(e) => {
            scrape.metrics.database_up(false);
            tracing::warn!(error = %e, "worker metrics: counting the queue failed");
        }
    }
    match scrape.metrics.render() {
        Ok(body) => {
            actix_web::HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(body)
        }
        Err(_) => actix_web::HttpResponse::InternalServerError().finish(),
    }
}

pub struct Worker {
    db: Db,
    settings: WorkerSettings,
    providers: Option<(ProviderKeySettings, Arc<MasterKeys>)>,
    name: String,
    wake: Arc<Notify>,
    /// Set when a shutdown's grace period is over: runs still executing are released.
    release: tokio::sync::watch::Sender<bool>,
    /// Delivers webhooks beside the runs, when configured.
    dispatcher: Option<Arc<crate::dispatcher::Dispatcher>>,
    metrics: WorkerMetrics,
    /// The bearer token `/metrics` asks for (`metrics_token`).
    metrics_token: Option<SecretString>,
}

impl Worker {
    pub fn new(db: Db, settings: WorkerSettings) -> Worker {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
        let name = format!("{host}:{}", std::process::id());
        let (release, _) = tokio::sync::watch::channel(false);
        let metrics = WorkerMetrics::new(&db.pool_wait);
        Worker {
            metrics,
            metrics_token: None,
            db,
            settings,
            providers: None,
            name,
            wake: Arc::new(Notify::new()),
            release,
            dispatcher: None,
        }
    }

    /// Lets `llm.chat` steps call providers with the workspaces' own keys.
    pub fn with_providers(mut self, settings: ProviderKeySettings, master_keys: Arc<MasterKeys>) -> Worker {
        self.providers = Some((settings, master_keys));
        self
    }

    /// Delivers organizations' webhooks too, in loops of their own.
    pub fn with_dispatcher(mut self, dispatcher: crate::dispatcher::Dispatcher) -> Worker {
        self.dispatcher = Some(Arc::new(dispatcher.with_metrics(self.metrics.clone())));
        self
    }

    /// The token scrapers of `/metrics` present (`metrics_token`; without one, 404).
    pub fn with_metrics_token(mut self, token: Option<SecretString>) -> Worker {
        self.metrics_token = token;
        self
    }

    /// What this worker has measured (`/metrics`).
    pub fn metrics(&self) -> &WorkerMetrics {
        &self.metrics
    }

    /// Claims and processes one run; `None` when the queue is empty. The run's span continues
    /// the trace of the request that queued it.
    pub async fn run_once(&self) -> Result<Option<(Claim, Outcome)>, DbError> {
        let started = Instant::now();
        let claimed = queue::claim_next_run(&self.db, &self.name, &self.settings).await;
        self.metrics.claimed(started.elapsed());
        let Some(claim) = claimed? else {
            return Ok(None);
        };
        let span = tracing::info_span!(
            "workflow run",
            otel.name = "workflow run",
            otel.kind = "consumer",
            org.id = %claim.org,
            run.id = %claim.run_id,
            run.attempt = claim.attempt,
            run.outcome = tracing::field::Empty,
        );
        crate::telemetry::continue_stored_trace(&span, claim.traceparent.as_deref());
        let began = Instant::now();
        let outcome = self.process(claim.clone()).instrument(span.clone()).await?;
        span.record("run.outcome", outcome.as_str());
        self.metrics.run_finished(outcome.as_str(), began.elapsed());
        Ok(Some((claim, outcome)))
    }

    async fn process(&self, claim: Claim) -> Result<Outcome, DbError> {
        let actor = Actor::worker(claim.token);
        let loaded = async {
            let (mut tx, _) = TenantTx::begin_org(&self.db, actor, claim.org).await?;
            let row = tx
                .query_found(
                    "select r.workspace_id, v.spec, i.input, o.data_mode = 'full' as full_mode \
                     from workflow_runs r \
                     join workflow_versions v on v.organization_id = r.organization_id \
                       and v.workflow_id = r.workflow_id and v.version = r.version \
                     join organizations o on o.id = r.organization_id \
                     left join workflow_run_inputs i on i.organization_id = r.organization_id and i.run_id = r.id \
                     where r.organization_id = $1 and r.id = $2",
                    &[claim.org.as_uuid(), &claim.run_id],
                )
                .await?;
            let spec = serde_json::from_value::<WorkflowSpec>(row.get("spec"));
            let keys = match (&spec, &self.providers) {
                (Ok(spec), Some((_, master_keys))) => {
                    self.decrypt_keys(&mut tx, master_keys, claim.org, row.get("workspace_id"), spec).await?
                }
                _ => Ok(HashMap::new()),
            };
            tx.commit().await?;
            Ok::<_, DbError>((row, spec, keys))
        }
        .await;
        let (row, spec, keys) = match loaded {
            Ok(loaded) => loaded,
            // Cancelled between the claim and now: the claim no longer admits the worker.
            Err(DbError::Unauthenticated | DbError::NotFound) => return Ok(Outcome::Abandoned),
            Err(e) => return Err(e),
        };
        let full_mode: bool = row.get("full_mode");
        let input: Value = row.get::<_, Option<Value>>("input").unwrap_or(Value::Null);
        let result = match (spec, keys) {
            (Ok(spec), Ok(keys)) => {
                let providers = self.providers.as_ref().map(|(settings, _)| Providers { settings, keys });
                match self.execute_while_claimed(&claim, &spec, &input, providers.as_ref()).await? {
                    Execution::Done(result) => result,
                    Execution::Lost => return Ok(Outcome::Abandoned),
                    Execution::Released => return Ok(Outcome::Released),
                }
            }
            (Err(e), _) => Err(Failure { code: "invalid_definition", step: None, message: e.to_string() }),
            (_, Err(failure)) => Err(failure),
        };
        self.finish(&claim, result, full_mode).await
    }

    /// The workspace's keys for the providers the definition uses. A key that cannot be
    /// decrypted fails the run (the security event is logged where decryption failed).
    async fn decrypt_keys(
        &self,
        tx: &mut TenantTx,
        master_keys: &MasterKeys,
        org: OrgId,
        workspace: uuid::Uuid,
        spec: &WorkflowSpec,
    ) -> Result<Result<HashMap<Provider, (SecretString, Option<String>)>, Failure>, DbError> {
        let mut keys = HashMap::new();
        for provider in providers_used(spec) {
            match crate::api::provider_keys::decrypt_for_use(tx, master_keys, org, workspace, provider).await
            {
                Ok(Some(key)) => {
                    keys.insert(provider, key);
                }
                Ok(None) => {}
                Err(crate::api::ApiError::NotFound) => {}
                Err(_) => {
                    return Ok(Err(Failure {
                        code: "provider_key_unreadable",
                        step: None,
                        message: format!("the workspace's {} key cannot be decrypted", provider.as_str()),
                    }));
                }
            }
        }
        Ok(Ok(keys))
    }

    /// Executes while renewing the claim, until it ends, the claim is lost, or a shutdown
    /// releases it.
    async fn execute_while_claimed(
        &self,
        claim: &Claim,
        spec: &WorkflowSpec,
        input: &Value,
        providers: Option<&Providers<'_>>,
    ) -> Result<Execution, DbError> {
        let mut release = self.release.subscribe();
        let execution = execute(spec, input, providers, Some(&self.metrics));
        tokio::pin!(execution);
        let timeout = tokio::time::sleep(Duration::from_secs(self.settings.run_timeout_secs));
        tokio::pin!(timeout);
        let every = Duration::from_millis(u64::from(self.settings.lease_secs) * 1000 / 3);
        let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                result = &mut execution => return Ok(Execution::Done(result)),
                _ = &mut timeout => {
                    return Ok(Execution::Done(Err(Failure { code: "timeout", step: None, message: "the run took too long".into() })));
                }
                _ = renew.tick() => {
                    let renewed = queue::renew_run_claim(&self.db, claim.token, self.settings.lease_secs).await?;
                    self.metrics.lease_renewal(renewed);
                    if !renewed {
                        return Ok(Execution::Lost);
                    }
                }
                () = async { drop(release.wait_for(|release| *release).await) } => {
                    // Dropping `execution` stops it; nothing of it was written.
                    return Ok(if queue::release_run_claim(&self.db, claim.token).await? {
                        Execution::Released
                    } else {
                        Execution::Lost
                    });
                }
            }
        }
    }

    async fn finish(
        &self,
        claim: &Claim,
        result: Result<Value, Failure>,
        full_mode: bool,
    ) -> Result<Outcome, DbError> {
        let (status, output, output_bytes, failure) = match result {
            Ok(output) => {
                let bytes = serde_json::to_vec(&output).map_or(0, |b| b.len());
                ("succeeded", Some(output), Some(i32::try_from(bytes).unwrap_or(i32::MAX)), None)
            }
            Err(failure) => ("failed", None, None, Some(failure)),
        };
        // Content only in full mode; the database would refuse it otherwise (TY020).
        let output = output.filter(|_| full_mode);
        let code = failure.as_ref().map(|f| f.code);
        let step = failure.as_ref().and_then(|f| f.step.clone());
        let message = failure.filter(|_| full_mode).map(|f| f.message.chars().take(2000).collect::<String>());
        let written = async {
            let (mut tx, _) = TenantTx::begin_org(&self.db, Actor::worker(claim.token), claim.org).await?;
            let n = tx
                .execute(
                    "update workflow_runs set status = $3, output = $4, output_bytes = $5, error_code = $6, \
                     failed_step = $7, error_message = $8 where organization_id = $1 and id = $2",
                    &[
                        claim.org.as_uuid(),
                        &claim.run_id,
                        &status,
                        &output,
                        &output_bytes,
                        &code,
                        &step,
                        &message,
                    ],
                )
                .await?;
            tx.commit().await?;
            Ok::<_, DbError>(n)
        }
        .await;
        match written {
            Ok(1) if status == "succeeded" => Ok(Outcome::Succeeded),
            Ok(1) => Ok(Outcome::Failed),
            Ok(_) | Err(DbError::Unauthenticated | DbError::NotFound) => Ok(Outcome::Abandoned),
            Err(e) => Err(e),
        }
    }

    /// Runs `concurrency` loops until `shutdown` completes. Then no loop claims again; runs in
    /// flight get `shutdown_grace_secs` to finish, and those still running are released to the
    /// queue (a run is never cut off mid-way and burns no attempt). Idle loops wake on a
    /// notification from new runs, or every poll interval.
    pub async fn run_until(
        self,
        listen: crate::db::Connector,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let worker = Arc::new(self);
        // Idle loops wake on a new run; polling covers missed notifications.
        let wake = worker.wake.clone();
        let wake_dispatch = worker.dispatcher.as_ref().map(|d| d.wake());
        let listener = tokio::spawn(crate::db::notify::listen(
            listen,
            &["tenantry_runs", "tenantry_deliveries"],
            || {},
            move |channel, _| match (channel, &wake_dispatch) {
                ("tenantry_deliveries", Some(wake)) => wake.notify_waiters(),
                ("tenantry_deliveries", None) => {}
                _ => wake.notify_waiters(),
            },
        ));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let pruner =
            tokio::spawn(prune_events_hourly(worker.db.clone(), worker.settings.event_retention_days));
        let watchdog = (worker.settings.audit_verify_interval_secs > 0).then(|| {
            tokio::spawn(verify_audit_chains_every(
                worker.db.clone(),
                worker.metrics.clone(),
                Duration::from_secs(worker.settings.audit_verify_interval_secs),
            ))
        });
        let metrics_server = match &worker.settings.metrics_listen {
            Some(listen) => {
                let server = serve_metrics(listen, &worker)?;
                let handle = server.handle();
                tokio::spawn(server);
                tracing::info!(%listen, "worker metrics at /metrics");
                Some(handle)
            }
            None => None,
        };
        let mut loops = Vec::new();
        for _ in 0..worker.settings.concurrency {
            let worker = worker.clone();
            let mut stop = stop_rx.clone();
            loops.push(tokio::spawn(async move {
                let poll = Duration::from_millis(worker.settings.poll_interval_ms);
                while !*stop.borrow() {
                    match worker.run_once().await {
                        Ok(Some((claim, outcome))) => {
                            tracing::info!(org.id = %claim.org, run.id = %claim.run_id, attempt = claim.attempt, ?outcome, "run processed");
                        }
                        Ok(None) => {
                            tokio::select! {
                                _ = worker.wake.notified() => {}
                                _ = tokio::time::sleep(poll) => {}
                                _ = stop.changed() => {}
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "worker: database error; retrying");
                            tokio::time::sleep(poll).await;
                        }
                    }
                }
            }));
        }
        if let Some(dispatcher) = &worker.dispatcher {
            let poll = Duration::from_millis(worker.settings.poll_interval_ms);
            loops.extend(dispatcher.spawn_loops(poll, &stop_rx));
        }
        shutdown.await;
        let grace = Duration::from_secs(worker.settings.shutdown_grace_secs);
        tracing::info!(grace_secs = grace.as_secs(), "worker stopping; letting runs in flight finish");
        let _ = stop_tx.send(true);
        let all = futures_util::future::join_all(loops);
        tokio::pin!(all);
        if tokio::time::timeout(grace, &mut all).await.is_err() {
            tracing::info!("grace period over; releasing the runs still in flight to the queue");
            let _ = worker.release.send(true);
            all.await;
        }
        listener.abort();
        pruner.abort();
        if let Some(watchdog) = watchdog {
            watchdog.abort();
        }
        if let Some(server) = metrics_server {
            server.stop(true).await;
        }
        tracing::info!("worker stopped");
        Ok(())
    }
}
