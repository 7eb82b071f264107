//! The dispatcher: deliveries reach the right endpoints only, verified by the official Standard
//! Webhooks library (tests/webhook-receiver, a Python receiver with `standardwebhooks` pinned),
//! retried on schedule then disabled, fair to other organizations, and confined by its claim.

use std::collections::BTreeSet;
use std::io::BufRead as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tenantry::config::WebhookSettings;
use tenantry::db::{Actor, DbError, TenantTx};
use tenantry::dispatcher::Dispatcher;
use tenantry::domain::OrgId;
use tenantry::standard_webhooks::RETRY_SCHEDULE;
use uuid::Uuid;

use crate::helpers::{TestApp, TestOrg, assert_problem};

/// The receiver's python, from a venv .dev/webhook_receiver.sh installs once.
fn receiver_python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let root = env!("CARGO_MANIFEST_DIR");
        let out = std::process::Command::new(format!("{root}/.dev/webhook_receiver.sh"))
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("running .dev/webhook_receiver.sh");
        assert!(out.status.success(), "installing the webhook receiver's library failed");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    })
}

/// A running tests/webhook-receiver/receiver.py; each endpoint is a path `/hooks/<name>`.
struct Receiver {
    child: std::process::Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    fn start() -> Receiver {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/webhook-receiver/receiver.py");
        let mut child = std::process::Command::new(receiver_python())
            .arg(script)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("starting the webhook receiver");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port: u16 = line.trim().strip_prefix("port ").expect("the receiver's port").parse().unwrap();
        Receiver { child, base: format!("http://127.0.0.1:{port}"), http: reqwest::Client::new() }
    }

    fn url(&self, name: &str) -> String {
        format!("{}/hooks/{name}", self.base)
    }

