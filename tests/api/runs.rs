//! Workflow runs: the API, the worker, the queue and data mode, end to end against PostgreSQL.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use tenantry::config::WorkerSettings;
use tenantry::db::Db;
use tenantry::worker::{Outcome, Worker};

use crate::helpers::{TestApp, TestOrg, app_url, assert_problem, stub_provider};

fn worker_db(app: &TestApp, pool_size: usize) -> Db {
    app.app_db(pool_size)
}

fn worker(app: &TestApp, settings: WorkerSettings) -> Worker {
    Worker::new(worker_db(app, 4), settings)
}

/// A published workflow with this definition; returns its runs URL.
pub(crate) async fn published(
    app: &TestApp,
    org: &TestOrg,
    workspace: Uuid,
    definition: &str,
) -> (Uuid, String) {
    let base = format!("/api/v1/orgs/{}/workspaces/{workspace}/workflows", org.id);
    let res = app
        .post(
            &base,
            &org.owner.token,
            &json!({"name": format!("wf-{}", Uuid::new_v4().simple()), "definition": definition}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let id: Uuid = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
    let res = app.request(Method::POST, &format!("{base}/{id}/publish"), Some(&org.owner.token), None).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    (id, format!("{base}/{id}/runs"))
}

async fn start(app: &TestApp, org: &TestOrg, runs_url: &str, input: Value) -> Value {
    let res = app.post(runs_url, &org.owner.token, &json!({ "input": input })).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    res.json().await.unwrap()
}

async fn get_run(app: &TestApp, org: &TestOrg, workspace: Uuid, run: &str) -> Value {
    let res = app
        .get(&format!("/api/v1/orgs/{}/workspaces/{workspace}/runs/{run}", org.id), &org.owner.token)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

async fn set_full_mode(app: &TestApp, org: &TestOrg) {
    let res =
        app.patch(&format!("/api/v1/orgs/{}", org.id), &org.owner.token, &json!({"data_mode": "full"})).await;
    assert_eq!(res.status(), StatusCode::OK);
}

const ECHO: &str = "steps:\n  - id: first\n    uses: core.echo\n  - id: second\n    uses: core.echo\n    with: {done: true}\n    needs: [first]\n";

#[tokio::test]
async fn a_run_is_queued_then_executed_by_the_worker_with_its_content_in_full_mode() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    set_full_mode(&app, &org).await;
    let ws = app.workspace(&org, "Production").await;
    let (workflow, runs_url) = published(&app, &org, ws, ECHO).await;

    let run = start(&app, &org, &runs_url, json!({"question": "why?"})).await;
    assert_eq!(run["status"], "queued");
    assert_eq!(run["version"], 1);
    assert_eq!(run["workflow_id"], workflow.to_string());
    assert_eq!(run["input"], json!({"question": "why?"}));
    assert_eq!(run["created_by"], org.owner.id.to_string());
    let id = run["id"].as_str().unwrap().to_owned();

    let (claim, outcome) =
        worker(&app, WorkerSettings::default()).run_once().await.unwrap().expect("a run to claim");
    assert_eq!((claim.run_id.to_string(), claim.org.0, claim.attempt), (id.clone(), org.id, 1));
    assert_eq!(outcome, Outcome::Succeeded);

    let run = get_run(&app, &org, ws, &id).await;
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["output"], json!({"first": {"question": "why?"}, "second": {"done": true}}));
    assert_eq!(run["input"], json!({"question": "why?"}));
    assert!(run["output_bytes"].as_i64().unwrap() > 0);
    assert!(run["started_at"].is_string() && run["finished_at"].is_string());
    assert_eq!(run["error"], Value::Null);
    let pending = app
        .raw_count("select count(*) from workflow_run_inputs where organization_id = $1", &[&org.id])
        .await;
    assert_eq!(pending, 0, "a finished run's transient input is deleted");

    // The queue is empty now.
    assert!(worker(&app, WorkerSettings::default()).run_once().await.unwrap().is_none());

    // Listed, and filtered.
    let list = format!("/api/v1/orgs/{}/workspaces/{ws}/runs", org.id);
    let body: Value = app
        .get(&format!("{list}?status=succeeded&workflow_id={workflow}"), &org.owner.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
    let body: Value = app.get(&format!("{list}?status=queued"), &org.owner.token).await.json().await.unwrap();
    assert_eq!(body["items"], json!([]));
    let res = app.get(&format!("{list}?status=done"), &org.owner.token).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}

#[tokio::test]
async fn metadata_only_leaves_no_content_in_the_database() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("meta").await; // metadata_only is the default
    let ws = app.workspace(&org, "Production").await;
    let (_, echo_url) = published(&app, &org, ws, ECHO).await;
    let (_, fail_url) = published(
        &app,
        &org,
        ws,
        "steps:\n  - id: boom\n    uses: core.fail\n    with: {message: \"sensitive-failure-text\"}\n",
    )
    .await;
    let secret = "sensitive-input-7f3a";
    let ok = start(&app, &org, &echo_url, json!({"prompt": secret})).await;
    assert_eq!(ok["input"], Value::Null, "input is not returned in metadata_only mode");
    assert!(ok["input_bytes"].as_i64().unwrap() > 0, "its size is metadata");
    let failed = start(&app, &org, &fail_url, json!({"prompt": secret})).await;

    let worker = worker(&app, WorkerSettings::default());
    let mut outcomes = Vec::new();
    while let Some((_, outcome)) = worker.run_once().await.unwrap() {
        outcomes.push(outcome);
    }
    assert_eq!(outcomes.len(), 2);

    let ok = get_run(&app, &org, ws, ok["id"].as_str().unwrap()).await;
    assert_eq!(ok["status"], "succeeded");
    assert_eq!(ok["output"], Value::Null);
    assert!(ok["output_bytes"].as_i64().unwrap() > 0);
    let failed = get_run(&app, &org, ws, failed["id"].as_str().unwrap()).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["error"], json!({"code": "step_failed", "step": "boom", "message": null}));

    // An owner's query over every table of the organization finds no content at all.
    let content = app
        .raw_count(
            "select (select count(*) from workflow_runs where organization_id = $1 \
                       and (input is not null or output is not null or error_message is not null)) \
                  + (select count(*) from workflow_run_inputs where organization_id = $1)",
            &[&org.id],
        )
        .await;
    assert_eq!(content, 0);
    let dump = app
        .rls_bypassing_admin
        .query_one(
            "select concat_ws(' ', (select string_agg(row_to_json(r)::text, ' ') from workflow_runs r), \
                                   (select string_agg(row_to_json(a)::text, ' ') from audit_events a))",
            &[],
        )
        .await
        .unwrap()
        .get::<_, String>(0);
    assert!(!dump.contains(secret) && !dump.contains("sensitive-failure-text"), "content leaked: {dump}");
    assert!(dump.contains("step_failed"), "the dump holds the metadata");
}

