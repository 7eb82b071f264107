//! The webhook dispatcher, run by `tenantry worker`: delivers each organization's events to its
//! endpoints as the Standard Webhooks specification says, at least once.
//!
//! A delivery is claimed with `app.claim_next_delivery()` (exclusive, due first, fair: an
//! endpoint or organization with its cap of attempts in flight is skipped, so a slow or failing
//! endpoint never delays anyone else). It is then read in a transaction acting as
//! `Actor::dispatcher(claim)`: the delivery's organization only, and in it only that delivery, its
//! event, its endpoint and the data key that opens the endpoint's secret. Nothing is held open
//! while the request is out. The attempt: the endpoint's address resolved once, checked public
//! and pinned (`crate::outbound`), no redirects, `attempt_timeout_secs` for all of it, at most
//! 64 KiB of the answer read. Its outcome is recorded by `app.finish_delivery()` under the same
//! claim: succeeded on a 2xx, else retried on the schedule of `crate::standard_webhooks` with
//! jitter, failed after the last attempt; an endpoint failing long enough is disabled.
//!
//! The payload is the event as `GET /orgs/{org_id}/events/{event_id}` shows it, with the
//! specification's `type`, `timestamp` and `data`. `webhook-id` is the event's id, the same for
//! every attempt and redelivery, so a receiver can drop repeats. Secrets are opened only for the
//! attempt and never logged; errors recorded are fixed phrases, never a URL or an answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Notify;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::api::webhook_endpoints::secret_aad;
use crate::config::WebhookSettings;
use crate::crypto::MasterKeys;
use crate::db::deliveries::{self, AttemptOutcome, DeliveryClaim};
use crate::db::{Actor, Db, DbError, TenantTx};
use crate::outbound::{self, OutboundError};
use crate::standard_webhooks;

/// Bytes of an answer read at most; the rest is not waited for.
const MAX_RESPONSE_READ: usize = 64 * 1024;
/// Characters of the answer kept in the attempt log (full data mode only).
const KEPT_RESPONSE_CHARS: usize = 1024;

/// What a receiver gets: the event, in the shape the events API shows it.
#[derive(Debug, Serialize)]
struct Payload {
    id: Uuid,
    #[serde(rename = "type")]
    event_type: String,
    /// When it happened (the specification's `timestamp`).
    timestamp: DateTime<Utc>,
    organization_id: Uuid,
    workspace_id: Option<Uuid>,
    actor_user_id: Option<Uuid>,
    actor_api_key_id: Option<Uuid>,
    data: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Value>,
}

/// A claimed delivery, ready to send.
struct Loaded {
    url: String,
    event_id: Uuid,
    body: Vec<u8>,
    /// The current secret first, then the previous one while a rotation's overlap lasts.
    secrets: Vec<SecretString>,
}

type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

pub struct Dispatcher {
    db: Db,
    settings: WebhookSettings,
    master_keys: Arc<MasterKeys>,
    name: String,
    /// Decides when deliveries are due and retried (tests inject one); leases use the database's.
    now: Clock,
    wake: Arc<Notify>,
    metrics: Option<crate::metrics::WorkerMetrics>,
}

impl Dispatcher {
    /// Counts attempts by outcome in the worker's metrics.
    pub fn with_metrics(mut self, metrics: crate::metrics::WorkerMetrics) -> Dispatcher {
        self.metrics = Some(metrics);
        self
    }

