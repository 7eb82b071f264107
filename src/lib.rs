//! tenantry: a multi-tenant SaaS backend in which PostgreSQL row-level security does all tenant
//! isolation. Dependencies point one way: `http` → `api` → `db`/`auth`/`domain`.

pub mod api;
pub mod auth;
pub mod billing;
pub mod config;
pub mod crypto;
pub mod db;
pub mod domain;
pub mod flags;
pub mod http;
pub mod providers;
pub mod seed;
pub mod startup;
pub mod usage;
pub mod webhooks;
pub mod worker;
