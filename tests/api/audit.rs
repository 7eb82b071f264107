use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestOrg, admin_url, app_url, assert_problem, connect, set_context};

async fn audit(app: &TestApp, org: &TestOrg, query: &str) -> Vec<Value> {
    let res =
        app.get(&format!("/api/v1/orgs/{}/audit-events?limit=200{query}", org.id), &org.owner.token).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json::<Value>().await.unwrap()["items"].as_array().unwrap().clone()
}

async fn verify(app: &TestApp, org: &TestOrg) -> Value {
    let res = app.get(&format!("/api/v1/orgs/{}/audit-events/verify", org.id), &org.owner.token).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

fn actions(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| (e["action"].as_str().unwrap().to_owned(), e["outcome"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test]
async fn every_mutation_is_recorded_with_its_actor_and_request() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let carol = app.member(&org, "carol@acme.test", "editor").await;
    let ws = app.workspace(&org, "Production").await;
    let res = app
        .patch(
            &format!("/api/v1/orgs/{}/workspaces/{ws}", org.id),
            &org.owner.token,
            &json!({"name": "Prod"}),
        )
        .await;
    let request_id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    app.delete(&format!("/api/v1/orgs/{}/workspaces/{ws}", org.id), &org.owner.token).await;
    app.patch(
        &format!("/api/v1/orgs/{}/members/{}", org.id, carol.id),
        &org.owner.token,
        &json!({"role": "viewer"}),
    )
    .await;

    let events = audit(&app, &org, "").await;
    let allowed = |a: &str| (a.to_owned(), "allowed".to_owned());
    assert_eq!(
        actions(&events),
        vec![
            allowed("organization.create"),
            allowed("member.add"),
            allowed("workspace.create"),
            allowed("workspace.update"),
            allowed("workspace.delete"),
            allowed("member.update"),
        ]
    );
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=6).collect::<Vec<_>>(), "gapless per-organization sequence");
    // The creation's entry is written by the definer with the request (app.create_organization_recorded).
    let created = &events[0];
    assert_eq!(
        (created["actor_type"].as_str(), created["actor_id"].as_str()),
        (Some("user"), Some(&*org.owner.id.to_string()))
    );
    assert_eq!(
        (created["target_type"].as_str(), created["target_id"].as_str()),
        (Some("organization"), Some(&*org.id.to_string()))
    );
    assert_eq!(created["ip"], "127.0.0.1");
    assert!(created["request_id"].as_str().is_some_and(|r| !r.is_empty()), "{created}");
    assert_eq!(created["details"]["region"], "us");
    assert_eq!(created["details"]["data_mode"], "metadata_only");
    assert!(created["details"]["slug"].is_string() && created["details"]["name"].is_string(), "{created}");
    let update = &events[3];
    assert_eq!(update["actor_type"], "user");
    assert_eq!(update["actor_id"], org.owner.id.to_string());
    assert_eq!(update["target_id"], ws.to_string());
    assert_eq!(update["request_id"], request_id);
    assert_eq!(update["ip"], "127.0.0.1");
    assert_eq!(update["details"], json!({"name": "Prod"}));
    assert_eq!(events[5]["details"], json!({"from": "editor", "to": "viewer", "custom_role_id": null}));

    // Filters.
    assert_eq!(
        actions(&audit(&app, &org, "&action=workspace.delete").await),
        vec![allowed("workspace.delete")]
    );
    let by_owner = audit(&app, &org, &format!("&actor_id={}", org.owner.id)).await;
    assert_eq!(by_owner.len(), 6);
}

#[tokio::test]
async fn a_failed_change_leaves_no_entry_and_denied_attempts_are_recorded() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let viewer = app.member(&org, "viewer@acme.test", "viewer").await;
    app.workspace(&org, "Production").await;
    let before = audit(&app, &org, "").await.len();

    // A conflict rolls back the change and its entry together.
    let res = app
        .post(
            &format!("/api/v1/orgs/{}/workspaces", org.id),
            &org.owner.token,
            &json!({"name": "Production"}),
        )
        .await;
    assert_problem(res, StatusCode::CONFLICT, "name_taken").await;
    assert_eq!(audit(&app, &org, "").await.len(), before);

    // A 403 is recorded, with who tried and what was missing.
    let res = app
        .post(&format!("/api/v1/orgs/{}/workspaces", org.id), &viewer.token, &json!({"name": "Nope"}))
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    let denied = audit(&app, &org, "&outcome=denied").await;
    assert_eq!(actions(&denied), vec![("workspace.create".to_owned(), "denied".to_owned())]);
    assert_eq!(denied[0]["actor_id"], viewer.id.to_string());
    assert_eq!(denied[0]["details"], json!({"missing_permission": "workspaces:write"}));

    // Reading the log needs audit:read; trying without it is itself recorded.
    let res = app.get(&format!("/api/v1/orgs/{}/audit-events", org.id), &viewer.token).await;
    let body = assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(body["permission"], "audit:read");
    let denied = audit(&app, &org, "&outcome=denied").await;
    assert_eq!(denied.last().unwrap()["action"], "audit.read");

    // An API key outside its scopes is recorded as the key.
    let (key_id, key) = app.api_key(&org, &["workspaces:read"]).await;
    app.post(&format!("/api/v1/orgs/{}/workspaces", org.id), &key, &json!({"name": "x"})).await;
    let denied = audit(&app, &org, "&outcome=denied").await;
    assert_eq!(denied.last().unwrap()["actor_type"], "api_key");
    assert_eq!(denied.last().unwrap()["actor_id"], key_id.to_string());
}

