//! Rolling deploys: version N keeps serving on a schema N+1 migrated; the server drains and the
//! worker finishes or releases its runs on SIGTERM and on SIGINT, as orchestrators and people
//! stop them. The processes are the real binary, stopped with a real signal.

use std::io::{Read as _, Write as _};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TempDir, TestApp, app_url};

#[tokio::test]
async fn readiness_accepts_a_schema_ahead_of_the_binary_and_says_so() {
    let app = TestApp::spawn().await;
    let next = i32::try_from(tenantry::db::migrate::latest_version()).unwrap() + 1;
    // What the next release's `tenantry migrate` leaves behind.
    app.rls_bypassing_admin
        .execute(
            "insert into refinery_schema_history (version, name, applied_on, checksum) \
             values ($1, 'from_the_next_release', now()::text, '0')",
            &[&next],
        )
        .await
        .unwrap();
    let res = app.request(Method::GET, "/api/v1/health/ready", None, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["checks"]["migrations"]["ok"], true);
    let detail = body["checks"]["migrations"]["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("applied {next}, ahead of this binary's {}", next - 1)), "{detail}");
}

/// `tenantry <command>` on the test's database, with its own key files.
pub(crate) fn spawn_binary(app: &TestApp, dir: &TempDir, command: &str, env: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantry"));
    cmd.arg(command)
        .env("TENANTRY_DATABASE_URL", app_url(&app.database))
        .env("TENANTRY_AUTH__SIGNING_KEY_FILE", &app.key_file)
        .env("TENANTRY_PROVIDER_KEYS__MASTER_KEYS_FILE", dir.0.join("master-keys"))
        .env("TENANTRY_LOG", "info")
        .env("TENANTRY_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("starting tenantry")
}

pub(crate) fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(child.id().to_string()).status().unwrap();
    assert!(status.success(), "kill -{name}");
}

/// Waits up to `limit` for the process to exit; its status and what it logged.
pub(crate) fn wait_exit(mut child: Child, limit: Duration) -> (std::process::ExitStatus, String) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut logs = String::new();
            child.stderr.take().unwrap().read_to_string(&mut logs).unwrap();
            return (status, logs);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("tenantry did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a new connection to `address` gets an HTTP answer within a second. (While draining,
/// the kernel may still complete a TCP handshake on the listening socket; nobody answers.)
fn served(address: &str) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(address) else { return false };
    stream.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    if stream.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: tenantry\r\n\r\n").is_err() {
        return false;
    }
    let mut first = [0u8; 8];
    matches!(stream.read(&mut first), Ok(n) if n > 0 && first.starts_with(b"HTTP"))
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub(crate) fn scratch() -> TempDir {
    TempDir(crate::services::scratch_dir("rollout"))
}

#[tokio::test]
async fn the_server_drains_requests_in_flight_on_sigterm_and_on_sigint() {
    let app = TestApp::spawn().await;
    let user = app.user("drain@example.test").await;
    let dir = scratch();
    for name in ["TERM", "INT"] {
        let port = free_port();
        let child = spawn_binary(&app, &dir, "serve", &[("TENANTRY_LISTEN", format!("127.0.0.1:{port}"))]);
        let address = format!("127.0.0.1:{port}");
        let started = Instant::now();
        let mut in_flight = loop {
            match std::net::TcpStream::connect(&address) {
                Ok(stream) => break stream,
                Err(_) if started.elapsed() < Duration::from_secs(20) => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => panic!("the server did not listen: {e}"),
            }
        };
        assert!(served(&address), "the server answers before the signal");
        // A request in flight when the signal arrives: authenticated, its body still arriving.
        let slug = format!("drain-{}", name.to_ascii_lowercase());
        let body = json!({"name": slug, "slug": slug}).to_string();
        let (head, tail) = body.split_at(body.len() / 2);
        write!(
            in_flight,
            "POST /api/v1/orgs HTTP/1.1\r\nHost: tenantry\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
            user.token,
            body.len()
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        signal(&child, name);
        std::thread::sleep(Duration::from_millis(500));
        assert!(!served(&address), "SIG{name}: a draining server serves no new connection");
        in_flight.write_all(tail.as_bytes()).unwrap();
        in_flight.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut response = String::new();
        in_flight.read_to_string(&mut response).unwrap();
        assert!(
            response.starts_with("HTTP/1.1 201"),
            "SIG{name}: the request in flight is answered: {response}"
        );
        let created: i64 = app
            .rls_bypassing_admin
            .query_one("select count(*) from organizations where slug = $1", &[&slug])
            .await
            .unwrap()
            .get(0);
        assert_eq!(created, 1, "SIG{name}: and its work is committed");
        let (status, logs) = wait_exit(child, Duration::from_secs(15));
        assert!(status.success(), "SIG{name}: exits cleanly: {status:?}\n{logs}");
        assert!(logs.contains(&format!("SIG{name}")), "{logs}");
    }
}

async fn run_row(app: &TestApp, id: Uuid) -> (String, i32) {
    let row = app
        .rls_bypassing_admin
        .query_one("select status, attempts from workflow_runs where id = $1", &[&id])
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

async fn wait_for_status(app: &TestApp, id: Uuid, status: &str) {
    let started = Instant::now();
    while run_row(app, id).await.0 != status {
        assert!(started.elapsed() < Duration::from_secs(20), "the run never became {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A published workflow that sleeps `ms`; returns its runs URL.
async fn sleeper(app: &TestApp, org: &crate::helpers::TestOrg, ms: u32) -> String {
    let ws = app.workspace(org, &format!("ws-{ms}")).await;
    let base = format!("/api/v1/orgs/{}/workspaces/{ws}/workflows", org.id);
    let definition = format!("steps:\n  - id: nap\n    uses: core.sleep\n    with: {{ms: {ms}}}\n");
    let res = app
        .post(&base, &org.owner.token, &json!({"name": format!("nap-{ms}"), "definition": definition}))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let res = app.request(Method::POST, &format!("{base}/{id}/publish"), Some(&org.owner.token), None).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    format!("{base}/{id}/runs")
}

async fn start_run(app: &TestApp, org: &crate::helpers::TestOrg, runs: &str) -> Uuid {
    let res = app.post(runs, &org.owner.token, &json!({"input": {}})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    res.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn the_worker_finishes_what_fits_its_grace_and_releases_the_rest_without_spending_an_attempt() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let dir = scratch();
    let grace = [("TENANTRY_WORKER__SHUTDOWN_GRACE_SECS", "2".to_owned())];

    // SIGINT while a short run executes: it finishes within the grace period.
    let short = sleeper(&app, &org, 1000).await;
    let id = start_run(&app, &org, &short).await;
    let child = spawn_binary(&app, &dir, "worker", &grace);
    wait_for_status(&app, id, "running").await;
    signal(&child, "INT");
    let (status, logs) = wait_exit(child, Duration::from_secs(15));
    assert!(status.success(), "{status:?}\n{logs}");
    assert_eq!(run_row(&app, id).await, ("succeeded".into(), 1));

    // SIGTERM while a long run executes: released at the end of the grace period, queued again
    // with its attempt given back, and nothing written.
    let long = sleeper(&app, &org, 6000).await;
    let id = start_run(&app, &org, &long).await;
    let child = spawn_binary(&app, &dir, "worker", &grace);
    wait_for_status(&app, id, "running").await;
    let signalled = Instant::now();
    signal(&child, "TERM");
    let (status, logs) = wait_exit(child, Duration::from_secs(15));
    assert!(status.success(), "{status:?}\n{logs}");
    assert!(signalled.elapsed() < Duration::from_secs(5), "the worker waited only its grace period");
    assert!(logs.contains("SIGTERM") && logs.contains("releasing"), "{logs}");
    assert_eq!(run_row(&app, id).await, ("queued".into(), 0));
    let leftover: i64 = app
        .rls_bypassing_admin
        .query_one(
            "select count(*) from workflow_runs where id = $1 and (claim_token is not null or claimed_by is not null \
             or output is not null or finished_at is not null)",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leftover, 0, "a released run carries nothing of its claim");

    // Another worker claims it as its first attempt and finishes it.
    let started = spawn_binary(&app, &dir, "worker", &grace);
    wait_for_status(&app, id, "succeeded").await;
    assert_eq!(run_row(&app, id).await, ("succeeded".into(), 1));
    signal(&started, "TERM");
    assert!(wait_exit(started, Duration::from_secs(15)).0.success());
}