#[tokio::test]
async fn queue_claims_are_exclusive_under_concurrency_none_twice_none_lost() {
    let app = TestApp::spawn().await;
    let mut expected = BTreeSet::new();
    for slug in ["alpha", "beta", "gamma"] {
        let org = app.org_with_owner(slug).await;
        let ws = app.workspace(&org, "Production").await;
        let (_, url) = published(&app, &org, ws, "steps:\n  - id: a\n    uses: core.echo\n").await;
        for i in 0..20 {
            let run = start(&app, &org, &url, json!({"i": i})).await;
            expected.insert(run["id"].as_str().unwrap().parse::<Uuid>().unwrap());
        }
    }

    // Eight workers, sharing nothing but the database, drain the queue at once.
    let mut handles = Vec::new();
    for _ in 0..8 {
        let worker = worker(&app, WorkerSettings::default());
        handles.push(tokio::spawn(async move {
            let mut processed = Vec::new();
            while let Some((claim, outcome)) = worker.run_once().await.unwrap() {
                assert_eq!(outcome, Outcome::Succeeded);
                processed.push(claim.run_id);
            }
            processed
        }));
    }
    let mut all = Vec::new();
    let mut busy_workers = 0;
    for handle in handles {
        let processed = handle.await.unwrap();
        busy_workers += usize::from(!processed.is_empty());
        all.extend(processed);
    }
    let unique: HashSet<Uuid> = all.iter().copied().collect();
    assert_eq!(all.len(), unique.len(), "a run was processed twice");
    assert_eq!(unique.into_iter().collect::<BTreeSet<_>>(), expected, "a run was lost");
    assert!(busy_workers > 1, "the workers really ran concurrently");
    let settled = app
        .raw_count("select count(*) from workflow_runs where status = 'succeeded' and attempts = 1", &[])
        .await;
    assert_eq!(settled, 60);
}