    async fn configure(&self, name: &str, config: Value) {
        let res = self.http.post(format!("{}/control/{name}", self.base)).json(&config).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    async fn release(&self, name: &str) {
        self.http.post(format!("{}/release/{name}", self.base)).send().await.unwrap();
    }

    async fn received(&self, name: &str) -> Vec<Value> {
        self.http.get(format!("{}/received/{name}", self.base)).send().await.unwrap().json().await.unwrap()
    }

    /// Waits (at most 60 s) until `name` has received `count` deliveries.
    async fn wait_for(&self, name: &str, count: usize) -> Vec<Value> {
        for _ in 0..600 {
            let received = self.received(name).await;
            if received.len() >= count {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{name} did not receive {count} deliveries: {:?}", self.received(name).await.len());
    }
}

async fn app_allowing_loopback() -> TestApp {
    TestApp::spawn_with(|s| s.webhooks.allow_private_addresses = true).await
}

fn dispatch_settings() -> WebhookSettings {
    WebhookSettings { allow_private_addresses: true, attempt_timeout_secs: 20, ..WebhookSettings::default() }
}

fn dispatcher(app: &TestApp, settings: WebhookSettings) -> Dispatcher {
    Dispatcher::new(app.app_db(4), settings, app.state.master_keys.clone())
}

/// Attempts deliveries until none is due; how many were attempted.
async fn drain(dispatcher: &Dispatcher) -> usize {
    let mut attempted = 0;
    while dispatcher.dispatch_once().await.unwrap().is_some() {
        attempted += 1;
    }
    attempted
}

async fn event_ids(app: &TestApp, org: Uuid, after: Uuid) -> BTreeSet<String> {
    app.rls_bypassing_admin
        .query("select id::text from events where organization_id = $1 and id > $2", &[&org, &after])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn last_event(app: &TestApp, org: Uuid) -> Uuid {
    app.rls_bypassing_admin
        .query_one(
            "select coalesce((select id from events where organization_id = $1 order by id desc limit 1), \
             '00000000-0000-0000-0000-000000000000')",
            &[&org],
        )
        .await
        .unwrap()
        .get(0)
}

fn ids(received: &[Value]) -> Vec<String> {
    received.iter().map(|r| r["webhook_id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn deliveries_verify_with_the_official_library_also_across_a_secret_rotation() {
    let app = app_allowing_loopback().await;
    let receiver = Receiver::start();
    let org = app.org_with_owner("acme").await;
    let (endpoint, first) = app.webhook_endpoint(&org, &receiver.url("a"), &["workspace.created"]).await;
    receiver.configure("a", json!({"secrets": [first]})).await;
    let dispatcher = dispatcher(&app, dispatch_settings());

    let workspace = app.workspace(&org, "production").await;
    // Not a type the endpoint asked for: nothing is sent for it.
    app.member(&org, "ann@example.com", "viewer").await;
    assert_eq!(drain(&dispatcher).await, 1);
    let received = receiver.received("a").await;
    assert_eq!(received.len(), 1);
    let event: Uuid = app
        .rls_bypassing_admin
        .query_one(
            "select id from events where organization_id = $1 and type = 'workspace.created'",
            &[&org.id],
        )
        .await
        .unwrap()
        .get(0);
    let got = &received[0];
    assert_eq!(got["verified"], json!([true]), "{got}");
    assert_eq!(got["webhook_id"], json!(event.to_string()));
    assert_eq!(got["signatures"], json!(1));
    assert_eq!(got["payload"]["type"], json!("workspace.created"));
    assert_eq!(got["payload"]["id"], json!(event.to_string()));
    assert_eq!(got["payload"]["organization_id"], json!(org.id.to_string()));
    assert_eq!(got["payload"]["data"]["workspace_id"], json!(workspace.to_string()));
    assert!(got["payload"]["timestamp"].is_string());
    let sent_at: i64 = got["webhook_timestamp"].as_str().unwrap().parse().unwrap();
    assert!((Utc::now().timestamp() - sent_at).abs() < 60);

    // The log says so.
    let base = format!("/api/v1/orgs/{}/webhook-endpoints/{endpoint}", org.id);
    let log: Value = app.get(&format!("{base}/deliveries"), &org.owner.token).await.json().await.unwrap();
    let delivery = &log["items"][0];
    assert_eq!((delivery["status"].as_str(), delivery["attempts"].as_i64()), (Some("succeeded"), Some(1)));
    let one: Value = app
        .get(&format!("{base}/deliveries/{}", delivery["id"].as_str().unwrap()), &org.owner.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["attempt_log"][0]["response_status"], json!(200));
    assert_eq!(one["attempt_log"][0]["response_body"], Value::Null, "metadata mode keeps no response body");

    // Rotated with an overlap: both secrets sign, and a receiver holding either one verifies.
    let rotated: Value = app
        .post(&format!("{base}/rotate-secret"), &org.owner.token, &json!({"overlap_secs": 3600}))
        .await
        .json()
        .await
        .unwrap();
    let second = rotated["secret"].as_str().unwrap().to_owned();
    receiver
        .configure("a", json!({"secrets": [first, second, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}))
        .await;
    app.workspace(&org, "staging").await;
    assert_eq!(drain(&dispatcher).await, 1);
    let got = receiver.received("a").await.pop().unwrap();
    assert_eq!(got["signatures"], json!(2));
    assert_eq!(got["verified"], json!([true, true, false]), "{got}");

    // Rotated without one: only the newest secret signs.
    let rotated: Value = app
        .post(&format!("{base}/rotate-secret"), &org.owner.token, &json!({"overlap_secs": 0}))
        .await
        .json()
        .await
        .unwrap();
    let third = rotated["secret"].as_str().unwrap().to_owned();
    receiver.configure("a", json!({"secrets": [first, second, third]})).await;
    app.workspace(&org, "qa").await;
    assert_eq!(drain(&dispatcher).await, 1);
    let got = receiver.received("a").await.pop().unwrap();
    assert_eq!(got["signatures"], json!(1));
    assert_eq!(got["verified"], json!([false, false, true]), "{got}");
}

/// One change that writes exactly one event, chosen by `i`.
async fn change(app: &TestApp, org: &TestOrg, i: usize, kept: &mut Vec<Uuid>, keys: &mut Vec<Uuid>) {
    let base = format!("/api/v1/orgs/{}", org.id);
    let token = &org.owner.token;
    match i % 4 {
        0 => kept.push(app.workspace(org, &format!("ws-{i}")).await),
        1 => keys.push(app.api_key(org, &["workspaces:read"]).await.0),
        2 => {
            let key = keys.pop().unwrap();
            let res = app.delete(&format!("{base}/api-keys/{key}"), token).await;
            assert_eq!(res.status(), StatusCode::NO_CONTENT);
        }
        _ => {
            let workspace = kept.pop().unwrap();
            let res = app.delete(&format!("{base}/workspaces/{workspace}"), token).await;
            assert_eq!(res.status(), StatusCode::NO_CONTENT);
        }
    }
}

#[tokio::test]
async fn a_thousand_changes_in_two_organizations_reach_exactly_their_own_endpoints() {
    let app = Arc::new(app_allowing_loopback().await);
    let receiver = Receiver::start();
    let (a, b) = (app.org_with_owner("alpha").await, app.org_with_owner("beta").await);
    let (_, secret_a) = app.webhook_endpoint(&a, &receiver.url("a"), &["*"]).await;
    let (_, secret_b) = app.webhook_endpoint(&b, &receiver.url("b"), &["*"]).await;
    receiver.configure("a", json!({"secrets": [secret_a, secret_b]})).await;
    receiver.configure("b", json!({"secrets": [secret_a, secret_b]})).await;
    let (before_a, before_b) = (last_event(&app, a.id).await, last_event(&app, b.id).await);

    // 500 changes in each, both at once, while the dispatcher delivers.
    let dispatcher =
        Arc::new(dispatcher(&app, WebhookSettings { dispatch_concurrency: 6, ..dispatch_settings() }));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let loops = dispatcher.spawn_loops(Duration::from_millis(50), &stop_rx);
    let mut tasks = Vec::new();
    for org in [a.clone(), b.clone()] {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let (mut kept, mut keys) = (Vec::new(), Vec::new());
            for i in 0..500 {
                change(&app, &org, i, &mut kept, &mut keys).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let at_a = receiver.wait_for("a", 500).await;
    let at_b = receiver.wait_for("b", 500).await;
    stop.send(true).unwrap();
    for handle in loops {
        handle.await.unwrap();
    }

    let (expected_a, expected_b) =
        (event_ids(&app, a.id, before_a).await, event_ids(&app, b.id, before_b).await);
    assert_eq!((expected_a.len(), expected_b.len()), (500, 500), "one event per change");
    for (received, expected, other, org, verifies) in [
        (&at_a, &expected_a, &expected_b, a.id, [true, false]),
        (&at_b, &expected_b, &expected_a, b.id, [false, true]),
    ] {
        let got = ids(received);
        assert_eq!(got.len(), 500, "each event once");
        assert_eq!(
            got.iter().cloned().collect::<BTreeSet<_>>(),
            *expected,
            "exactly the organization's events"
        );
        assert!(got.iter().all(|id| !other.contains(id)), "nothing of the other organization");
        for r in received {
            assert_eq!(r["payload"]["organization_id"], json!(org.to_string()));
            assert_eq!(r["verified"], json!(verifies), "signed with its own endpoint's secret only");
        }
    }
    let types: BTreeSet<String> =
        at_a.iter().map(|r| r["payload"]["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(
        types,
        ["api_key.created", "api_key.revoked", "workspace.created", "workspace.deleted"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    assert_eq!(
        app.raw_count("select count(*) from webhook_deliveries where status <> 'succeeded'", &[]).await,
        0
    );
}

/// A clock the test moves.
fn movable_clock() -> (Arc<Mutex<DateTime<Utc>>>, impl Fn() -> DateTime<Utc> + Send + Sync + 'static) {
    let now = Arc::new(Mutex::new(Utc::now()));
    let read = now.clone();
    (now, move || *read.lock().unwrap())
}

#[tokio::test]
async fn a_failing_endpoint_is_retried_on_schedule_then_disabled_with_an_event() {
    let app = app_allowing_loopback().await;
    let receiver = Receiver::start();
    let org = app.org_with_owner("acme").await;
    let (failing, _) = app.webhook_endpoint(&org, &receiver.url("down"), &["workspace.created"]).await;
    let (_, watcher_secret) =
        app.webhook_endpoint(&org, &receiver.url("ops"), &["webhook_endpoint.disabled"]).await;
    receiver.configure("down", json!({"status": 500, "body": "broken"})).await;
    receiver.configure("ops", json!({"secrets": [watcher_secret]})).await;
    let (clock, now) = movable_clock();
    let dispatcher = dispatcher(&app, dispatch_settings()).with_clock(now);
    app.workspace(&org, "production").await;
    *clock.lock().unwrap() = Utc::now();

    let delivery = || async {
        app.rls_bypassing_admin
            .query_one(
                "select status, attempts, next_attempt_at, last_response_status, last_error from webhook_deliveries \
                 where endpoint_id = $1",
                &[&failing],
            )
            .await
            .unwrap()
    };
    for attempt in 1..=10 {
        // The last failure disables the endpoint, and the event saying so goes out at once.
        let due = if attempt == 10 { 2 } else { 1 };
        assert_eq!(drain(&dispatcher).await, due, "attempt {attempt} is due, and only it");
        let row = delivery().await;
        assert_eq!(row.get::<_, i32>("attempts"), attempt);
        assert_eq!(row.get::<_, Option<i32>>("last_response_status"), Some(500));
        assert_eq!(row.get::<_, Option<&str>>("last_error"), Some("HTTP 500"));
        assert_eq!(receiver.received("down").await.len(), attempt as usize);
        if attempt == 10 {
            assert_eq!(row.get::<_, &str>("status"), "failed");
            break;
        }
        assert_eq!(row.get::<_, &str>("status"), "pending");
        let due: DateTime<Utc> = row.get("next_attempt_at");
        let wait = (due - *clock.lock().unwrap()).to_std().unwrap();
        let planned = RETRY_SCHEDULE[attempt as usize - 1];
        assert!(
            wait >= planned.mul_f64(0.89) && wait <= planned.mul_f64(1.11),
            "attempt {attempt}: waits {wait:?}, the schedule says {planned:?} ±10 %"
        );
        // Not before it is due.
        *clock.lock().unwrap() = due - chrono::Duration::seconds(1);
        assert_eq!(drain(&dispatcher).await, 0, "attempt {} is not due yet", attempt + 1);
        *clock.lock().unwrap() = due;
    }

    // Ten failures over more than two days: the endpoint is disabled, and an event says so.
    let endpoint = app
        .rls_bypassing_admin
        .query_one(
            "select enabled, disabled_reason, consecutive_failures from webhook_endpoints where id = $1",
            &[&failing],
        )
        .await
        .unwrap();
    assert!(!endpoint.get::<_, bool>("enabled"));
    assert_eq!(endpoint.get::<_, Option<&str>>("disabled_reason"), Some("failing"));
    assert_eq!(endpoint.get::<_, i32>("consecutive_failures"), 10);
    let notice = &receiver.received("ops").await[0];
    assert_eq!(notice["verified"], json!([true]));
    assert_eq!(notice["payload"]["type"], json!("webhook_endpoint.disabled"));
    assert_eq!(notice["payload"]["data"]["endpoint_id"], json!(failing.to_string()));
    assert_eq!(notice["payload"]["data"]["reason"], json!("failing"));

    // Its log shows every attempt; nothing more is queued for it.
    let base = format!("/api/v1/orgs/{}/webhook-endpoints/{failing}", org.id);
    let log: Value = app.get(&format!("{base}/deliveries"), &org.owner.token).await.json().await.unwrap();
    let one: Value = app
        .get(&format!("{base}/deliveries/{}", log["items"][0]["id"].as_str().unwrap()), &org.owner.token)
        .await
        .json()
        .await
        .unwrap();
    let attempts = one["attempt_log"].as_array().unwrap();
    assert_eq!(attempts.len(), 10);
    assert!(attempts.iter().all(|a| a["response_status"] == json!(500)));
    app.workspace(&org, "staging").await;
    assert_eq!(
        app.raw_count("select count(*) from webhook_deliveries where endpoint_id = $1", &[&failing]).await,
        1
    );
    let retry = app
        .post(
            &format!("{base}/deliveries/{}/retry", log["items"][0]["id"].as_str().unwrap()),
            &org.owner.token,
            &json!({}),
        )
        .await;
    assert_problem(retry, StatusCode::CONFLICT, "endpoint_disabled").await;
}

#[tokio::test]
async fn a_slow_endpoint_does_not_delay_another_organizations_deliveries() {
    let app = app_allowing_loopback().await;
    let receiver = Receiver::start();
    let (slow, fast) = (app.org_with_owner("slow").await, app.org_with_owner("fast").await);
    let (slow_endpoint, _) = app.webhook_endpoint(&slow, &receiver.url("slow"), &["workspace.created"]).await;
    app.webhook_endpoint(&fast, &receiver.url("fast"), &["workspace.created"]).await;
    receiver.configure("slow", json!({"hold": true})).await;
    for i in 0..5 {
        app.workspace(&slow, &format!("ws-{i}")).await;
    }
    // A backlog longer than the claim's first look (100): it finds the other endpoint past it.
    app.rls_bypassing_admin
        .batch_execute(&format!(
            "with e as (insert into events (organization_id, id, type, occurred_at, data)                select '{org}', app.uuid_v7(now() - interval '1 minute'), 'workspace.created', now(), '{{}}'                from generate_series(1, 120) returning id)              insert into webhook_deliveries (organization_id, id, endpoint_id, event_id, next_attempt_at)                select '{org}', gen_random_uuid(), '{slow_endpoint}', e.id, now() - interval '1 minute' from e",
            org = slow.id
        ))
        .await
        .unwrap();
    app.workspace(&fast, "first").await;

    // Four dispatchers, at most two attempts in flight per endpoint: the slow endpoint's backlog,
    // queued first, holds two of them; the other organization's delivery goes out meanwhile.
    let settings =
        WebhookSettings { dispatch_concurrency: 4, max_in_flight_per_endpoint: 2, ..dispatch_settings() };
    let dispatcher = Arc::new(dispatcher(&app, settings));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let loops = dispatcher.spawn_loops(Duration::from_millis(50), &stop_rx);
    receiver.wait_for("fast", 1).await;
    let count = |status: &'static str| {
        let app = &app;
        async move {
            app.raw_count(
                "select count(*) from webhook_deliveries where endpoint_id = $1 and status = $2",
                &[&slow_endpoint, &status],
            )
            .await
        }
    };
    // Its second attempt may still be on the wire when the fast one lands (seen under a loaded CI
    // run): wait for both, then give a third the time to show up if the cap let one through.
    receiver.wait_for("slow", 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received("slow").await.len(), 2, "the slow endpoint holds its cap, no more");
    assert_eq!((count("delivering").await, count("pending").await, count("succeeded").await), (2, 123, 0));

    receiver.release("slow").await;
    receiver.configure("slow", json!({})).await;
    receiver.wait_for("slow", 125).await;
    for _ in 0..100 {
        if count("succeeded").await == 125 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count("succeeded").await, 125);
    stop.send(true).unwrap();
    for handle in loops {
        handle.await.unwrap();
    }
}

#[tokio::test]
async fn a_test_ping_and_a_redelivery_reach_the_endpoint_signed_and_logged() {
    let app = app_allowing_loopback().await;
    let receiver = Receiver::start();
    let org = app.org_with_owner("acme").await;
    let other = app.org_with_owner("other").await;
    let (endpoint, secret) = app.webhook_endpoint(&org, &receiver.url("a"), &["run.failed"]).await;
    let (_, everything) = app.webhook_endpoint(&org, &receiver.url("all"), &["*"]).await;
    receiver.configure("a", json!({"secrets": [secret]})).await;
    receiver.configure("all", json!({"secrets": [everything]})).await;
    let dispatcher = dispatcher(&app, dispatch_settings());
    let base = format!("/api/v1/orgs/{}/webhook-endpoints/{endpoint}", org.id);

    let res = app.post(&format!("{base}/test"), &org.owner.token, &json!({})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let queued: Value = res.json().await.unwrap();
    assert_eq!(
        (queued["event_type"].as_str(), queued["status"].as_str()),
        (Some("webhook_endpoint.test"), Some("pending"))
    );
    assert_eq!(drain(&dispatcher).await, 1, "only the pinged endpoint gets the ping");
    let got = receiver.received("a").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["verified"], json!([true]));
    assert_eq!(got[0]["payload"]["type"], json!("webhook_endpoint.test"));
    assert_eq!(got[0]["payload"]["data"]["endpoint_id"], json!(endpoint.to_string()));
    assert!(receiver.received("all").await.is_empty());
    let delivered: Value = app.get(&location, &org.owner.token).await.json().await.unwrap();
    assert_eq!(delivered["status"], json!("succeeded"));

    // Sent again: the same webhook-id (receivers drop repeats by it), a second attempt logged.
    let res = app.post(&format!("{location}/retry"), &org.owner.token, &json!({})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(drain(&dispatcher).await, 1);
    let got = receiver.received("a").await;
    assert_eq!(ids(&got), vec![got[0]["webhook_id"].as_str().unwrap().to_owned(); 2]);
    assert_eq!(got[1]["verified"], json!([true]));
    let delivered: Value = app.get(&location, &org.owner.token).await.json().await.unwrap();
    assert_eq!((delivered["status"].as_str(), delivered["attempts"].as_i64()), (Some("succeeded"), Some(2)));
    assert_eq!(delivered["attempt_log"].as_array().unwrap().len(), 2);
    let audited = app
        .raw_count("select count(*) from audit_events where action = 'webhook_endpoint.test' and organization_id = $1", &[&org.id])
        .await;
    assert_eq!(audited, 1);

    // Another organization's owner, a member without webhooks:manage, a disabled endpoint.
    let other_path = format!("/api/v1/orgs/{}/webhook-endpoints/{endpoint}/test", other.id);
    assert_problem(
        app.post(&other_path, &other.owner.token, &json!({})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_problem(
        app.post(&format!("{base}/test"), &other.owner.token, &json!({})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let developer = app.member(&org, "dev@example.com", "viewer").await;
    assert_problem(
        app.post(&format!("{base}/test"), &developer.token, &json!({})).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let res = app.patch(&base, &org.owner.token, &json!({"enabled": false})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_problem(
        app.post(&format!("{base}/test"), &org.owner.token, &json!({})).await,
        StatusCode::CONFLICT,
        "endpoint_disabled",
    )
    .await;
    assert_eq!(
        app.raw_count("select count(*) from events where type = 'webhook_endpoint.test'", &[]).await,
        1
    );
}

#[tokio::test]
async fn redirects_are_not_followed_and_private_addresses_are_refused_without_the_allowance() {
    let app = app_allowing_loopback().await;
    let receiver = Receiver::start();
    let org = app.org_with_owner("acme").await;
    let (moved, _) = app.webhook_endpoint(&org, &receiver.url("moved"), &["workspace.created"]).await;
    receiver.configure("moved", json!({"status": 307, "location": receiver.url("elsewhere")})).await;
    app.workspace(&org, "production").await;
    assert_eq!(drain(&dispatcher(&app, dispatch_settings())).await, 1);
    let row = app
        .rls_bypassing_admin
        .query_one(
            "select status, last_response_status, last_error from webhook_deliveries where endpoint_id = $1",
            &[&moved],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>("status"), "pending", "a redirect is a failure, retried later");
    assert_eq!(row.get::<_, Option<i32>>("last_response_status"), Some(307));
    assert!(receiver.received("elsewhere").await.is_empty());

    // A dispatcher without the tests' allowance never connects to a loopback address.
    app.rls_bypassing_admin
        .execute("update webhook_endpoints set enabled = false, disabled_reason = 'manual'", &[])
        .await
        .unwrap();
    let (guarded, _) = app.webhook_endpoint(&org, &receiver.url("guarded"), &["workspace.created"]).await;
    app.workspace(&org, "staging").await;
    let strict = WebhookSettings { allow_private_addresses: false, ..dispatch_settings() };
    assert_eq!(drain(&dispatcher(&app, strict)).await, 1);
    let error: String = app
        .rls_bypassing_admin
        .query_one("select last_error from webhook_deliveries where endpoint_id = $1", &[&guarded])
        .await
        .unwrap()
        .get(0);
    assert!(error.starts_with("refused:"), "{error}");
    assert!(receiver.received("guarded").await.is_empty());
    let logs = crate::helpers::captured_logs();
    // (The test subscriber logs at debug, statement parameters included: the binary never does.)
    let leaked: Vec<&str> =
        logs.lines().filter(|l| l.contains(&receiver.base) && !l.contains("tokio_postgres::query")).collect();
    assert!(leaked.is_empty(), "no endpoint URL in the logs: {leaked:?}");
}

#[tokio::test]
async fn a_delivery_claim_admits_its_own_delivery_only_and_dies_with_its_lease() {
    let app = app_allowing_loopback().await;
    let (a, b) = (app.org_with_owner("alpha").await, app.org_with_owner("beta").await);
    let (endpoint, _) = app.webhook_endpoint(&a, "http://127.0.0.1:9/a", &["workspace.created"]).await;
    app.webhook_endpoint(&a, "http://127.0.0.1:9/other", &["workspace.created"]).await;
    app.webhook_endpoint(&b, "http://127.0.0.1:9/b", &["workspace.created"]).await;
    app.workspace(&a, "one").await;
    app.workspace(&b, "two").await;
    let db = app.app_db(2);
    let settings = dispatch_settings();
    let claim = tenantry::db::deliveries::claim_next_delivery(&db, "test", &settings, Utc::now())
        .await
        .unwrap()
        .expect("a delivery to claim");
    assert_eq!(claim.org, OrgId(a.id), "the oldest due first");

    // In its organization it sees its delivery, its event and its endpoint, nothing else of them.
    let (mut tx, membership) =
        TenantTx::begin_org(&db, Actor::dispatcher(claim.token), claim.org).await.unwrap();
    assert!(membership.permissions.is_empty(), "a claim carries no permission");
    for (sql, expected) in [
        ("select count(*) from webhook_deliveries", 1i64),
        ("select count(*) from events", 1),
        ("select count(*) from webhook_endpoints", 1),
        ("select count(*) from webhook_delivery_attempts", 0),
        ("select count(*) from audit_events", 0),
        ("select count(*) from api_keys", 0),
    ] {
        let n: i64 = tx.query_found(sql, &[]).await.unwrap().get(0);
        assert_eq!(n, expected, "{sql}");
    }
    // It cannot change an endpoint or a delivery directly, nor ping.
    let changed =
        tx.execute("update webhook_endpoints set url = 'https://evil.example.com/x'", &[]).await.unwrap();
    assert_eq!(changed, 0);
    drop(tx);
    let (mut tx, _) = TenantTx::begin_org(&db, Actor::dispatcher(claim.token), claim.org).await.unwrap();
    let ping = tx.query("select app.ping_webhook_endpoint($1)", &[&endpoint]).await;
    assert!(matches!(ping, Err(DbError::PolicyViolation)), "{ping:?}");
    drop(tx);
    assert_eq!(
        app.raw_count("select count(*) from events where type = 'webhook_endpoint.test'", &[]).await,
        0
    );
    // In the other organization, or with a made-up token: not admitted at all.
    assert!(matches!(
        TenantTx::begin_org(&db, Actor::dispatcher(claim.token), OrgId(b.id)).await,
        Err(DbError::Unauthenticated)
    ));
    assert!(matches!(
        TenantTx::begin_org(&db, Actor::dispatcher(Uuid::new_v4()), claim.org).await,
        Err(DbError::Unauthenticated)
    ));

    // Its lease runs out: another dispatcher takes the delivery over, the lost attempt is logged,
    // and the first one's result is refused.
    app.rls_bypassing_admin
        .execute("update webhook_deliveries set lease_expires_at = now() - interval '1 second' where claim_token = $1", &[&claim.token])
        .await
        .unwrap();
    let again = tenantry::db::deliveries::claim_next_delivery(&db, "other", &settings, Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.delivery_id, again.attempt), (claim.delivery_id, 2));
    assert_ne!(again.token, claim.token);
    let outcome = tenantry::db::deliveries::AttemptOutcome {
        started_at: Utc::now(),
        duration_ms: 5,
        response_status: Some(200),
        error: None,
        response_body: None,
    };
    let late = tenantry::db::deliveries::finish_delivery(&db, &claim, &outcome, None, Utc::now(), &settings)
        .await
        .unwrap();
    assert_eq!(late, None, "the lost claim records nothing");
    let done = tenantry::db::deliveries::finish_delivery(&db, &again, &outcome, None, Utc::now(), &settings)
        .await
        .unwrap();
    assert_eq!(done.as_deref(), Some("succeeded"));
    let log: Vec<(i32, Option<String>)> = app
        .rls_bypassing_admin
        .query(
            "select attempt, error from webhook_delivery_attempts where delivery_id = $1 order by attempt",
            &[&claim.delivery_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(log.len(), 2);
    assert!(log[0].1.as_deref().unwrap().starts_with("lease_expired"), "{log:?}");
    assert_eq!(log[1], (2, None));
}
