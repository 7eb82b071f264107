//! The test harness: every test gets the real server on port 0 against its own database,
//! cloned from a template that is migrated once per run. Two ways into the database:
//! the server (app role, through the policies) and `rls_bypassing_admin` (a superuser, used only
//! to arrange and to assert on raw rows).

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantry::auth::clock::OffsetClock;
use tenantry::config::Settings;
use tenantry::startup::Application;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::OnceCell;
use tokio_postgres::Client;
use uuid::Uuid;

pub const ISSUER: &str = "tenantry";
pub const AUDIENCE: &str = "tenantry-api";

static TEMPLATE: OnceCell<String> = OnceCell::const_new();

/// Everything the servers of this test process log (debug and up), to assert that no secret is
/// ever written to a log.
static CAPTURED_LOGS: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();

#[derive(Clone)]
struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() -> Arc<std::sync::Mutex<Vec<u8>>> {
    CAPTURED_LOGS
        .get_or_init(|| {
            let buffer = Arc::new(std::sync::Mutex::new(Vec::new()));
            let writer = Capture(buffer.clone());
            let _ = tracing_subscriber::fmt()
                .with_env_filter("debug,h2=info,hyper=info,reqwest=info,actix_server=info")
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .try_init();
            buffer
        })
        .clone()
}

/// All log output captured so far in this process.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&capture_logs().lock().unwrap()).into_owned()
}

