//! Prometheus metrics both processes export, and the worker's own. The HTTP server's request
//! metrics are `http::metrics`; the worker serves this registry at its own `GET /metrics`
//! (`worker.metrics_listen`), with the same token rules.
//!
//! Both processes:
//! - `process_*` (CPU seconds, resident and virtual memory, open and maximum file descriptors,
//!   start time) and `tenantry_build_info{version,commit}` (always 1)
//! - `tenantry_db_pool_wait_seconds`: time to get a connection from the pool
//!
//! The worker:
//! - `tenantry_worker_database_up`: whether the scrape's queue count reached the database
//! - `tenantry_worker_runs{state}`: this region's queue (queued, running, leases_expired), and
//!   `tenantry_worker_oldest_queued_run_seconds`, read from the database at scrape time
//! - `tenantry_worker_runs_attempts_exhausted`: runs ever failed for using up their attempts
//! - `tenantry_worker_claim_duration_seconds`: one claim's round trip, found or not
//! - `tenantry_worker_run_duration_seconds{outcome}` and
//!   `tenantry_worker_step_duration_seconds{action,outcome}` (actions are the known names, any
//!   other is `other`)
//! - `tenantry_worker_lease_renewals_total{result}` (renewed, lost)
//! - `tenantry_webhook_deliveries_total{outcome}` (delivered, failed, not_sent)
//! - `tenantry_audit_chains{state}` (verified, broken) and
//!   `tenantry_audit_last_verification_timestamp_seconds`: the watchdog's last verification

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Adds the process metrics and the build's identity to `registry`.
pub fn register_process(registry: &Registry) {
    // Not every platform has /proc; the metrics are then simply absent.
    let _ = registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
    let info = IntGaugeVec::new(
        Opts::new("tenantry_build_info", "The running build (always 1)"),
        &["version", "commit"],
    )
    .expect("valid metric");
    // Set by the build script; a build script output reused from another checkout of an older
    // release (a shared target directory) may lack it.
    let commit = option_env!("TNTY_COMMIT").unwrap_or("unknown");
    info.with_label_values(&[env!("CARGO_PKG_VERSION"), commit]).set(1);
    let _ = registry.register(Box::new(info));
}

