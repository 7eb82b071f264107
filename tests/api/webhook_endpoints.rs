//! Webhook endpoints: a secret shown once and kept only encrypted, rotation with an overlap,
//! hostile URLs refused, and deliveries queued by the database for exactly the endpoints of the
//! event's own organization that want it.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestOrg, assert_problem};

fn endpoints(org: &TestOrg) -> String {
    format!("/api/v1/orgs/{}/webhook-endpoints", org.id)
}

/// (event type, endpoint) of every delivery queued in `org`, as a superuser sees them.
async fn deliveries(app: &TestApp, org: Uuid) -> Vec<(String, Uuid, Uuid)> {
    app.rls_bypassing_admin
        .query(
            "select e.type, d.endpoint_id, e.organization_id from webhook_deliveries d \
             join events e on e.organization_id = d.organization_id and e.id = d.event_id \
             where d.organization_id = $1 order by e.id, d.endpoint_id",
            &[&org],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn an_endpoint_is_created_with_a_secret_shown_once_and_kept_only_encrypted() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let res = app
        .request(
            Method::POST,
            &endpoints(&org),
            Some(&org.owner.token),
            Some(&json!({"url": "https://hooks.example.com/tenantry", "description": "CRM",
                          "event_types": ["run.failed", "member.added", "run.failed"]})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = res.json().await.unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_") && secret.len() > 40, "{secret}");
    assert_eq!(created["event_types"], json!(["member.added", "run.failed"]));
    assert_eq!((created["enabled"].as_bool(), &created["disabled_reason"]), (Some(true), &Value::Null));

    // Read back: never the secret.
    let got = app.get(&location, &org.owner.token).await;
    assert_eq!(got.status(), StatusCode::OK);
    assert!(got.headers().contains_key("etag"));
    let got: Value = got.json().await.unwrap();
    assert_eq!(got["id"], created["id"]);
    assert!(got.get("secret").is_none());
    let listed = app.get(&endpoints(&org), &org.owner.token).await.text().await.unwrap();
    assert!(listed.contains("hooks.example.com") && !listed.contains(&secret[6..]));

    // At rest: ciphertext only, and nothing that shows the secret in any row, the audit log included.
    let raw = secret.trim_start_matches("whsec_");
    let decoded = base64_decode(raw);
    for sql in [
        "select row_to_json(w)::text from webhook_endpoints w",
        "select row_to_json(a)::text from audit_events a",
        "select row_to_json(e)::text from events e",
        "select coalesce(string_agg(row_to_json(i)::text, ''), '') from idempotency_keys i",
    ] {
        for row in app.rls_bypassing_admin.query(sql, &[]).await.unwrap() {
            let text: String = row.get(0);
            assert!(!text.contains(raw), "{sql} shows the secret");
        }
    }
    let sealed: Vec<u8> = app
        .rls_bypassing_admin
        .query_one("select secret_ciphertext from webhook_endpoints", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!sealed.windows(decoded.len()).any(|w| w == decoded.as_slice()));
    let audited = app
        .raw_count("select count(*) from audit_events where action = 'webhook_endpoint.create'", &[])
        .await;
    assert_eq!(audited, 1);
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).unwrap()
}

#[tokio::test]
async fn a_retried_create_never_shows_the_secret_again() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let send = || {
        app.http
            .post(format!("{}{}", app.address, endpoints(&org)))
            .bearer_auth(&org.owner.token)
            .header("Idempotency-Key", "create-endpoint-1")
            .json(&json!({"url": "https://hooks.example.com/x", "event_types": ["*"]}))
            .send()
    };
    let first: Value = send().await.unwrap().json().await.unwrap();
    assert!(first["secret"].as_str().unwrap().starts_with("whsec_"));
    let replay = send().await.unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replay = replay.text().await.unwrap();
    assert!(!replay.contains(first["secret"].as_str().unwrap()), "{replay}");
    assert_eq!(app.raw_count("select count(*) from webhook_endpoints", &[]).await, 1);
}

#[tokio::test]
async fn events_queue_deliveries_for_the_endpoints_that_want_them_in_their_own_organization_only() {
    let app = TestApp::spawn().await;
    let acme = app.org_with_owner("acme").await;
    let globex = app.org_with_owner("globex").await;
    let (acme_workspaces, _) =
        app.webhook_endpoint(&acme, "https://hooks.example.com/same", &["workspace.created"]).await;
    let (acme_all, _) = app.webhook_endpoint(&acme, "https://hooks.example.com/all", &["*"]).await;
    let (acme_off, _) = app.webhook_endpoint(&acme, "https://hooks.example.com/off", &["*"]).await;
    let res = app
        .patch(&format!("{}/{acme_off}", endpoints(&acme)), &acme.owner.token, &json!({"enabled": false}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let (globex_all, _) = app.webhook_endpoint(&globex, "https://hooks.example.com/same", &["*"]).await;

    app.workspace(&acme, "a1").await;
    app.workspace(&globex, "g1").await;
    app.member(&acme, "viewer@acme.test", "viewer").await;

    assert_eq!(
        deliveries(&app, acme.id).await,
        [
            ("workspace.created".into(), acme_workspaces, acme.id),
            ("workspace.created".into(), acme_all, acme.id),
            ("member.added".into(), acme_all, acme.id),
        ]
    );
    assert_eq!(deliveries(&app, globex.id).await, [("workspace.created".into(), globex_all, globex.id)]);
    // Nothing anywhere for the disabled endpoint, and no delivery names another tenant's event.
    assert_eq!(
        app.raw_count("select count(*) from webhook_deliveries where endpoint_id = $1", &[&acme_off]).await,
        0
    );
    let crossed = app
        .raw_count(
            "select count(*) from webhook_deliveries d join webhook_endpoints w on w.id = d.endpoint_id \
             join events e on e.id = d.event_id where w.organization_id <> e.organization_id",
            &[],
        )
        .await;
    assert_eq!(crossed, 0);
    // The app role cannot queue a delivery itself, even in its own organization.
    let db = app.app_db(1);
    let actor = tenantry::db::Actor::user(tenantry::domain::UserId(acme.owner.id));
    let (mut tx, _) =
        tenantry::db::TenantTx::begin_org(&db, actor, tenantry::domain::OrgId(acme.id)).await.unwrap();
    let event: Uuid = app
        .rls_bypassing_admin
        .query_one("select id from events where organization_id = $1 limit 1", &[&globex.id])
        .await
        .unwrap()
        .get(0);
    let forged = tx
        .execute(
            "insert into webhook_deliveries (organization_id, id, endpoint_id, event_id) values ($1, $2, $3, $4)",
            &[&acme.id, &Uuid::now_v7(), &acme_all, &event],
        )
        .await;
    assert!(forged.is_err());
}

#[tokio::test]
async fn a_rotated_secret_keeps_signing_for_the_overlap_and_no_longer() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let (id, first) = app.webhook_endpoint(&org, "https://hooks.example.com/x", &["*"]).await;
    let path = format!("{}/{id}/rotate-secret", endpoints(&org));
    let res = app.post(&path, &org.owner.token, &json!({"overlap_secs": 3600})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let rotated: Value = res.json().await.unwrap();
    let second = rotated["secret"].as_str().unwrap();
    assert!(second.starts_with("whsec_") && second != first);
    let expires: chrono::DateTime<chrono::Utc> =
        rotated["previous_secret_expires_at"].as_str().unwrap().parse().unwrap();
    let in_an_hour = chrono::Utc::now() + chrono::Duration::hours(1);
    assert!((expires - in_an_hour).num_seconds().abs() < 60, "{expires}");
    let stored = app
        .raw_count("select count(*) from webhook_endpoints where previous_secret_ciphertext is not null", &[])
        .await;
    assert_eq!(stored, 1);
    // No overlap: the old secret stops at once.
    let res = app.post(&path, &org.owner.token, &json!({"overlap_secs": 0})).await;
    let rotated: Value = res.json().await.unwrap();
    assert_eq!(rotated["previous_secret_expires_at"], Value::Null);
    for bad in [json!({"overlap_secs": -1}), json!({"overlap_secs": 604801}), json!({"overlap": 5})] {
        let res = app.post(&path, &org.owner.token, &bad).await;
        assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    }
    assert_eq!(
        app.raw_count(
            "select count(*) from audit_events where action = 'webhook_endpoint.rotate_secret'",
            &[]
        )
        .await,
        2
    );
}

#[tokio::test]
async fn hostile_or_malformed_endpoints_are_refused_and_change_nothing() {
    let app = TestApp::spawn_with(|s| s.webhooks.max_endpoints_per_org = 2).await;
    let org = app.org_with_owner("acme").await;
    let cases = [
        (json!({"url": "http://hooks.example.com/x", "event_types": ["*"]}), "url"),
        (json!({"url": "https://127.0.0.1/x", "event_types": ["*"]}), "url"),
        (json!({"url": "https://10.0.0.7/x", "event_types": ["*"]}), "url"),
        (json!({"url": "https://169.254.169.254/latest/meta-data", "event_types": ["*"]}), "url"),
        (json!({"url": "https://[::1]/x", "event_types": ["*"]}), "url"),
        (json!({"url": "https://localhost/x", "event_types": ["*"]}), "url"),
        (json!({"url": "https://intranet/x", "event_types": ["*"]}), "url"),
        (json!({"url": "https://user:pass@hooks.example.com/x", "event_types": ["*"]}), "url"),
        (json!({"url": "file:///etc/passwd", "event_types": ["*"]}), "url"),
        (
            json!({"url": format!("https://hooks.example.com/{}", "x".repeat(2000)), "event_types": ["*"]}),
            "url",
        ),
        (json!({"url": "https://hooks.example.com/x", "event_types": []}), "event_types"),
        (json!({"url": "https://hooks.example.com/x", "event_types": ["*", "run.failed"]}), "event_types"),
        (json!({"url": "https://hooks.example.com/x", "event_types": ["run.exploded"]}), "event_types"),
        (json!({"url": "https://hooks.example.com/x", "event_types": ["DROP TABLE"]}), "event_types"),
        (
            json!({"url": "https://hooks.example.com/x", "event_types": ["*"], "description": "d".repeat(501)}),
            "description",
        ),
        (json!({"url": "https://hooks.example.com/x", "event_types": ["*"], "secret": "mine"}), "secret"),
    ];
    for (body, field) in cases {
        let res = app.post(&endpoints(&org), &org.owner.token, &body).await;
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert!(problem.to_string().contains(field), "{body}: {problem}");
    }
    assert_eq!(app.raw_count("select count(*) from webhook_endpoints", &[]).await, 0);
    app.webhook_endpoint(&org, "https://hooks.example.com/1", &["*"]).await;
    let (second, _) = app.webhook_endpoint(&org, "https://hooks.example.com/2", &["*"]).await;
    let res = app
        .post(
            &endpoints(&org),
            &org.owner.token,
            &json!({"url": "https://hooks.example.com/3", "event_types": ["*"]}),
        )
        .await;
    assert_problem(res, StatusCode::CONFLICT, "too_many_endpoints").await;
    // A change to a private address is refused the same way.
    let res = app
        .patch(
            &format!("{}/{second}", endpoints(&org)),
            &org.owner.token,
            &json!({"url": "https://192.168.1.1/"}),
        )
        .await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(
        app.raw_count("select count(*) from webhook_endpoints where url like '%192.168%'", &[]).await,
        0
    );
}

#[tokio::test]
async fn endpoints_change_under_if_match_and_only_with_webhooks_manage() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let (id, _) = app.webhook_endpoint(&org, "https://hooks.example.com/x", &["*"]).await;
    let path = format!("{}/{id}", endpoints(&org));
    let tag = app.get(&path, &org.owner.token).await.headers()["etag"].to_str().unwrap().to_owned();

    let res = app.patch(&path, &org.owner.token, &json!({"enabled": false, "description": "paused"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!((&body["enabled"], &body["disabled_reason"]), (&json!(false), &json!("manual")));
    // A stale tag: 412 and nothing changes.
    let stale = app
        .http
        .patch(format!("{}{path}", app.address))
        .bearer_auth(&org.owner.token)
        .header("If-Match", &tag)
        .json(&json!({"enabled": true}))
        .send()
        .await
        .unwrap();
    assert_problem(stale, StatusCode::PRECONDITION_FAILED, "precondition_failed").await;
    assert_eq!(app.raw_count("select count(*) from webhook_endpoints where enabled", &[]).await, 0);
    // Enabling clears the failure record; null clears the description.
    app.rls_bypassing_admin
        .execute("update webhook_endpoints set consecutive_failures = 9, failing_since = now()", &[])
        .await
        .unwrap();
    let res = app.patch(&path, &org.owner.token, &json!({"enabled": true, "description": null})).await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        (&body["enabled"], &body["disabled_reason"], &body["consecutive_failures"], &body["description"]),
        (&json!(true), &Value::Null, &json!(0), &Value::Null)
    );

    // Without webhooks:manage: 403 naming it, for reading and for writing; an integration admin may.
    for role in ["viewer", "editor", "auditor", "billing_admin"] {
        let member = app.member(&org, &format!("{role}@acme.test"), role).await;
        for res in [
            app.get(&endpoints(&org), &member.token).await,
            app.post(
                &endpoints(&org),
                &member.token,
                &json!({"url": "https://hooks.example.com/y", "event_types": ["*"]}),
            )
            .await,
            app.delete(&path, &member.token).await,
        ] {
            let problem = assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
            assert_eq!(problem["permission"], "webhooks:manage");
        }
    }
    let integrator = app.member(&org, "integrator@acme.test", "integration_admin").await;
    assert_eq!(app.delete(&path, &integrator.token).await.status(), StatusCode::NO_CONTENT);
    assert_problem(app.get(&path, &org.owner.token).await, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn an_endpoints_delivery_log_shows_each_delivery_and_its_attempts_and_nothing_of_others() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let (endpoint, _) =
        app.webhook_endpoint(&org, "https://hooks.example.com/log", &["workspace.created"]).await;
    let (other, _) = app.webhook_endpoint(&org, "https://hooks.example.com/other", &["*"]).await;
    app.workspace(&org, "first").await;
    app.workspace(&org, "second").await;
    let log = format!("{}/{endpoint}/deliveries", endpoints(&org));
    let page: Value = app.get(&log, &org.owner.token).await.json().await.unwrap();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|d| d["status"] == "pending" && d["event_type"] == "workspace.created"));
    assert!(items[0]["id"].as_str() > items[1]["id"].as_str(), "newest first");
    assert!(items[0]["next_attempt_at"].is_string());
    let delivery = items[0]["id"].as_str().unwrap().to_owned();

    // Attempts as the dispatcher records them; a metadata_only organization keeps no response body.
    let refused = app
        .rls_bypassing_admin
        .execute(
            "insert into webhook_delivery_attempts (organization_id, delivery_id, attempt, started_at, duration_ms, \
               response_status, response_body) values ($1, $2, 1, now(), 12, 500, 'stack trace')",
            &[&org.id, &delivery.parse::<Uuid>().unwrap()],
        )
        .await;
    assert_eq!(refused.unwrap_err().code().unwrap().code(), "TY020");
    app.rls_bypassing_admin
        .execute(
            "insert into webhook_delivery_attempts (organization_id, delivery_id, attempt, started_at, duration_ms, \
               response_status, error) values ($1, $2, 1, now(), 12, 500, 'status_500'), \
               ($1, $2, 2, now(), 30, 204, null)",
            &[&org.id, &delivery.parse::<Uuid>().unwrap()],
        )
        .await
        .unwrap();
    let one: Value = app.get(&format!("{log}/{delivery}"), &org.owner.token).await.json().await.unwrap();
    assert_eq!(one["id"], json!(delivery));
    let attempts = one["attempt_log"].as_array().unwrap();
    assert_eq!(
        attempts.iter().map(|a| (a["attempt"].as_i64(), a["response_status"].as_i64())).collect::<Vec<_>>(),
        [(Some(1), Some(500)), (Some(2), Some(204))]
    );
    assert_eq!(attempts[0]["error"], "status_500");

    // Filters; and the delivery is not the other endpoint's, nor anything at a made-up endpoint.
    let failed: Value =
        app.get(&format!("{log}?status=failed"), &org.owner.token).await.json().await.unwrap();
    assert_eq!(failed["items"], json!([]));
    let res = app.get(&format!("{log}?status=lost"), &org.owner.token).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let elsewhere = format!("{}/{other}/deliveries/{delivery}", endpoints(&org));
    assert_problem(app.get(&elsewhere, &org.owner.token).await, StatusCode::NOT_FOUND, "not_found").await;
    let nowhere = format!("{}/{}/deliveries", endpoints(&org), Uuid::now_v7());
    assert_problem(app.get(&nowhere, &org.owner.token).await, StatusCode::NOT_FOUND, "not_found").await;
    let empty: Value = app
        .get(&format!("{}/{other}/deliveries?status=succeeded", endpoints(&org)), &org.owner.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(empty["items"], json!([]));

    // Sending again: a failed delivery is pending again (its attempts kept); not while it is
    // being delivered, nor to a disabled endpoint; never another endpoint's.
    let id: Uuid = delivery.parse().unwrap();
    app.rls_bypassing_admin
        .execute("update webhook_deliveries set status = 'failed', finished_at = now() where id = $1", &[&id])
        .await
        .unwrap();
    let retry = format!("{log}/{delivery}/retry");
    let res = app.request(Method::POST, &retry, Some(&org.owner.token), None).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let body: Value = res.json().await.unwrap();
    assert_eq!((&body["status"], &body["finished_at"]), (&json!("pending"), &Value::Null));
    assert_eq!(
        app.raw_count("select count(*) from webhook_delivery_attempts where delivery_id = $1", &[&id]).await,
        2
    );
    let res = app.request(Method::POST, &format!("{elsewhere}/retry"), Some(&org.owner.token), None).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    app.rls_bypassing_admin
        .execute(
            "update webhook_deliveries set status = 'delivering', claim_token = gen_random_uuid(), \
               lease_expires_at = now() + interval '1 minute' where id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let res = app.request(Method::POST, &retry, Some(&org.owner.token), None).await;
    assert_problem(res, StatusCode::CONFLICT, "delivery_in_progress").await;
    app.rls_bypassing_admin
        .execute(
            "update webhook_deliveries set status = 'failed', claim_token = null, lease_expires_at = null, \
               finished_at = now() where id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let res = app
        .patch(&format!("{}/{endpoint}", endpoints(&org)), &org.owner.token, &json!({"enabled": false}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = app.request(Method::POST, &retry, Some(&org.owner.token), None).await;
    assert_problem(res, StatusCode::CONFLICT, "endpoint_disabled").await;
    assert_eq!(
        app.raw_count("select count(*) from webhook_deliveries where id = $1 and status = 'failed'", &[&id])
            .await,
        1
    );
    // The policy itself refuses what the handler checks: no direct move to another state.
    let db = app.app_db(1);
    let actor = tenantry::db::Actor::user(tenantry::domain::UserId(org.owner.id));
    let (mut tx, _) =
        tenantry::db::TenantTx::begin_org(&db, actor, tenantry::domain::OrgId(org.id)).await.unwrap();
    let forged = tx.execute("update webhook_deliveries set status = 'succeeded' where id = $1", &[&id]).await;
    assert!(forged.is_err());
}

#[tokio::test]
async fn creates_at_once_never_pass_the_organizations_endpoint_limit() {
    let app = std::sync::Arc::new(TestApp::spawn_with(|s| s.webhooks.max_endpoints_per_org = 3).await);
    let org = app.org_with_owner("acme").await;
    let creates = (0..12).map(|i| {
        let (app, org) = (app.clone(), org.clone());
        tokio::spawn(async move {
            let body = json!({"url": format!("https://hooks.example.com/{i}"), "event_types": ["*"]});
            app.post(&endpoints(&org), &org.owner.token, &body).await.status()
        })
    });
    let statuses: Vec<StatusCode> =
        futures_util::future::join_all(creates).await.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CREATED).count(), 3, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT), "{statuses:?}");
    assert_eq!(app.raw_count("select count(*) from webhook_endpoints", &[]).await, 3);
}
