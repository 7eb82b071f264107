//! One integration-test binary (the crate links once). Each module reads as sentences.

mod admin;
mod api_keys;
mod audit;
mod auth;
mod billing;
mod catalog;
mod cli;
mod errors;
mod flags;
mod health;
mod helpers;
mod invitations;
mod isolation;
mod lifecycle;
mod matrix;
mod members;
mod openapi;
mod orgs;
mod provider_keys;
mod regions;
mod roles;
mod runs;
mod sessions;
mod signin;
mod workflows;
mod workspaces;