#[tokio::test]
async fn cancelling_stops_a_queued_run_and_abandons_a_running_one() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    set_full_mode(&app, &org).await;
    let ws = app.workspace(&org, "Production").await;
    let (_, url) =
        published(&app, &org, ws, "steps:\n  - id: nap\n    uses: core.sleep\n    with: {ms: 20000}\n").await;
    let runs = format!("/api/v1/orgs/{}/workspaces/{ws}/runs", org.id);

    // Queued: cancelled at once, and never claimed.
    let queued = start(&app, &org, &url, json!({})).await;
    let cancel = format!("{runs}/{}/cancel", queued["id"].as_str().unwrap());
    let res = app.request(Method::POST, &cancel, Some(&org.owner.token), None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "cancelled");
    assert!(body["finished_at"].is_string());
    let res = app.request(Method::POST, &cancel, Some(&org.owner.token), None).await;
    assert_problem(res, StatusCode::CONFLICT, "run_finished").await;
    let settings = WorkerSettings { lease_secs: 3, ..WorkerSettings::default() };
    assert!(
        worker(&app, settings.clone()).run_once().await.unwrap().is_none(),
        "a cancelled run is not claimed"
    );

    // Running: the worker notices at its next renewal and writes nothing.
    let running = start(&app, &org, &url, json!({})).await;
    let id = running["id"].as_str().unwrap().to_owned();
    let w = worker(&app, settings);
    let task = tokio::spawn(async move { w.run_once().await });
    for _ in 0..100 {
        if get_run(&app, &org, ws, &id).await["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let res = app.request(Method::POST, &format!("{runs}/{id}/cancel"), Some(&org.owner.token), None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let (_, outcome) =
        tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap().unwrap().unwrap();
    assert_eq!(outcome, Outcome::Abandoned);
    let run = get_run(&app, &org, ws, &id).await;
    assert_eq!((run["status"].as_str(), &run["output"]), (Some("cancelled"), &Value::Null));
}

#[tokio::test]
async fn a_run_whose_worker_died_is_claimed_again_then_failed_after_its_attempts() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let ws = app.workspace(&org, "Production").await;
    let (_, url) = published(&app, &org, ws, ECHO).await;
    let run = start(&app, &org, &url, json!({})).await;
    let id: Uuid = run["id"].as_str().unwrap().parse().unwrap();

    // A worker claims it with a 1-second lease and dies.
    let db = worker_db(&app, 2);
    let dead =
        tenantry::db::queue::claim_next_run(&db, "dead", &worker_settings(1, 2)).await.unwrap().unwrap();
    assert_eq!(dead.run_id, id);
    let live = worker(&app, WorkerSettings { max_attempts: 2, ..WorkerSettings::default() });
    assert!(live.run_once().await.unwrap().is_none(), "a live lease is not taken over");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (claim, outcome) = live.run_once().await.unwrap().unwrap();
    assert_eq!((claim.run_id, claim.attempt, outcome), (id, 2, Outcome::Succeeded));
    // The dead worker's claim no longer admits it to anything.
    assert!(!tenantry::db::queue::renew_run_claim(&db, dead.token, 60).await.unwrap());

    // Out of attempts: failed with lease_expired instead of a third claim.
    let run = start(&app, &org, &url, json!({})).await;
    for _ in 0..2 {
        tenantry::db::queue::claim_next_run(&db, "dead", &worker_settings(1, 2)).await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    assert!(live.run_once().await.unwrap().is_none());
    let run = get_run(&app, &org, ws, run["id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"]["code"], "lease_expired");
    assert_eq!(run["attempts"], 2);
}

#[tokio::test]
async fn starting_a_run_is_validated_and_changes_nothing_when_refused() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let ws = app.workspace(&org, "Production").await;
    let base = format!("/api/v1/orgs/{}/workspaces/{ws}/workflows", org.id);
    let res = app.post(&base, &org.owner.token, &json!({"name": "draft-only", "definition": ECHO})).await;
    let draft: Value = res.json().await.unwrap();
    let res = app
        .post(&format!("{base}/{}/runs", draft["id"].as_str().unwrap()), &org.owner.token, &json!({}))
        .await;
    assert_problem(res, StatusCode::CONFLICT, "not_published").await;

    let (workflow, url) = published(&app, &org, ws, "steps:\n  - id: x\n    uses: vendor.unknown\n").await;
    let res = app.post(&url, &org.owner.token, &json!({"input": [1, 2]})).await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "input");
    let res = app.post(&url, &org.owner.token, &json!({"version": 2})).await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "version");
    let res = app.post(&url, &org.owner.token, &json!({"input": {}, "priority": "high"})).await;
    assert!(res.status().is_client_error());
    let res = app.post(&format!("{base}/{}/runs", Uuid::new_v4()), &org.owner.token, &json!({})).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(app.raw_count("select count(*) from workflow_runs", &[]).await, 0, "nothing was queued");

    // An unknown action fails the run, naming the step.
    let run = start(&app, &org, &url, json!({})).await;
    let (_, outcome) = worker(&app, WorkerSettings::default()).run_once().await.unwrap().unwrap();
    assert_eq!(outcome, Outcome::Failed);
    let run = get_run(&app, &org, ws, run["id"].as_str().unwrap()).await;
    assert_eq!(run["error"]["code"], "unknown_action");
    assert_eq!(run["error"]["step"], "x");

    // Archived workflows cannot be run.
    let res =
        app.request(Method::POST, &format!("{base}/{workflow}/archive"), Some(&org.owner.token), None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = app.post(&url, &org.owner.token, &json!({})).await;
    assert_problem(res, StatusCode::CONFLICT, "workflow_archived").await;
}