fn pg_port() -> String {
    std::env::var("TEST_PG_PORT").unwrap_or_else(|_| {
        panic!("TEST_PG_PORT is not set: run the tests with `make test` (it starts the test PostgreSQL)")
    })
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// A URL on the test cluster as `userinfo`, with `query` (TLS parameters) if any. By default
/// the plain local cluster (`postgres`, no TLS). `make test`'s managed pass points the suites
/// at a cluster shaped like a managed database instead: `TEST_PG_HOST` (the name in its
/// certificate), `TEST_PG_TLS` (`sslmode=verify-full&sslrootcert=…`), `TEST_PG_SUPERUSER`
/// (`postgres:password`), `TEST_PG_INSTALLER` (the NOSUPERUSER CREATEROLE CREATEDB admin that
/// creates and migrates the databases) and `TEST_PG_APP_TLS` (the app role's client certificate).
fn pg_url(userinfo: &str, db: &str, query: &[String]) -> String {
    let host = env_or("TEST_PG_HOST", "127.0.0.1");
    let query: Vec<&str> = query.iter().map(String::as_str).filter(|q| !q.is_empty()).collect();
    let query = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
    format!("postgres://{userinfo}@{host}:{}/{db}{query}", pg_port())
}

/// A superuser on `db`: arranges data and asserts on raw rows.
pub fn admin_url(db: &str) -> String {
    pg_url(&env_or("TEST_PG_SUPERUSER", "postgres"), db, &[env_or("TEST_PG_TLS", "")])
}

/// Who creates and migrates the test databases: the superuser, or a managed database's admin.
pub fn installer_url(db: &str) -> String {
    let superuser = env_or("TEST_PG_SUPERUSER", "postgres");
    pg_url(&env_or("TEST_PG_INSTALLER", &superuser), db, &[env_or("TEST_PG_TLS", "")])
}

pub fn app_url(db: &str) -> String {
    pg_url("tenantry_app", db, &[env_or("TEST_PG_TLS", ""), env_or("TEST_PG_APP_TLS", "")])
}

pub async fn connect(url: &str) -> Client {
    let connector = tenantry::db::Connector::from_url(url).expect("a test database URL");
    let (client, connection) = connector.connect().await.expect("connect to test PostgreSQL");
    tokio::spawn(connection);
    client
}

/// Inside an open transaction on an app-role connection: act as `user` in `org` (region `us`),
/// as the server would (the settings, then `app.enter_context()`, which verifies and seals them).
pub async fn set_context(db: &Client, user: Uuid, org: Uuid) {
    db.execute(
        "select set_config('app.current_user_id', $1, true), set_config('app.current_organization_id', $2, true), \
         set_config('app.current_region', 'us', true)",
        &[&user.to_string(), &org.to_string()],
    )
    .await
    .unwrap();
    db.query_one("select active from app.enter_context()", &[]).await.unwrap();
}

/// The Citus drill's pass (`make citus-test`): `TEST_PG_PORT` is a coordinator and
/// `TEST_CITUS_WORKERS` its workers' ports. Every test database then exists on every node: the
/// template is made on each, joined into a cluster, migrated, distributed and migrated again
/// (as the drill does), and each test's database is cloned from it on every node (a clone keeps
/// the shards and the cluster's metadata, and Citus reaches a database of the same name on the
/// workers).
fn citus_workers() -> Vec<String> {
    std::env::var("TEST_CITUS_WORKERS")
        .map(|w| w.split(',').filter(|p| !p.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The superuser's URL for `db` on every node: the workers first, then the coordinator (or the
/// one plain cluster).
fn admin_urls_on_every_node(db: &str) -> Vec<String> {
    let tls = env_or("TEST_PG_TLS", "");
    let query = if tls.is_empty() { String::new() } else { format!("?{tls}") };
    let mut urls: Vec<String> = citus_workers()
        .iter()
        .map(|port| format!("postgres://postgres@127.0.0.1:{port}/{db}{query}"))
        .collect();
    urls.push(admin_url(db));
    urls
}

/// Runs `sql` (names only we made, never input) as the superuser on every node, from `postgres`.
async fn on_every_node(sql: &str) {
    for url in admin_urls_on_every_node("postgres") {
        connect(&url).await.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql} on {url}: {e}"));
    }
}

/// Each node's session settings for a Citus test database: database-level settings are not
/// copied with a template.
fn citus_database_settings(name: &str) -> String {
    format!(
        "alter database {name} set citus.enable_unsafe_triggers = on; \
         alter database {name} set citus.multi_shard_modify_mode = 'sequential'"
    )
}

/// The template on a Citus cluster: on every node, joined, migrated, distributed, migrated again;
/// then closed to connections (a Citus database has a maintenance daemon connected to it, which a
/// clone's source may not have).
async fn citus_template(name: &str) {
    on_every_node(&format!("create database {name}")).await;
    for url in admin_urls_on_every_node(name) {
        connect(&url).await.batch_execute("create extension citus").await.unwrap();
    }
    let coordinator = connect(&admin_url(name)).await;
    let port = pg_port();
    coordinator
        .execute("select citus_set_coordinator_host('127.0.0.1', $1::text::int)", &[&port])
        .await
        .unwrap();
    for worker in citus_workers() {
        coordinator.execute("select citus_add_node('127.0.0.1', $1::text::int)", &[&worker]).await.unwrap();
    }
    let connector = tenantry::db::Connector::from_url(&installer_url(name)).unwrap();
    tenantry::db::migrate::run(&connector).await.expect("migrating the Citus template");
    let distribute = concat!(env!("CARGO_MANIFEST_DIR"), "/.dev/citus_distribute.sql");
    let out = std::process::Command::new("psql")
        .args(["-qX", &admin_url(name), "-f", distribute])
        .output()
        .expect("psql");
    assert!(out.status.success(), "distributing the template: {}", String::from_utf8_lossy(&out.stderr));
    tenantry::db::migrate::run(&connector).await.expect("migrating the distributed template");
    drop(coordinator);
    on_every_node(&format!(
        "alter database {name} allow_connections false; \
         select pg_terminate_backend(pid) from pg_stat_activity where datname = '{name}' and pid <> pg_backend_pid()"
    ))
    .await;
}

/// The migrated template, created once per test run (stale databases of earlier runs dropped).
async fn template() -> &'static str {
    TEMPLATE
        .get_or_init(|| async {
            for url in admin_urls_on_every_node("postgres") {
                let admin = connect(&url).await;
                let stale = admin
                    .query("select datname from pg_database where datname like 'tt\\_%'", &[])
                    .await
                    .unwrap();
                for row in stale {
                    let name: String = row.get(0);
                    if name.starts_with("tt_") && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        let drop = format!("drop database if exists {name} with (force)");
                        admin.batch_execute(&drop).await.unwrap();
                    }
                }
            }
            let name = format!("tt_template_{}", std::process::id());
            if !citus_workers().is_empty() {
                // Citus propagates a role only when it creates it: one that predates the database
                // is unknown to its metadata, and the owner may not re-create it on the workers.
                on_every_node(
                    "drop role if exists tenantry_app; drop role if exists tenantry_definer; \
                     drop role if exists tenantry_backup; drop role if exists tenantry_owner",
                )
                .await;
                citus_template(&name).await;
                return name;
            }
            let installer = connect(&installer_url("postgres")).await;
            installer.batch_execute(&format!("create database {name}")).await.unwrap();
            let connector = tenantry::db::Connector::from_url(&installer_url(&name)).unwrap();
            tenantry::db::migrate::run(&connector).await.expect("migrating the template");
            name
        })
        .await
}

/// A fresh database cloned from the template (on every node of a Citus cluster); returns its name.
pub async fn fresh_database() -> String {
    let template = template().await;
    let name = format!("tt_{}", Uuid::new_v4().simple());
    let sql = format!("create database {name} template {template}");
    let mut urls = vec![installer_url("postgres")];
    if !citus_workers().is_empty() {
        urls = admin_urls_on_every_node("postgres");
    }
    for url in urls {
        let admin = connect(&url).await;
        let mut attempt = 0;
        loop {
            match admin.batch_execute(&sql).await {
                Ok(()) => break,
                // Two clones starting at the same instant can collide on the template; retry.
                Err(e) if attempt < 20 => {
                    attempt += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                }
                Err(e) => panic!("creating {name}: {e}"),
            }
        }
        if !citus_workers().is_empty() {
            admin.batch_execute(&citus_database_settings(&name)).await.unwrap();
        }
    }
    name
}

/// Settings with a trusted token issuer `https://idp.example.test` (never contacted unless one of
/// its tokens arrives), so organizations can grant it roles.
pub fn with_trusted_idp(s: &mut Settings) {
    s.auth.trusted_issuers.push(tenantry::config::TrustedIssuer {
        issuer: "https://idp.example.test".into(),
        jwks_url: Some("https://idp.example.test/jwks.json".into()),
        audience: None,
        algorithms: vec!["RS256".into()],
        role_mappings: Vec::new(),
    });
}

pub struct TestApp {
    pub address: String,
    pub database: String,
    pub http: reqwest::Client,
    /// A superuser connection to this test's database. It bypasses every policy: use it only to
    /// arrange data and to assert on raw rows, never to stand in for the app.
    pub rls_bypassing_admin: Client,
    signing_key_pem: Vec<u8>,
    pub kid: String,
    pub public_x: String,
    pub key_file: std::path::PathBuf,
    /// The clock sessions are timed by; `clock.advance(...)` moves it forward.
    pub clock: Arc<OffsetClock>,
    /// The running server's shared state (to start sessions, read counters).
    pub state: actix_web::web::Data<tenantry::api::AppState>,
    _key_dir: Arc<TempDir>,
    _observed: Arc<Observed>,
}

pub struct TempDir(pub std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// With `TEST_OBSERVED_STATUSES` set (`make test` sets it), each test server appends the
/// statuses it answered, per route template and method, when its test ends: the contract check
/// (.dev/openapi_check.py) compares them with those the OpenAPI document lists.
pub struct Observed(actix_web::web::Data<tenantry::http::Edge>);

impl Drop for Observed {
    fn drop(&mut self) {
        let Ok(file) = std::env::var("TEST_OBSERVED_STATUSES") else { return };
        let lines: String = self
            .0
            .metrics
            .answered()
            .into_iter()
            .map(|(route, method, status, count)| format!("{method}\t{route}\t{status}\t{count}\n"))
            .collect();
        if let Ok(mut out) = std::fs::OpenOptions::new().create(true).append(true).open(file) {
            let _ = std::io::Write::write_all(&mut out, lines.as_bytes());
        }
    }
}

#[derive(Debug, Clone)]
pub struct TestUser {
    pub token: String,
    pub id: Uuid,
}

#[derive(Debug, Clone)]
pub struct TestOrg {
    pub id: Uuid,
    pub owner: TestUser,
}

/// With `TEST_PGBOUNCER_PORT` set (`make test` sets it for the isolation suites' second run),
/// test servers reach PostgreSQL through that PgBouncer in transaction pooling mode.
pub fn pgbouncer_port() -> Option<u16> {
    std::env::var("TEST_PGBOUNCER_PORT").ok().map(|p| p.parse().expect("TEST_PGBOUNCER_PORT is a port"))
}

pub fn test_settings(database: &str, key_file: std::path::PathBuf) -> Settings {
    let defaults = Settings::default();
    let (database_url, statements) = match pgbouncer_port() {
        Some(port) => (
            format!("postgres://tenantry_app@127.0.0.1:{port}/{database}"),
            tenantry::config::StatementCache::Transaction,
        ),
        None => (app_url(database), tenantry::config::StatementCache::Connection),
    };
    Settings {
        listen: "127.0.0.1:0".into(),
        database_url: Some(database_url.into()),
        database_statement_cache: statements,
        // PgBouncer 1.18 can crash on a cancel request (FATAL "bad client state" in
        // disconnect_client); behind it a dropped transaction just rolls back.
        database_cancel_on_drop: pgbouncer_port().is_none(),
        // LISTEN needs a session: straight to PostgreSQL.
        listen_database_url: Some(app_url(database).into()),
        pool_size: 8,
        workers: Some(2),
        // One address (the tests') makes every request: the per-address limit is tested on its own.
        rate_limits: tenantry::config::RateLimitSettings {
            unauthenticated_per_minute: 1_000_000,
            ..defaults.rate_limits.clone()
        },
        auth: tenantry::config::AuthSettings { signing_key_file: key_file, ..defaults.auth.clone() },
        ..defaults
    }
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
        capture_logs();
        Self::spawn_on(fresh_database().await, configure).await
    }

    /// Another server instance on an existing test database (e.g. another region's).
    pub async fn spawn_on(database: String, configure: impl FnOnce(&mut Settings)) -> TestApp {
        let dir = std::env::temp_dir().join(format!("tenantry-test-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let key_file = dir.join("signing-key.pem");
        let mut settings = test_settings(&database, key_file.clone());
        settings.provider_keys.master_keys_file = dir.join("master-keys");
        configure(&mut settings);
        let key = tenantry::auth::keys::SigningKey::load_or_generate(&key_file, true).unwrap();
        let clock = Arc::new(OffsetClock::default());
        let application =
            Application::build_with_clock(settings, clock.clone()).await.expect("building the app");
        let state = application.state();
        let edge = application.edge();
        let address = format!("http://127.0.0.1:{}", application.port());
        tokio::spawn(application.run_until_stopped());
        TestApp {
            address,
            rls_bypassing_admin: connect(&admin_url(&database)).await,
            database,
            http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
            signing_key_pem: std::fs::read(&key_file).unwrap(),
            kid: key.kid.clone(),
            public_x: key.public_x.clone(),
            key_file: key_file.clone(),
            clock,
            state,
            _key_dir: Arc::new(TempDir(dir)),
            _observed: Arc::new(Observed(edge)),
        }
    }

    /// Another instance on this database that accepts this instance's tokens (same signing key),
    /// configured differently: another server of the same deployment.
    pub async fn sibling(&self, configure: impl FnOnce(&mut Settings)) -> TestApp {
        let key_file = self.key_file.clone();
        TestApp::spawn_on(self.database.clone(), move |s| {
            s.auth.signing_key_file = key_file;
            configure(s);
        })
        .await
    }

    /// The owner subscribes `org` to Pro: an open invoice, posted to the ledger. Returns its id.
    pub async fn subscription(&self, org: &TestOrg) -> Uuid {
        let path = format!("/api/v1/orgs/{}/subscription", org.id);
        let body = json!({"plan_id": "pro", "provider": "stripe"});
        let res = self.request(reqwest::Method::PUT, &path, Some(&org.owner.token), Some(&body)).await;
        assert_eq!(res.status(), StatusCode::CREATED, "subscribing");
        res.json::<Value>().await.unwrap()["invoice_id"].as_str().unwrap().parse().unwrap()
    }

    /// The organization's ledger balances by account, as its owner reads them.
    pub async fn balances(&self, org: &TestOrg) -> std::collections::BTreeMap<String, i64> {
        let body: Value = self
            .get(&format!("/api/v1/orgs/{}/ledger/balances", org.id), &org.owner.token)
            .await
            .json()
            .await
            .unwrap();
        body.as_array()
            .unwrap()
            .iter()
            .map(|b| (b["account"].as_str().unwrap().to_owned(), b["balance_minor"].as_i64().unwrap()))
            .collect()
    }

    /// The organization's subscription status, as its owner reads it.
    pub async fn subscription_status(&self, org: &TestOrg) -> String {
        let body: Value = self
            .get(&format!("/api/v1/orgs/{}/subscription", org.id), &org.owner.token)
            .await
            .json()
            .await
            .unwrap();
        body["status"].as_str().unwrap().to_owned()
    }

    /// A platform flag `key` (created if missing) configured by `org`: on, at 50%.
    pub async fn flag_config(&self, org: &TestOrg, key: &str) {
        self.rls_bypassing_admin
            .execute("insert into feature_flags (key) values ($1) on conflict do nothing", &[&key])
            .await
            .unwrap();
        let path = format!("/api/v1/orgs/{}/flags/{key}", org.id);
        let body = json!({"enabled": true, "rollout_percentage": 50});
        let res = self.request(reqwest::Method::PUT, &path, Some(&org.owner.token), Some(&body)).await;
        assert_eq!(res.status(), StatusCode::OK, "configuring a flag");
    }

    /// The master key file this instance generated (unless configured otherwise).
    pub fn master_keys_file(&self) -> std::path::PathBuf {
        self.key_file.with_file_name("master-keys")
    }

    /// Stores a provider key for `workspace` as the owner; returns the plaintext key.
    pub async fn provider_key(&self, org: &TestOrg, workspace: Uuid) -> String {
        let key = format!("sk-proj-{}", Uuid::new_v4().simple());
        let path = format!("/api/v1/orgs/{}/workspaces/{workspace}/provider-keys/openai", org.id);
        let res = self
            .request(reqwest::Method::PUT, &path, Some(&org.owner.token), Some(&json!({"api_key": key})))
            .await;
        assert_eq!(res.status(), StatusCode::CREATED, "storing a provider key");
        key
    }

    /// Signs arbitrary claims with the server's own key (for token-attack tests).
    pub fn sign(&self, header: Header, claims: &Value) -> String {
        let key = EncodingKey::from_ed_pem(&self.signing_key_pem).unwrap();
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    pub fn valid_claims(&self, subject: &str) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "email": subject, "exp": now + 600, "nbf": now - 5, "iat": now})
    }

    pub fn eddsa_header(&self) -> Header {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header
    }

    pub fn token_for(&self, email: &str) -> String {
        self.sign(self.eddsa_header(), &self.valid_claims(email))
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut req = self.http.request(method, format!("{}{path}", self.address));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        req.send().await.expect("request failed")
    }

    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.request(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.request(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.request(Method::PATCH, path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> reqwest::Response {
        self.request(Method::DELETE, path, Some(token), None).await
    }

    /// A public (unauthenticated) JSON document; the request must succeed.
    pub async fn public_json(&self, path: &str) -> Value {
        let res = self.http.get(format!("{}{path}", self.address)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "GET {path}");
        res.json().await.unwrap()
    }

    /// The OpenAPI document as the running server serves it.
    pub async fn served_openapi(&self) -> Value {
        self.public_json("/api/v1/openapi.json").await
    }

    /// A signed-in user (provisioned through `GET /me`, as a first request would).
    pub async fn user(&self, email: &str) -> TestUser {
        let token = self.token_for(email);
        let res = self.get("/api/v1/me", &token).await;
        assert_eq!(res.status(), StatusCode::OK, "provisioning {email}");
        let me: Value = res.json().await.unwrap();
        TestUser { token, id: me["id"].as_str().unwrap().parse().unwrap() }
    }

    /// An organization created through the API by a new owner.
    pub async fn org_with_owner(&self, slug: &str) -> TestOrg {
        let owner = self.user(&format!("owner@{slug}.test")).await;
        let res = self.post("/api/v1/orgs", &owner.token, &json!({"name": slug, "slug": slug})).await;
        assert_eq!(res.status(), StatusCode::CREATED, "creating {slug}");
        let body: Value = res.json().await.unwrap();
        TestOrg { id: body["id"].as_str().unwrap().parse().unwrap(), owner }
    }

    /// A new user added to `org` with `role` by its owner.
    pub async fn member(&self, org: &TestOrg, email: &str, role: &str) -> TestUser {
        let user = self.user(email).await;
        let res = self
            .post(
                &format!("/api/v1/orgs/{}/members", org.id),
                &org.owner.token,
                &json!({"user_id": user.id, "role": role}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED, "adding {email} as {role}");
        user
    }

    /// An API key for `org` with `scopes`, created by its owner: (key id, the key itself).
    pub async fn api_key(&self, org: &TestOrg, scopes: &[&str]) -> (Uuid, String) {
        let res = self
            .post(
                &format!("/api/v1/orgs/{}/api-keys", org.id),
                &org.owner.token,
                &json!({"name": "test key", "scopes": scopes}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED, "creating an API key");
        let body: Value = res.json().await.unwrap();
        (body["id"].as_str().unwrap().parse().unwrap(), body["secret"].as_str().unwrap().to_owned())
    }

    /// A workflow in `workspace`, created and published once (version 1) by the owner.
    /// A queued run of `workflow` (published), started by the owner.
    pub async fn run(&self, org: &TestOrg, workspace: Uuid, workflow: Uuid) -> Uuid {
        let path = format!("/api/v1/orgs/{}/workspaces/{workspace}/workflows/{workflow}/runs", org.id);
        let res = self.post(&path, &org.owner.token, &json!({"input": {"fixture": true}})).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED, "starting a run");
        res.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap()
    }

    pub async fn workflow(&self, org: &TestOrg, workspace: Uuid) -> Uuid {
        let base = format!("/api/v1/orgs/{}/workspaces/{workspace}/workflows", org.id);
        let definition = "steps:\n  - id: fetch\n    uses: http.get\n";
        let res = self
            .post(&base, &org.owner.token, &json!({"name": "fixture-wf", "definition": definition}))
            .await;
        assert_eq!(res.status(), StatusCode::CREATED, "creating a workflow");
        let id: Uuid = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
        let res = self
            .request(reqwest::Method::POST, &format!("{base}/{id}/publish"), Some(&org.owner.token), None)
            .await;
        assert_eq!(res.status(), StatusCode::CREATED, "publishing a workflow");
        id
    }

    /// An export of `org` by its owner, waited for until it succeeded: its final state.
    pub async fn export(&self, org: &TestOrg) -> Value {
        let res = self
            .request(
                reqwest::Method::POST,
                &format!("/api/v1/orgs/{}/exports", org.id),
                Some(&org.owner.token),
                None,
            )
            .await;
        assert_eq!(res.status(), StatusCode::ACCEPTED, "starting an export");
        let location = res.headers()["location"].to_str().unwrap().to_owned();
        for _ in 0..600 {
            let job: Value = self.get(&location, &org.owner.token).await.json().await.unwrap();
            match job["status"].as_str().unwrap() {
                "succeeded" => return job,
                "failed" => panic!("the export failed: {job}"),
                _ => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
        panic!("the export did not finish in 30 s");
    }

    /// An invitation to `org` created by its owner: (id, token).
    pub async fn invitation(&self, org: &TestOrg, email: &str, role: &str) -> (Uuid, String) {
        let res = self
            .post(
                &format!("/api/v1/orgs/{}/invitations", org.id),
                &org.owner.token,
                &json!({"email": email, "role": role}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED, "inviting {email}");
        let body: Value = res.json().await.unwrap();
        (body["id"].as_str().unwrap().parse().unwrap(), body["token"].as_str().unwrap().to_owned())
    }

    /// The owner lets the trusted issuer `with_trusted_idp` configures give `role` in `org`.
    pub async fn provider_grant(&self, org: &TestOrg, role: &str) -> Uuid {
        let res = self
            .post(
                &format!("/api/v1/orgs/{}/provider-grants", org.id),
                &org.owner.token,
                &json!({"provider": "issuer:https://idp.example.test", "role": role}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED, "granting {role} to the provider");
        res.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap()
    }

    /// A custom role of `org` granting `permissions`, created by its owner.
    pub async fn custom_role(&self, org: &TestOrg, name: &str, permissions: &[&str]) -> Uuid {
        let res = self
            .post(
                &format!("/api/v1/orgs/{}/roles", org.id),
                &org.owner.token,
                &json!({"name": name, "permissions": permissions}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED, "creating role {name}");
        let body: Value = res.json().await.unwrap();
        body["id"].as_str().unwrap().parse().unwrap()
    }

    /// A webhook endpoint of `org` for `event_types`, created by its owner: (id, signing secret).
    pub async fn webhook_endpoint(&self, org: &TestOrg, url: &str, event_types: &[&str]) -> (Uuid, String) {
        let res = self
            .post(
                &format!("/api/v1/orgs/{}/webhook-endpoints", org.id),
                &org.owner.token,
                &json!({"url": url, "event_types": event_types}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED, "creating a webhook endpoint");
        let body: Value = res.json().await.unwrap();
        (body["id"].as_str().unwrap().parse().unwrap(), body["secret"].as_str().unwrap().to_owned())
    }

    pub async fn workspace(&self, org: &TestOrg, name: &str) -> Uuid {
        let res = self
            .post(&format!("/api/v1/orgs/{}/workspaces", org.id), &org.owner.token, &json!({"name": name}))
            .await;
        assert_eq!(res.status(), StatusCode::CREATED, "creating workspace {name}");
        let body: Value = res.json().await.unwrap();
        body["id"].as_str().unwrap().parse().unwrap()
    }

    /// Signs `user` in as a sign-in flow would (a login attempt started and taken by the same
    /// browser, then the session started with its completion), returning the session's tokens.
    pub async fn sign_in(&self, user: &TestUser) -> tenantry::auth::sessions::TokenPair {
        use tenantry::db::identity;
        let (state, browser) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
        let hash = |s: &str| tenantry::auth::api_keys::sha256(s.as_bytes());
        let now = self.clock_now();
        let attempt = identity::NewLoginAttempt {
            state_hash: &hash(&state),
            browser_hash: &hash(&browser),
            provider: "test",
            issuer: None,
            pkce_verifier: "v",
            nonce: "n",
            redirect_to: None,
            now,
            expires_at: now + chrono::Duration::minutes(10),
        };
        identity::create_login_attempt(&self.state.db, &attempt).await.expect("starting a sign-in");
        let completion = tenantry::auth::api_keys::new_opaque("tnty_signin_").plaintext;
        let completion_hash = hash(&completion);
        let (_, completion) = identity::take_login_attempt(
            &self.state.db,
            &hash(&state),
            &hash(&browser),
            completion,
            &completion_hash,
            now,
        )
        .await
        .expect("taking the attempt")
        .expect("the attempt exists");
        let context =
            tenantry::auth::sessions::SignInContext { provider: "test", user_agent: Some("tests"), ip: None };
        self.state
            .sessions
            .start(tenantry::domain::UserId(user.id), completion, &context)
            .await
            .expect("starting a session")
    }

    /// The time on the server's (movable) clock.
    pub fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        tenantry::auth::clock::Clock::now(&*self.clock)
    }

    /// A pool of the app role on this test's database, for driving the library directly (a
    /// worker, a billing call) as the server would.
    pub fn app_db(&self, pool_size: usize) -> tenantry::db::Db {
        let connector = tenantry::db::Connector::from_url(&app_url(&self.database)).unwrap();
        let pool = tenantry::db::app_pool(&connector, pool_size, Duration::from_secs(5)).unwrap();
        tenantry::db::Db::new(pool, &connector, tenantry::domain::Region::Us)
    }

    /// Counts rows with a superuser query (bypassing RLS).
    pub async fn raw_count(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> i64 {
        self.rls_bypassing_admin.query_one(sql, params).await.unwrap().get(0)
    }
}

/// What each built-in role grants, from the catalogue the server publishes (`GET /permissions`).
pub async fn builtin_role_grants(
    app: &TestApp,
) -> std::collections::HashMap<String, std::collections::BTreeSet<String>> {
    let reader = app.user(&format!("catalogue-{}@example.test", Uuid::new_v4().simple())).await;
    let catalogue: Value = app.get("/api/v1/permissions", &reader.token).await.json().await.unwrap();
    catalogue["builtin_roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let perms =
                r["permissions"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect();
            (r["name"].as_str().unwrap().to_owned(), perms)
        })
        .collect()
}

/// Status and body, asserting the body is a problem document with the expected code.
pub async fn assert_problem(res: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(res.status(), status, "unexpected status");
    assert_eq!(
        res.headers().get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let request_id = res.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], code, "problem body: {body}");
    assert_eq!(body["status"], status.as_u16());
    assert_eq!(body["request_id"].as_str(), request_id.as_deref(), "request id in body and header");
    body
}

/// A problem body without its per-request parts, for "indistinguishable" comparisons.
pub fn without_request_id(mut body: Value) -> Value {
    if let Some(obj) = body.as_object_mut() {
        obj.remove("request_id");
    }
    body
}

/// A stand-in LLM provider on loopback: `/v1/models` answers 200 to the good key and 401 to any
/// other; `POST /v1/chat/completions` (good key) answers `stub answer to: <prompt>`; under
/// `/redirect` it redirects; under `/slow` it never answers; a prompt starting with `huge` gets an
/// endless (4 MiB) answer.
pub struct StubProvider {
    pub url: String,
    pub requests: Arc<std::sync::atomic::AtomicUsize>,
}

pub async fn stub_provider(good_key: String) -> StubProvider {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let good_key = good_key.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    }
                }
                let head_len = buffer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                let head = String::from_utf8_lossy(&buffer[..head_len]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buffer.len() < head_len + length {
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    }
                }
                let body: Value = serde_json::from_slice(&buffer[head_len..]).unwrap_or(Value::Null);
                let request = head;
                let path = request.split_whitespace().nth(1).unwrap_or_default().to_owned();
                let key = good_key.to_ascii_lowercase();
                let authorized = request.contains(&format!("authorization: bearer {key}\r\n"))
                    || request.contains(&format!("x-api-key: {key}\r\n"))
                    || request.contains(&format!("api-key: {key}\r\n"));
                let prompt = body.pointer("/messages/0/content").and_then(Value::as_str).unwrap_or_default();
                if authorized && path.starts_with("/v1/chat/completions") && prompt.starts_with("huge") {
                    // An answer without a length that never ends within the 1 MiB we take.
                    let _ = socket
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    let _ = socket.write_all(b"{\"choices\": [{\"message\": {\"content\": \"").await;
                    let chunk = vec![b'a'; 64 * 1024];
                    for _ in 0..64 {
                        if socket.write_all(&chunk).await.is_err() {
                            return; // the reader gave up, as it should
                        }
                    }
                    return;
                }
                let response = if path.starts_with("/slow") {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return;
                } else if path.starts_with("/redirect") {
                    "HTTP/1.1 302 Found\r\nlocation: http://169.254.169.254/\r\ncontent-length: 0\r\n\r\n"
                        .to_owned()
                } else if authorized && path.starts_with("/v1/chat/completions") {
                    let prompt =
                        body.pointer("/messages/0/content").and_then(Value::as_str).unwrap_or_default();
                    let answer = json!({"choices": [{"message": {"role": "assistant", "content": format!("stub answer to: {prompt}")}}]})
                        .to_string();
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                        answer.len()
                    )
                } else if authorized {
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"data\":[]}".to_owned()
                } else {
                    "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n".to_owned()
                };
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    StubProvider { url, requests }
}
