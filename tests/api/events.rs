//! Events: every change in the catalogue writes its event in the same transaction (none for a
//! change that rolled back), payloads keep to the data mode, and reading them is a permission of
//! its own, inside the organization (another tenant's event is a 404 like a random id).

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tenantry::config::WorkerSettings;
use tenantry::db::{Actor, TenantTx};
use tenantry::domain::{OrgId, UserId};
use tenantry::worker::{Outcome, Worker};
use uuid::Uuid;

use crate::helpers::{TestApp, TestOrg, app_url, assert_problem, connect, set_context};

const ECHO: &str = "steps:\n  - id: say\n    uses: core.echo\n";
const FAIL: &str =
    "steps:\n  - id: boom\n    uses: core.fail\n    with:\n      message: the secret plan failed\n";

/// The organization's events, oldest first, as its owner reads them.
async fn events(app: &TestApp, org: &TestOrg, query: &str) -> Vec<Value> {
    let res = app.get(&format!("/api/v1/orgs/{}/events?limit=200{query}", org.id), &org.owner.token).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json::<Value>().await.unwrap()["items"].as_array().unwrap().clone()
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// A published workflow with `definition`; returns its runs URL.
async fn published(app: &TestApp, org: &TestOrg, workspace: Uuid, name: &str, definition: &str) -> String {
    let base = format!("/api/v1/orgs/{}/workspaces/{workspace}/workflows", org.id);
    let res = app.post(&base, &org.owner.token, &json!({"name": name, "definition": definition})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let res = app.request(Method::POST, &format!("{base}/{id}/publish"), Some(&org.owner.token), None).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    format!("{base}/{id}/runs")
}

async fn start(app: &TestApp, org: &TestOrg, runs: &str) -> String {
    let res = app.post(runs, &org.owner.token, &json!({"input": {"prompt": "private words"}})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

async fn work(app: &TestApp) -> Outcome {
    let worker = Worker::new(app.app_db(2), WorkerSettings::default());
    worker.run_once().await.unwrap().expect("a run to claim").1
}

#[tokio::test]
async fn every_change_in_the_catalogue_writes_its_event_with_the_change() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let base = format!("/api/v1/orgs/{}", org.id);

    let workspace = app.workspace(&org, "production").await;
    let viewer = app.member(&org, "viewer@acme.test", "viewer").await;
    let res = app
        .patch(&format!("{base}/members/{}", viewer.id), &org.owner.token, &json!({"role": "editor"}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let (key, _) = app.api_key(&org, &["workspaces:read"]).await;
    assert_eq!(
        app.delete(&format!("{base}/api-keys/{key}"), &org.owner.token).await.status(),
        StatusCode::NO_CONTENT
    );
    let (_, invitation) = app.invitation(&org, "newcomer@acme.test", "viewer").await;
    let newcomer = app.user("newcomer@acme.test").await;
    let res = app.post("/api/v1/invitations/accept", &newcomer.token, &json!({"token": invitation})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let echo = published(&app, &org, workspace, "echo", ECHO).await;
    start(&app, &org, &echo).await;
    assert_eq!(work(&app).await, Outcome::Succeeded);
    let fail = published(&app, &org, workspace, "fail", FAIL).await;
    start(&app, &org, &fail).await;
    assert_eq!(work(&app).await, Outcome::Failed);
    let cancelled = start(&app, &org, &echo).await;
    let res = app
        .request(
            Method::POST,
            &format!("{base}/workspaces/{workspace}/runs/{cancelled}/cancel"),
            Some(&org.owner.token),
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let invoice = app.subscription(&org).await;
    let (mut tx, _) =
        TenantTx::begin_org(&app.app_db(1), Actor::user(UserId(org.owner.id)), OrgId(org.id)).await.unwrap();
    tenantry::billing::record_payment(&mut tx, OrgId(org.id), invoice, 4900, "USD", "test:payment")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    app.provider_key(&org, workspace).await;
    assert_eq!(
        app.delete(&format!("{base}/members/{}", viewer.id), &org.owner.token).await.status(),
        StatusCode::NO_CONTENT
    );
    let doomed = app.workspace(&org, "doomed").await;
    assert_eq!(
        app.delete(&format!("{base}/workspaces/{doomed}"), &org.owner.token).await.status(),
        StatusCode::NO_CONTENT
    );

    // The dispatcher disables an endpoint that keeps failing (simulated here as its update).
    let (endpoint, _) = app.webhook_endpoint(&org, "https://hooks.example.com/x", &["run.failed"]).await;
    app.rls_bypassing_admin
        .execute(
            "update webhook_endpoints set enabled = false, disabled_reason = 'failing', consecutive_failures = 50 \
             where id = $1",
            &[&endpoint],
        )
        .await
        .unwrap();
    // A test ping, to another endpoint.
    let (pinged, _) = app.webhook_endpoint(&org, "https://hooks.example.com/y", &["run.failed"]).await;
    let ping =
        app.post(&format!("{base}/webhook-endpoints/{pinged}/test"), &org.owner.token, &json!({})).await;
    assert_eq!(ping.status(), StatusCode::ACCEPTED);

    let all = events(&app, &org, "").await;
    assert_eq!(
        types(&all),
        [
            "member.added", // the owner, with the organization
            "workspace.created",
            "member.added",
            "member.role_changed",
            "api_key.created",
            "api_key.revoked",
            "member.added", // accepting adds the member, then marks the invitation accepted
            "invitation.accepted",
            "workflow.version_published",
            "run.succeeded",
            "workflow.version_published",
            "run.failed",
            "run.cancelled",
            "subscription.changed",
            "invoice.paid",
            "subscription.changed", // the payment activates it
            "provider_key.changed",
            "member.removed",
            "workspace.created",
            "workspace.deleted",
            "webhook_endpoint.disabled",
            "webhook_endpoint.test",
        ]
    );
    // Every type of the published catalogue was written.
    let catalogue: BTreeSet<String> = app
        .get("/api/v1/event-types", &org.owner.token)
        .await
        .json::<Vec<Value>>()
        .await
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(catalogue, types(&all).into_iter().map(str::to_owned).collect());

    let by_type = |t: &str| all.iter().find(|e| e["type"] == t).unwrap().clone();
    let changed = by_type("member.role_changed");
    assert_eq!(
        (&changed["data"]["user_id"], &changed["data"]["role"], &changed["data"]["previous_role"]),
        (&json!(viewer.id), &json!("editor"), &json!("viewer"))
    );
    assert_eq!(changed["actor_user_id"], json!(org.owner.id));
    assert_eq!(by_type("workspace.created")["workspace_id"], json!(workspace));
    assert_eq!(by_type("api_key.created")["data"]["api_key_id"], json!(key));
    assert_eq!(by_type("invoice.paid")["data"]["amount_paid_minor"], 4900);
    assert_eq!(by_type("provider_key.changed")["data"]["action"], "stored");
    let disabled = by_type("webhook_endpoint.disabled");
    assert_eq!(
        (&disabled["data"]["endpoint_id"], &disabled["data"]["consecutive_failures"]),
        (&json!(endpoint), &json!(50))
    );
    // The worker and the payment have no actor; ids are time-ordered (UUIDv7).
    assert_eq!(by_type("run.succeeded")["actor_user_id"], Value::Null);
    let ids: Vec<&str> = all.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert!(ids.iter().all(|id| id.as_bytes()[14] == b'7'), "{ids:?}");
    // metadata_only (the default): ids and metadata, never the run's output or error message.
    // What the table no longer checks (V30), checked here for every type: an object of data.
    for event in &all {
        assert!(event["data"].is_object(), "{event}");
        assert_eq!(event["content"], Value::Null, "{event}");
        assert!(!event.to_string().contains("secret plan") && !event.to_string().contains("private words"));
    }
    let failed = by_type("run.failed");
    assert_eq!(
        (&failed["data"]["error_code"], &failed["data"]["failed_step"]),
        (&json!("step_failed"), &json!("boom"))
    );
    // One event, by id, tagged (it never changes).
    let one = app.get(&format!("{base}/events/{}", ids[1]), &org.owner.token).await;
    assert_eq!(one.status(), StatusCode::OK);
    assert_eq!(one.headers()["etag"], "\"1\"");
    assert_eq!(one.json::<Value>().await.unwrap(), all[1]);
}

#[tokio::test]
async fn a_change_that_rolls_back_leaves_no_event_and_nobody_writes_events_directly() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    app.workspace(&org, "production").await;
    let before = app.raw_count("select count(*) from events", &[]).await;

    // Refused by the database (the name is taken): the insert and its event roll back together.
    let res = app
        .post(
            &format!("/api/v1/orgs/{}/workspaces", org.id),
            &org.owner.token,
            &json!({"name": "production"}),
        )
        .await;
    assert_problem(res, StatusCode::CONFLICT, "name_taken").await;
    // Rolled back by the caller after the change was made.
    let db = app.app_db(1);
    let (mut tx, _) =
        TenantTx::begin_org(&db, Actor::user(UserId(org.owner.id)), OrgId(org.id)).await.unwrap();
    tx.execute(
        "insert into workspaces (organization_id, id, name) values ($1, $2, 'rolled back')",
        &[&org.id, &Uuid::now_v7()],
    )
    .await
    .unwrap();
    assert_eq!(
        tx.query("select 1 from events where type = 'workspace.created'", &[]).await.unwrap().len(),
        2
    );
    drop(tx);
    assert_eq!(app.raw_count("select count(*) from events", &[]).await, before);

    // The app role can neither write, change nor delete an event, even in its own organization.
    let (mut tx, _) =
        TenantTx::begin_org(&db, Actor::user(UserId(org.owner.id)), OrgId(org.id)).await.unwrap();
    let forged = tx
        .execute(
            "insert into events (organization_id, id, type, data) values ($1, $2, 'workspace.created', '{}')",
            &[&org.id, &Uuid::now_v7()],
        )
        .await;
    assert!(forged.is_err());
    drop(tx);
    for sql in ["update events set data = '{}'", "delete from events"] {
        let (mut tx, _) =
            TenantTx::begin_org(&db, Actor::user(UserId(org.owner.id)), OrgId(org.id)).await.unwrap();
        assert!(tx.execute(sql, &[]).await.is_err(), "{sql}");
    }
    assert_eq!(app.raw_count("select count(*) from events", &[]).await, before);
}

#[tokio::test]
async fn in_full_mode_run_events_carry_the_output_and_the_error_message() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let res =
        app.patch(&format!("/api/v1/orgs/{}", org.id), &org.owner.token, &json!({"data_mode": "full"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let workspace = app.workspace(&org, "production").await;
    let echo = published(&app, &org, workspace, "echo", ECHO).await;
    start(&app, &org, &echo).await;
    assert_eq!(work(&app).await, Outcome::Succeeded);
    let fail = published(&app, &org, workspace, "fail", FAIL).await;
    start(&app, &org, &fail).await;
    assert_eq!(work(&app).await, Outcome::Failed);

    let succeeded = &events(&app, &org, "&type=run.succeeded").await[0];
    assert_eq!(succeeded["content"]["output"]["say"]["prompt"], "private words");
    let failed = &events(&app, &org, "&type=run.failed").await[0];
    assert_eq!(failed["content"]["error_message"], "the secret plan failed");
    // The database itself refuses content for a metadata_only organization, whoever writes.
    let other = app.org_with_owner("meta").await;
    let refused = app
        .rls_bypassing_admin
        .execute(
            "insert into events (organization_id, id, type, data, content) \
             values ($1, app.uuid_v7(), 'run.succeeded', '{}', '{\"output\": 1}')",
            &[&other.id],
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code().unwrap().code(), "TY020");
}

#[tokio::test]
async fn events_are_read_with_their_own_permission_inside_the_organization_only() {
    let app = TestApp::spawn().await;
    let acme = app.org_with_owner("acme").await;
    let globex = app.org_with_owner("globex").await;
    let production = app.workspace(&acme, "production").await;
    let staging = app.workspace(&acme, "staging").await;
    let all = events(&app, &acme, "").await;
    let event = all[1]["id"].as_str().unwrap();

    // Another tenant: the same 404 as a random id, for the list and the event.
    for path in
        [format!("/api/v1/orgs/{}/events/{event}", acme.id), format!("/api/v1/orgs/{}/events", acme.id)]
    {
        assert_problem(app.get(&path, &globex.owner.token).await, StatusCode::NOT_FOUND, "not_found").await;
    }
    let path = format!("/api/v1/orgs/{}/events/{event}", globex.id);
    assert_problem(app.get(&path, &globex.owner.token).await, StatusCode::NOT_FOUND, "not_found").await;
    let random = format!("/api/v1/orgs/{}/events/{}", acme.id, Uuid::now_v7());
    assert_problem(app.get(&random, &acme.owner.token).await, StatusCode::NOT_FOUND, "not_found").await;
    // Without events:read (a viewer, an editor): 403 naming it. An auditor reads them.
    for role in ["viewer", "editor"] {
        let member = app.member(&acme, &format!("{role}@acme.test"), role).await;
        let res = app.get(&format!("/api/v1/orgs/{}/events", acme.id), &member.token).await;
        let problem = assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
        assert_eq!(problem["permission"], "events:read");
    }
    let auditor = app.member(&acme, "auditor@acme.test", "auditor").await;
    let res = app.get(&format!("/api/v1/orgs/{}/events", acme.id), &auditor.token).await;
    assert_eq!(res.status(), StatusCode::OK);
    // An auditor restricted to one workspace sees that workspace's events and the
    // organization's own, never another workspace's.
    let res = app
        .request(
            Method::PUT,
            &format!("/api/v1/orgs/{}/members/{}/workspaces", acme.id, auditor.id),
            Some(&acme.owner.token),
            Some(&json!({"workspace_ids": [production]})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let seen: Value = app
        .get(&format!("/api/v1/orgs/{}/events?limit=200", acme.id), &auditor.token)
        .await
        .json()
        .await
        .unwrap();
    let seen_workspaces: BTreeSet<String> = seen["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["workspace_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(seen_workspaces, BTreeSet::from([production.to_string()]));
    assert!(seen["items"].as_array().unwrap().iter().any(|e| e["type"] == "member.added"));
    assert!(!seen.to_string().contains(&staging.to_string()));
}

#[tokio::test]
async fn event_lists_filter_by_type_and_time_and_page_both_ways() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    for n in 0..5 {
        app.workspace(&org, &format!("ws-{n}")).await;
    }
    let all = events(&app, &org, "").await;
    assert_eq!(all.len(), 6);
    let created = events(&app, &org, "&type=workspace.created").await;
    assert_eq!(created.len(), 5);
    let newest_first = events(&app, &org, "&sort=-created_at").await;
    assert_eq!(newest_first.iter().rev().cloned().collect::<Vec<_>>(), all);
    let since = all[3]["occurred_at"].as_str().unwrap();
    let later = events(&app, &org, &format!("&since={}", urlencode(since))).await;
    assert_eq!(later, all[3..]);
    let earlier = events(&app, &org, &format!("&until={}", urlencode(since))).await;
    assert_eq!(earlier, all[..3]);

    let path = format!("/api/v1/orgs/{}/events?limit=2&type=workspace.created", org.id);
    let first: Value = app.get(&path, &org.owner.token).await.json().await.unwrap();
    let cursor = first["next_cursor"].as_str().unwrap();
    let second: Value =
        app.get(&format!("{path}&cursor={cursor}"), &org.owner.token).await.json().await.unwrap();
    assert_eq!(second["items"].as_array().unwrap()[..], created[2..4]);
    let back = second["prev_cursor"].as_str().unwrap();
    let again: Value =
        app.get(&format!("{path}&cursor={back}"), &org.owner.token).await.json().await.unwrap();
    assert_eq!(again["items"], first["items"]);

    for (query, field) in [
        ("type=Workspace%20Created", "type"),
        ("type=x", "type"),
        ("sort=type", "sort"),
        ("since=yesterday", "query"),
    ] {
        let res = app.get(&format!("/api/v1/orgs/{}/events?{query}", org.id), &org.owner.token).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert!(problem.to_string().contains(field), "{query}: {problem}");
    }
}

#[tokio::test]
async fn events_older_than_the_retention_are_deleted_and_newer_ones_kept() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    app.workspace(&org, "production").await;
    app.rls_bypassing_admin
        .execute(
            "insert into events (organization_id, id, type, occurred_at, data) \
             select $1, app.uuid_v7(now() - interval '31 days'), 'workspace.created', now() - interval '31 days', '{}' \
             from generate_series(1, 6000)",
            &[&org.id],
        )
        .await
        .unwrap();
    let deleted = tenantry::db::events::prune_events(&app.app_db(1), 30).await.unwrap();
    assert_eq!(deleted, 6000);
    assert_eq!(app.raw_count("select count(*) from events where organization_id = $1", &[&org.id]).await, 2);
    assert_eq!(tenantry::db::events::prune_events(&app.app_db(1), 7).await.unwrap(), 0);
}

fn urlencode(text: &str) -> String {
    text.replace(':', "%3A").replace('+', "%2B")
}

#[tokio::test]
async fn an_organizations_events_go_with_it_even_one_written_while_it_is_being_deleted() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let other = app.org_with_owner("globex").await;
    app.workspace(&org, "production").await;
    app.workspace(&other, "production").await;
    let (key, _) = app.api_key(&org, &["workspaces:read"]).await;
    let count = |org: Uuid| {
        let app = &app;
        async move { app.raw_count("select count(*) from events where organization_id = $1", &[&org]).await }
    };
    assert_eq!(count(org.id).await, 3, "member.added, workspace.created, api_key.created");
    let others = count(other.id).await;
    assert_eq!(others, 2);

    // A revocation writes its event by changing the key's row: it locks no organization (events
    // have no foreign key to it). It is open while the owner deletes the organization...
    let writer = connect(&app_url(&app.database)).await;
    writer.batch_execute("begin").await.unwrap();
    set_context(&writer, org.owner.id, org.id).await;
    let revoked =
        writer.execute("update api_keys set revoked_at = now() where id = $1", &[&key]).await.unwrap();
    assert_eq!(revoked, 1);
    let deleter = connect(&app_url(&app.database)).await;
    let (org_id, owner) = (org.id, org.owner.id);
    let deleting = tokio::spawn(async move {
        deleter.batch_execute("begin").await.unwrap();
        set_context(&deleter, owner, org_id).await;
        let deleted = deleter.execute("delete from organizations where id = $1", &[&org_id]).await.unwrap();
        deleter.batch_execute("commit").await.unwrap();
        deleted
    });
    // ...whose cascade waits for the key's row.
    let waiting = "select count(*) from pg_stat_activity \
                   where wait_event_type = 'Lock' and query = 'delete from organizations where id = $1'";
    let started = std::time::Instant::now();
    while app.raw_count(waiting, &[]).await != 1 {
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "the delete never waited");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    writer.batch_execute("commit").await.unwrap();
    assert_eq!(deleting.await.unwrap(), 1, "the organization is deleted");

    assert_eq!(app.raw_count("select count(*) from organizations where id = $1", &[&org.id]).await, 0);
    assert_eq!(
        count(org.id).await,
        0,
        "no event of the deleted organization is left, the revocation's included"
    );
    assert_eq!(count(other.id).await, others, "another organization's events are untouched");
}