#[tokio::test]
async fn a_worker_claim_is_confined_to_its_run_in_the_database() {
    let app = TestApp::spawn().await;
    let a = app.org_with_owner("org-a").await;
    set_full_mode(&app, &a).await;
    let b = app.org_with_owner("org-b").await;
    set_full_mode(&app, &b).await;
    let a_ws = app.workspace(&a, "A").await;
    let b_ws = app.workspace(&b, "B").await;
    let (_, a_url) = published(&app, &a, a_ws, ECHO).await;
    let (_, b_url) = published(&app, &b, b_ws, ECHO).await;
    let first = start(&app, &a, &a_url, json!({"a": 1})).await;
    start(&app, &a, &a_url, json!({"a": 2})).await;
    start(&app, &b, &b_url, json!({"b": 1})).await;

    let db = worker_db(&app, 2);
    let claim =
        tenantry::db::queue::claim_next_run(&db, "probe", &worker_settings(60, 3)).await.unwrap().unwrap();
    assert_eq!(claim.run_id.to_string(), first["id"].as_str().unwrap(), "oldest first");
    let client = crate::helpers::connect(&app_url(&app.database)).await;
    let seen = |org: Uuid, claim: Uuid| {
        let client = &client;
        async move {
            client.batch_execute("begin").await.unwrap();
            client
                .execute(
                    "select set_config('app.current_organization_id', $1, true), \
                     set_config('app.current_region', 'us', true), set_config('app.current_run_claim', $2, true)",
                    &[&org.to_string(), &claim.to_string()],
                )
                .await
                .unwrap();
            client.query_one("select active from app.enter_context()", &[]).await.unwrap();
            let row = client
                .query_one(
                    "select (select count(*) from workflow_runs), (select count(*) from workflow_run_inputs), \
                            (select count(*) from workspaces), (select count(*) from memberships)",
                    &[],
                )
                .await
                .unwrap();
            client.batch_execute("rollback").await.unwrap();
            (row.get::<_, i64>(0), row.get::<_, i64>(1), row.get::<_, i64>(2), row.get::<_, i64>(3))
        }
    };
    let (runs, inputs, _, _) = seen(a.id, claim.token).await;
    assert_eq!((runs, inputs), (1, 1), "its own run and input, not the other queued run of A");
    assert_eq!(seen(b.id, claim.token).await, (0, 0, 0, 0), "nothing of B");
    assert_eq!(seen(a.id, Uuid::new_v4()).await, (0, 0, 0, 0), "a made-up claim sees nothing");
}