#[tokio::test]
async fn the_log_is_append_only_for_the_app_and_for_the_owner() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let db = connect(&app_url(&app.database)).await;
    db.batch_execute("begin").await.unwrap();
    set_context(&db, org.owner.id, org.id).await;
    let err = db.execute("update audit_events set action = 'x.y'", &[]).await.expect_err("no update grant");
    assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE));
    db.batch_execute("rollback").await.unwrap();

    for statement in
        ["update audit_events set action = 'x.y'", "delete from audit_events", "truncate audit_events"]
    {
        let err = app.rls_bypassing_admin.batch_execute(statement).await.expect_err(statement);
        assert_eq!(err.code().map(|c| c.code()), Some("TY002"), "{statement}");
    }
    // A forged hash is overwritten by the chain trigger.
    app.rls_bypassing_admin
        .execute(
            "insert into audit_events (organization_id, id, actor_type, action, outcome, prev_hash, hash) \
             values ($1, gen_random_uuid(), 'system', 'forged.entry', 'allowed', $2, $2)",
            &[&org.id, &vec![7u8; 32]],
        )
        .await
        .unwrap();
    assert_eq!(verify(&app, &org).await["intact"], true);
}

/// Tampering through a superuser that disables the append-only triggers.
async fn tampered(statement: &str) -> (TestApp, TestOrg, Value) {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    for name in ["one", "two", "three", "four"] {
        app.workspace(&org, name).await;
    }
    assert_eq!(verify(&app, &org).await["intact"], true);
    app.rls_bypassing_admin
        .batch_execute(&format!(
            "set session_replication_role = replica; {statement}; set session_replication_role = origin"
        ))
        .await
        .unwrap();
    let status = verify(&app, &org).await;
    (app, org, status)
}

#[tokio::test]
async fn verification_finds_the_first_changed_deleted_reordered_or_inserted_entry() {
    let (.., status) =
        tampered("update audit_events set details = '{\"name\": \"evil\"}' where seq = 3").await;
    assert_eq!((status["intact"].clone(), status["first_broken_seq"].clone()), (json!(false), json!(3)));
    assert_eq!(status["reason"], "content_hash_mismatch");

    let (.., status) = tampered("delete from audit_events where seq = 2").await;
    assert_eq!(status["first_broken_seq"], 3);
    assert_eq!(status["reason"], "sequence_gap");

    let (.., status) = tampered(
        "update audit_events set seq = -2 where seq = 2; update audit_events set seq = 2 where seq = 3; \
         update audit_events set seq = 3 where seq = -2",
    )
    .await;
    assert_eq!(status["first_broken_seq"], 2);
    assert_eq!(status["intact"], false);

    let (app, org, status) = tampered(
        "insert into audit_events (organization_id, seq, id, actor_type, action, outcome, prev_hash, hash) \
         select organization_id, 6, gen_random_uuid(), 'system', 'forged.entry', 'allowed', hash, hash \
         from audit_events where seq = 5",
    )
    .await;
    assert_eq!(status["first_broken_seq"], 6);
    assert_eq!(status["reason"], "content_hash_mismatch");

    // The command line agrees, and fails; its metrics file says so too.
    let dir = crate::rollout::scratch();
    let metrics_file = dir.0.join("audit.prom");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["audit", "verify", "--org", &org.id.to_string(), "--metrics-file"])
        .arg(&metrics_file)
        .env("TENANTRY_ADMIN_DATABASE_URL", admin_url(&app.database))
        .env("TENANTRY_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("BROKEN  at entry 6: content_hash_mismatch"));
    let metrics = std::fs::read_to_string(&metrics_file).unwrap();
    assert!(metrics.contains("tenantry_audit_chains{state=\"broken\"} 1\n"), "{metrics}");
    assert!(metrics.contains("tenantry_audit_chains{state=\"verified\"} 0\n"), "{metrics}");
}

