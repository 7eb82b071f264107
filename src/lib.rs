//! tenantry: a multi-tenant SaaS backend in which PostgreSQL row-level security does all tenant
//! isolation. Dependencies point one way, each layer using only those below it:
//!
//! 1. `startup` (the server), `worker` (the run processor), `seed`
//! 2. `http`: the middleware around the handlers (its own state is `http::Edge`); `dispatcher`
//!    (webhook deliveries, run by the worker)
//! 3. `api`: the handlers, their state (`AppState`) and their error type (`ApiError`)
//! 4. `auth`, `billing`, `flags`, `usage`
//! 5. `db`: the pool, the tenant transaction, migrations, the catalog check; `providers` (the
//!    LLM providers' APIs)
//! 6. `config`; `request` (what a request carries to every layer: its id, the organization its
//!    caller was admitted to, the client's address); `metrics` (what both processes export, and
//!    the worker's own)
//! 7. `crypto`, `domain`, `outbound` (SSRF-hardened requests to addresses tenants choose),
//!    `standard_webhooks` (signing our deliveries, their retry schedule), `webhooks` (signature
//!    checks of payment providers' events), `telemetry` (logs, traces, the trace context crossing
//!    into and out of the process)

pub mod api;
pub mod auth;
pub mod billing;
pub mod config;
pub mod crypto;
pub mod db;
pub mod dispatcher;
pub mod domain;
pub mod flags;
pub mod http;
pub mod metrics;
pub mod outbound;
pub mod providers;
pub mod request;
pub mod seed;
pub mod standard_webhooks;
pub mod startup;
pub mod telemetry;
pub mod usage;
pub mod webhooks;
pub mod worker;