    pub fn new(db: Db, settings: WebhookSettings, master_keys: Arc<MasterKeys>) -> Dispatcher {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into());
        let name = format!("{host}:{}:dispatch", std::process::id());
        Dispatcher {
            db,
            settings,
            master_keys,
            name,
            now: Arc::new(Utc::now),
            wake: Arc::new(Notify::new()),
            metrics: None,
        }
    }

    /// Uses `now` instead of the system clock to decide what is due and when to retry.
    pub fn with_clock(mut self, now: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Dispatcher {
        self.now = Arc::new(now);
        self
    }

    /// Wakes idle dispatch loops (a notification on `tenantry_deliveries`).
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Claims and attempts one delivery: the claim and the delivery's new status (`None`: the
    /// claim was lost meanwhile and nothing was recorded); `None` when nothing is due.
    pub async fn dispatch_once(&self) -> Result<Option<(DeliveryClaim, Option<String>)>, DbError> {
        let Some(claim) =
            deliveries::claim_next_delivery(&self.db, &self.name, &self.settings, (self.now)()).await?
        else {
            return Ok(None);
        };
        let span = tracing::info_span!(
            "webhook delivery",
            otel.name = "webhook delivery",
            org.id = %claim.org,
            delivery.id = %claim.delivery_id,
            delivery.attempt = claim.attempt,
        );
        let status = self.process(&claim).instrument(span).await?;
        Ok(Some((claim, status)))
    }

    async fn process(&self, claim: &DeliveryClaim) -> Result<Option<String>, DbError> {
        let started_at = (self.now)();
        let began = Instant::now();
        let mut sent = true;
        let outcome = match self.load(claim).await {
            Ok(Ok(loaded)) => self.attempt(&loaded, started_at, began).await,
            Ok(Err(why)) => {
                sent = false;
                tracing::warn!(org.id = %claim.org, delivery.id = %claim.delivery_id, why, "webhook not sent");
                AttemptOutcome {
                    started_at,
                    duration_ms: 0,
                    response_status: None,
                    error: Some(why.into()),
                    response_body: None,
                }
            }
            // The claim no longer admits the dispatcher (the lease ran out and was taken over).
            Err(DbError::Unauthenticated | DbError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        let succeeded = outcome.response_status.is_some_and(|s| (200..300).contains(&s));
        if let Some(metrics) = &self.metrics {
            metrics.delivery(match (succeeded, sent) {
                (true, _) => "delivered",
                (false, false) => "not_sent",
                (false, true) => "failed",
            });
        }
        let now = (self.now)();
        let next = if succeeded {
            None
        } else {
            let attempt = u32::try_from(claim.attempt).unwrap_or(u32::MAX);
            standard_webhooks::retry_after(attempt, jitter_unit())
                .and_then(|wait| chrono::Duration::from_std(wait).ok())
                .map(|wait| now + wait)
        };
        let status =
            deliveries::finish_delivery(&self.db, claim, &outcome, next, now, &self.settings).await?;
        tracing::info!(
            org.id = %claim.org, delivery.id = %claim.delivery_id, attempt = claim.attempt,
            response_status = outcome.response_status, error = outcome.error.as_deref(),
            status = status.as_deref(), "webhook attempt"
        );
        Ok(status)
    }

    /// Reads the delivery under its claim and opens the endpoint's secrets. An inner error is an
    /// attempt that could not be made (recorded as such).
    async fn load(&self, claim: &DeliveryClaim) -> Result<Result<Loaded, &'static str>, DbError> {
        let (mut tx, _) = TenantTx::begin_org(&self.db, Actor::dispatcher(claim.token), claim.org).await?;
        let row = tx
            .query_found(
                "select e.id as event_id, e.type, e.occurred_at, e.workspace_id, e.actor_user_id, e.actor_api_key_id, \
                   e.data, e.content, w.id as endpoint_id, w.url, w.secret_nonce, w.secret_ciphertext, \
                   case when w.previous_secret_expires_at > now() then w.previous_secret_nonce end as previous_nonce, \
                   case when w.previous_secret_expires_at > now() then w.previous_secret_ciphertext end as previous_ciphertext, \
                   k.id as key_id, k.wrapped_key, k.master_key_version \
                 from webhook_deliveries d \
                 join events e on e.organization_id = d.organization_id and e.id = d.event_id \
                 join webhook_endpoints w on w.organization_id = d.organization_id and w.id = d.endpoint_id \
                 join organization_data_keys k on k.organization_id = w.organization_id and k.id = w.data_key_id \
                 where d.organization_id = $1 and d.id = $2",
                &[claim.org.as_uuid(), &claim.delivery_id],
            )
            .await?;
        tx.commit().await?;
        let org = claim.org;
        let Ok(data_key) = self.master_keys.unwrap(
            org.0,
            row.get("key_id"),
            row.get("master_key_version"),
            row.get("wrapped_key"),
        ) else {
            return Ok(Err("the signing secret cannot be opened (master key unavailable)"));
        };
        let aad = secret_aad(org, row.get("endpoint_id"));
        let open = |nonce: &[u8], sealed: &[u8]| {
            data_key
                .open(&aad, nonce, sealed)
                .ok()
                .and_then(|plain| String::from_utf8(plain.to_vec()).ok())
                .map(SecretString::from)
        };
        let Some(current) = open(row.get("secret_nonce"), row.get("secret_ciphertext")) else {
            return Ok(Err("the signing secret cannot be opened"));
        };
        let mut secrets = vec![current];
        if let (Some(nonce), Some(sealed)) = (
            row.get::<_, Option<&[u8]>>("previous_nonce"),
            row.get::<_, Option<&[u8]>>("previous_ciphertext"),
        ) && let Some(previous) = open(nonce, sealed)
        {
            secrets.push(previous);
        }
        let payload = Payload {
            id: row.get("event_id"),
            event_type: row.get("type"),
            timestamp: row.get("occurred_at"),
            organization_id: org.0,
            workspace_id: row.get("workspace_id"),
            actor_user_id: row.get("actor_user_id"),
            actor_api_key_id: row.get("actor_api_key_id"),
            data: row.get("data"),
            content: row.get("content"),
        };
        let Ok(body) = serde_json::to_vec(&payload) else {
            return Ok(Err("the event cannot be serialized"));
        };
        Ok(Ok(Loaded { url: row.get("url"), event_id: payload.id, body, secrets }))
    }

    /// One HTTP attempt, bounded in time and in what it reads.
    async fn attempt(&self, loaded: &Loaded, started_at: DateTime<Utc>, began: Instant) -> AttemptOutcome {
        let timeout = Duration::from_secs(self.settings.attempt_timeout_secs);
        let result = tokio::time::timeout(timeout, self.send(loaded, timeout)).await;
        let duration_ms = i32::try_from(began.elapsed().as_millis()).unwrap_or(i32::MAX);
        let (response_status, error, response_body) = match result {
            Ok(Ok((status, body))) => {
                let error = (!(200..300).contains(&status)).then(|| format!("HTTP {status}"));
                (Some(status), error, body)
            }
            Ok(Err(why)) => (None, Some(why), None),
            Err(_) => {
                (None, Some(format!("timeout: no complete answer within {}s", timeout.as_secs())), None)
            }
        };
        AttemptOutcome { started_at, duration_ms, response_status, error, response_body }
    }

    async fn send(&self, loaded: &Loaded, timeout: Duration) -> Result<(i32, Option<String>), String> {
        let (client, url) =
            outbound::pinned_client(self.settings.allow_private_addresses, &loaded.url, timeout)
                .await
                .map_err(|e| match e {
                    OutboundError::Refused(why) => format!("refused: {why}"),
                    OutboundError::Unreachable(why) => format!("unreachable: {why}"),
                })?;
        let id = loaded.event_id.to_string();
        // The time of sending, on the real clock: receivers compare it with theirs.
        let timestamp = Utc::now().timestamp();
        let secrets: Vec<&SecretString> = loaded.secrets.iter().collect();
        let signature = standard_webhooks::signature_header(&secrets, &id, timestamp, &loaded.body)
            .map_err(|_| "the signing secret is malformed".to_owned())?;
        let request = client
            .post(url)
            .header("content-type", "application/json")
            .header("user-agent", concat!("tenantry-webhooks/", env!("CARGO_PKG_VERSION")))
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(loaded.body.clone());
        let mut response =
            crate::telemetry::send(request, "webhook_endpoint").await.map_err(|e| request_error(&e))?;
        let status = i32::from(response.status().as_u16());
        let mut read = Vec::new();
        while read.len() < MAX_RESPONSE_READ {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    read.extend_from_slice(&chunk[..chunk.len().min(MAX_RESPONSE_READ - read.len())])
                }
                Ok(None) => break,
                // The status arrived; a body cut short does not change it.
                Err(_) => break,
            }
        }
        let body = (!read.is_empty())
            .then(|| String::from_utf8_lossy(&read).chars().take(KEPT_RESPONSE_CHARS).collect::<String>());
        Ok((status, body))
    }

    /// Runs `concurrency` dispatch loops until `stop` turns true; each finishes the attempt it
    /// is making (bounded by `attempt_timeout_secs`). Idle loops wake on a notification or poll
    /// every `poll` (retries fall due without one).
    pub fn spawn_loops(
        self: &Arc<Self>,
        poll: Duration,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        (0..self.settings.dispatch_concurrency)
            .map(|_| {
                let dispatcher = self.clone();
                let mut stop = stop.clone();
                tokio::spawn(async move {
                    while !*stop.borrow() {
                        match dispatcher.dispatch_once().await {
                            Ok(Some(_)) => {}
                            Ok(None) => {
                                tokio::select! {
                                    _ = dispatcher.wake.notified() => {}
                                    _ = tokio::time::sleep(poll) => {}
                                    _ = stop.changed() => {}
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "dispatcher: database error; retrying");
                                tokio::time::sleep(poll).await;
                            }
                        }
                    }
                })
            })
            .collect()
    }
}

/// A fixed phrase for a failed request: reqwest's own messages name the URL, which may carry a
/// receiver's token.
fn request_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout: no answer in time".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        "the request failed".into()
    }
}

/// Where in the ±10 % jitter band a retry lands.
fn jitter_unit() -> f64 {
    crate::crypto::random::<8>().map_or(0.5, |bytes| u64::from_le_bytes(bytes) as f64 / u64::MAX as f64)
}