/// `tenantry_db_pool_wait_seconds`, which `db::Db::get` observes (each process registers its
/// pool's).
pub fn pool_wait_histogram() -> Histogram {
    Histogram::with_opts(
        HistogramOpts::new(
            "tenantry_db_pool_wait_seconds",
            "Time to get a database connection from the pool",
        )
        .buckets(vec![0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
    )
    .expect("valid metric")
}

#[derive(Clone)]
pub struct WorkerMetrics {
    pub registry: Registry,
    queue: IntGaugeVec,
    oldest_queued: IntGauge,
    exhausted: IntGauge,
    claim: Histogram,
    runs: HistogramVec,
    steps: HistogramVec,
    renewals: IntCounterVec,
    deliveries: IntCounterVec,
    audit_chains: IntGaugeVec,
    audit_verified_at: IntGauge,
    database_up: IntGauge,
}

impl WorkerMetrics {
    pub fn new(pool_wait: &Histogram) -> WorkerMetrics {
        let registry = Registry::new();
        register_process(&registry);
        let durations = vec![0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0];
        let metrics = WorkerMetrics {
            queue: IntGaugeVec::new(
                Opts::new("tenantry_worker_runs", "This region's runs by queue state"),
                &["state"],
            )
            .expect("valid metric"),
            oldest_queued: IntGauge::new(
                "tenantry_worker_oldest_queued_run_seconds",
                "Age of this region's oldest queued run (0: none queued)",
            )
            .expect("valid metric"),
            exhausted: IntGauge::new(
                "tenantry_worker_runs_attempts_exhausted",
                "Runs failed for using up their attempts (lease_expired), ever",
            )
            .expect("valid metric"),
            claim: Histogram::with_opts(
                HistogramOpts::new("tenantry_worker_claim_duration_seconds", "One claim of the next run")
                    .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]),
            )
            .expect("valid metric"),
            runs: HistogramVec::new(
                HistogramOpts::new("tenantry_worker_run_duration_seconds", "Claimed runs, by outcome")
                    .buckets(durations.clone()),
                &["outcome"],
            )
            .expect("valid metric"),
            steps: HistogramVec::new(
                HistogramOpts::new(
                    "tenantry_worker_step_duration_seconds",
                    "Executed steps, by action and outcome",
                )
                .buckets(durations),
                &["action", "outcome"],
            )
            .expect("valid metric"),
            renewals: IntCounterVec::new(
                Opts::new("tenantry_worker_lease_renewals_total", "Claim renewals while a run executes"),
                &["result"],
            )
            .expect("valid metric"),
            deliveries: IntCounterVec::new(
                Opts::new("tenantry_webhook_deliveries_total", "Webhook delivery attempts, by outcome"),
                &["outcome"],
            )
            .expect("valid metric"),
            audit_chains: IntGaugeVec::new(
                Opts::new("tenantry_audit_chains", "Audit chains at the watchdog's last verification"),
                &["state"],
            )
            .expect("valid metric"),
            audit_verified_at: IntGauge::new(
                "tenantry_audit_last_verification_timestamp_seconds",
                "When the watchdog last verified every audit chain (0: not yet)",
            )
            .expect("valid metric"),
            database_up: IntGauge::new(
                "tenantry_worker_database_up",
                "Whether the database answered the last scrape's queue count (1) or not (0)",
            )
            .expect("valid metric"),
            registry,
        };
        let collectors: [Box<dyn Collector>; 12] = [
            Box::new(metrics.queue.clone()),
            Box::new(metrics.oldest_queued.clone()),
            Box::new(metrics.exhausted.clone()),
            Box::new(metrics.claim.clone()),
            Box::new(metrics.runs.clone()),
            Box::new(metrics.steps.clone()),
            Box::new(metrics.renewals.clone()),
            Box::new(metrics.deliveries.clone()),
            Box::new(metrics.audit_chains.clone()),
            Box::new(metrics.audit_verified_at.clone()),
            Box::new(pool_wait.clone()),
            Box::new(metrics.database_up.clone()),
        ];
        for collector in collectors {
            metrics.registry.register(collector).expect("metric names are unique");
        }
        // Series that alerts compare must exist before their first event.
        for result in ["renewed", "lost"] {
            metrics.renewals.with_label_values(&[result]);
        }
        for outcome in ["delivered", "failed", "not_sent"] {
            metrics.deliveries.with_label_values(&[outcome]);
        }
        metrics
    }

    pub fn claimed(&self, elapsed: std::time::Duration) {
        self.claim.observe(elapsed.as_secs_f64());
    }

    pub fn run_finished(&self, outcome: &str, elapsed: std::time::Duration) {
        self.runs.with_label_values(&[outcome]).observe(elapsed.as_secs_f64());
    }

    /// `action` is one of a bounded set (`worker::step_action`).
    pub fn step_finished(&self, action: &'static str, ok: bool, elapsed: std::time::Duration) {
        let outcome = if ok { "succeeded" } else { "failed" };
        self.steps.with_label_values(&[action, outcome]).observe(elapsed.as_secs_f64());
    }

    pub fn lease_renewal(&self, renewed: bool) {
        self.renewals.with_label_values(&[if renewed { "renewed" } else { "lost" }]).inc();
    }

    pub fn delivery(&self, outcome: &'static str) {
        self.deliveries.with_label_values(&[outcome]).inc();
    }

    /// The queue as `app.run_queue_stats()` counted it.
    pub fn queue(
        &self,
        queued: i64,
        running: i64,
        leases_expired: i64,
        oldest_queued_secs: f64,
        exhausted: i64,
    ) {
        self.queue.with_label_values(&["queued"]).set(queued);
        self.queue.with_label_values(&["running"]).set(running);
        self.queue.with_label_values(&["leases_expired"]).set(leases_expired);
        self.oldest_queued.set(oldest_queued_secs as i64);
        self.exhausted.set(exhausted);
    }

    pub fn database_up(&self, up: bool) {
        self.database_up.set(i64::from(up));
    }

    /// The watchdog's verification of every chain.
    pub fn audit_verified(&self, chains: i64, broken: i64) {
        self.audit_chains.with_label_values(&["verified"]).set(chains - broken);
        self.audit_chains.with_label_values(&["broken"]).set(broken);
        self.audit_verified_at.set(chrono::Utc::now().timestamp());
    }

    /// The Prometheus text format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}