#[tokio::test]
async fn an_llm_step_calls_the_provider_with_the_workspaces_own_key() {
    let good = "sk-proj-WorkspaceKey0123456789abcdefgh".to_owned();
    let stub = stub_provider(good.clone()).await;
    let url = stub.url.clone();
    let app = TestApp::spawn_with(|s| {
        s.provider_keys.openai_base_url = url;
        s.provider_keys.allow_private_addresses = true;
    })
    .await;
    let org = app.org_with_owner("acme").await;
    set_full_mode(&app, &org).await;
    let ws = app.workspace(&org, "Production").await;
    let keyless = app.workspace(&org, "No key").await;
    let res = app
        .request(
            Method::PUT,
            &format!("/api/v1/orgs/{}/workspaces/{ws}/provider-keys/openai", org.id),
            Some(&org.owner.token),
            Some(&json!({"api_key": good})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let definition =
        "steps:\n  - id: ask\n    uses: llm.chat\n    with: {provider: openai, model: gpt-4o-mini}\n";
    let (_, url) = published(&app, &org, ws, definition).await;
    let (_, keyless_url) = published(&app, &org, keyless, definition).await;

    let settings = app.state.settings.provider_keys.clone();
    let master_keys = app.state.master_keys.clone();
    let worker = worker(&app, WorkerSettings::default()).with_providers(settings, master_keys);
    let run = start(&app, &org, &url, json!({"prompt": "what is RLS?"})).await;
    let (_, outcome) = worker.run_once().await.unwrap().unwrap();
    assert_eq!(outcome, Outcome::Succeeded);
    let run = get_run(&app, &org, ws, run["id"].as_str().unwrap()).await;
    assert_eq!(run["output"], json!({"ask": {"text": "stub answer to: what is RLS?"}}));
    assert!(stub.requests.load(std::sync::atomic::Ordering::SeqCst) >= 1);

    // Another workspace's key is not used: that workspace has none.
    let run = start(&app, &org, &keyless_url, json!({"prompt": "hi"})).await;
    let (_, outcome) = worker.run_once().await.unwrap().unwrap();
    assert_eq!(outcome, Outcome::Failed);
    let run = get_run(&app, &org, keyless, run["id"].as_str().unwrap()).await;
    assert_eq!(run["error"]["code"], "provider_key_missing");
    assert_eq!(run["error"]["step"], "ask");

    // An answer larger than we read fails the step, without filling the worker's memory.
    let run = start(&app, &org, &url, json!({"prompt": "huge answer please"})).await;
    let (_, outcome) = worker.run_once().await.unwrap().unwrap();
    assert_eq!(outcome, Outcome::Failed);
    let run = get_run(&app, &org, ws, run["id"].as_str().unwrap()).await;
    assert_eq!(run["error"]["code"], "provider_failed");
    assert!(run["error"]["message"].as_str().unwrap().contains("larger than"), "{run}");
}

#[tokio::test]
async fn an_idle_worker_is_woken_by_a_new_run_and_stops_when_asked() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let ws = app.workspace(&org, "Production").await;
    let (_, url) = published(&app, &org, ws, ECHO).await;
    // Polling once a minute: only the notification can wake it in time.
    let settings = WorkerSettings { poll_interval_ms: 60_000, concurrency: 2, ..WorkerSettings::default() };
    let worker = worker(&app, settings);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listen = tenantry::db::Connector::from_url(&app_url(&app.database)).unwrap();
    let handle = tokio::spawn(async move {
        worker
            .run_until(listen, async {
                let _ = stopped.await;
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await; // idle, listening
    let run = start(&app, &org, &url, json!({"n": 1})).await;
    let id = run["id"].as_str().unwrap().to_owned();
    let started = std::time::Instant::now();
    loop {
        if get_run(&app, &org, ws, &id).await["status"] == "succeeded" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the worker was not woken");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), handle).await.unwrap().unwrap().unwrap();
}

fn worker_settings(lease_secs: u32, max_attempts: u32) -> tenantry::config::WorkerSettings {
    tenantry::config::WorkerSettings { lease_secs, max_attempts, ..Default::default() }
}