/// The watchdog: a worker verifies every chain on its own and exports the result, so tampering
/// raises an alert without anyone calling verify; it logs which organization.
#[tokio::test]
async fn the_workers_watchdog_exports_a_broken_chain_as_a_metric() {
    let (app, org, status) =
        tampered("update audit_events set details = '{\"name\": \"evil\"}' where seq = 2").await;
    assert_eq!(status["intact"], false);
    let healthy = app.org_with_owner("healthy").await;
    assert_eq!(verify(&app, &healthy).await["intact"], true);

    let chains = tenantry::db::stats::verify_audit_chains(&app.app_db(2)).await.unwrap();
    assert_eq!((chains.broken, chains.broken_organizations.clone()), (1, vec![org.id]));
    assert!(chains.chains >= 2, "{chains:?}");

    let dir = crate::rollout::scratch();
    let port = crate::rollout::free_port();
    let worker = crate::rollout::spawn_binary(
        &app,
        &dir,
        "worker",
        &[
            ("TENANTRY_WORKER__METRICS_LISTEN", format!("127.0.0.1:{port}")),
            ("TENANTRY_WORKER__AUDIT_VERIFY_INTERVAL_SECS", "1".to_owned()),
            ("TENANTRY_METRICS_TOKEN", "scrape-secret".to_owned()),
        ],
    );
    let http = reqwest::Client::new();
    let started = std::time::Instant::now();
    let body = loop {
        let res =
            http.get(format!("http://127.0.0.1:{port}/metrics")).bearer_auth("scrape-secret").send().await;
        if let Ok(res) = res {
            let body = res.text().await.unwrap();
            if body.contains("tenantry_audit_chains{state=\"broken\"}") {
                break body;
            }
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "the watchdog never reported");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(body.contains("tenantry_audit_chains{state=\"broken\"} 1\n"), "{body}");
    assert!(
        body.contains(&format!("tenantry_audit_chains{{state=\"verified\"}} {}\n", chains.chains - 1)),
        "{body}"
    );
    assert!(!body.contains("tenantry_audit_last_verification_timestamp_seconds 0\n"), "{body}");
    crate::rollout::signal(&worker, "TERM");
    let (status, logs) = crate::rollout::wait_exit(worker, std::time::Duration::from_secs(30));
    assert!(status.success(), "{logs}");
    let line = logs.lines().find(|l| l.contains("audit.chain_broken")).unwrap_or_else(|| panic!("{logs}"));
    assert!(line.contains(&org.id.to_string()) && !line.contains(&healthy.id.to_string()), "{line}");
}

#[tokio::test]
async fn verify_returns_a_checkpoint_signed_with_our_published_key() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    app.workspace(&org, "Production").await;
    let status = verify(&app, &org).await;
    assert_eq!(status["intact"], true);
    assert_eq!(status["entries"], 2);
    assert_eq!(status["head_seq"], 2);

    let jwks = app.public_json("/.well-known/jwks.json").await;
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwks["keys"][0].clone()).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.required_spec_claims = ["sub".to_owned()].into();
    validation.validate_exp = false;
    validation.validate_aud = false;
    let checkpoint = jsonwebtoken::decode::<Value>(status["checkpoint"].as_str().unwrap(), &key, &validation)
        .expect("signature verifies");
    assert_eq!(checkpoint.claims["sub"], org.id.to_string());
    assert_eq!(checkpoint.claims["seq"], 2);
    assert_eq!(checkpoint.claims["hash"], status["head_hash"]);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tenantry"))
        .args(["audit", "verify"])
        .env("TENANTRY_ADMIN_DATABASE_URL", admin_url(&app.database))
        .env("TENANTRY_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{}  ok      2 entries", org.id)));
}

#[tokio::test]
async fn a_denied_write_is_recorded_even_with_a_single_pooled_connection() {
    // The denial is written in the handler's own transaction: recording it must not need a
    // second connection while the first is held.
    let app = TestApp::spawn_with(|s| {
        s.pool_size = 1;
        s.pool_timeout_ms = 500;
    })
    .await;
    let org = app.org_with_owner("acme").await;
    let viewer = app.member(&org, "viewer@acme.test", "viewer").await;
    for name in ["a", "b", "c"] {
        let res = app
            .post(&format!("/api/v1/orgs/{}/workspaces", org.id), &viewer.token, &json!({"name": name}))
            .await;
        assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    }
    let denied = app
        .raw_count(
            "select count(*) from audit_events where organization_id = $1 and outcome = 'denied' and actor_id = $2",
            &[&org.id, &viewer.id],
        )
        .await;
    assert_eq!(denied, 3);
    assert_eq!(app.raw_count("select count(*) from workspaces", &[]).await, 0);
}
