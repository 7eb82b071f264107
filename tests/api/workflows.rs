use futures_util::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, app_url, assert_problem, connect, set_context};

const DEFINITION: &str =
    "steps:\n  - id: fetch\n    uses: http.get\n  - id: summarize\n    uses: llm.chat\n    needs: [fetch]\n";

#[tokio::test]
async fn bad_definitions_name_the_line_and_field_and_change_nothing() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let ws = app.workspace(&org, "Production").await;
    let base = format!("/api/v1/orgs/{}/workspaces/{ws}/workflows", org.id);

    let res = app
        .post(
            &base,
            &org.owner.token,
            &json!({"name": "w", "definition": "steps:\n  - id: a\n    uses: [oops\n"}),
        )
        .await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("line"), "{body}");
    let res =
        app.post(&base, &org.owner.token, &json!({"name": "w", "definition": "steps:\n  - id: a\n"})).await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "definition.steps[0]");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("line 2"), "{body}");
    assert_eq!(app.raw_count("select count(*) from workflows", &[]).await, 0);
}

#[tokio::test]
async fn publishing_makes_numbered_versions_that_nobody_can_change() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let ws = app.workspace(&org, "Production").await;
    let editor = app.member(&org, "editor@acme.test", "editor").await;
    let approver = app.member(&org, "approver@acme.test", "approver").await;
    let base = format!("/api/v1/orgs/{}/workspaces/{ws}/workflows", org.id);

    let res = app.post(&base, &editor.token, &json!({"name": "digest", "definition": DEFINITION})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let wf: Value = res.json().await.unwrap();
    let path = format!("{base}/{}", wf["id"].as_str().unwrap());
    assert_eq!(wf["latest_version"], 0);

    // The editor drafts, the approver publishes.
    let res = app.request(reqwest::Method::POST, &format!("{path}/publish"), Some(&editor.token), None).await;
    assert_eq!(
        assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await["permission"],
        "workflows:publish"
    );
    let res =
        app.request(reqwest::Method::POST, &format!("{path}/publish"), Some(&approver.token), None).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let v1: Value = res.json().await.unwrap();
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["spec"]["steps"][1]["needs"], json!(["fetch"]));
    // Recorded once, in this organization's log, as the approver's, with the request's metadata.
    let wf_id = wf["id"].as_str().unwrap().to_string();
    assert_eq!(
        app.raw_count(
            "select count(*) from audit_events where organization_id = $1 and action = 'workflow.publish' \
             and actor_type = 'user' and actor_id = $2 and target_id = $3 and details = '{\"version\": 1}' \
             and request_id is not null",
            &[&org.id, &approver.id, &wf_id],
        )
        .await,
        1
    );
    // The editor's refusal is the only other entry for it.
    assert_eq!(
        app.raw_count(
            "select count(*) from audit_events where action = 'workflow.publish' and outcome = 'allowed'",
            &[]
        )
        .await,
        1
    );
    assert_eq!(
        app.raw_count(
            "select count(*) from audit_events where action = 'workflow.publish' and outcome = 'denied' \
             and actor_id = $1",
            &[&editor.id]
        )
        .await,
        1
    );

    // Editing the draft does not touch version 1.
    let res = app
        .patch(&path, &editor.token, &json!({"definition": "steps:\n  - id: only\n    uses: noop\n"}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let got: Value = app.get(&format!("{path}/versions/1"), &editor.token).await.json().await.unwrap();
    assert_eq!(got["definition"], DEFINITION);

    // Below the handlers: the app role cannot update a version, and nobody can change or delete one.
    let db = connect(&app_url(&app.database)).await;
    db.batch_execute("begin").await.unwrap();
    set_context(&db, org.owner.id, org.id).await;
    let err =
        db.execute("update workflow_versions set definition = 'x'", &[]).await.expect_err("no update grant");
    assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE));
    db.batch_execute("rollback").await.unwrap();
    for statement in ["update workflow_versions set definition = 'tampered'", "delete from workflow_versions"]
    {
        let err = app.rls_bypassing_admin.batch_execute(statement).await.expect_err(statement);
        assert_eq!(err.code().map(|c| c.code()), Some("TY030"), "{statement}");
    }

    // Archived: frozen.
    let res = app.request(reqwest::Method::POST, &format!("{path}/archive"), Some(&editor.token), None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res =
        app.request(reqwest::Method::POST, &format!("{path}/publish"), Some(&approver.token), None).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    assert_problem(
        app.patch(&path, &editor.token, &json!({"name": "x"})).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn concurrent_publishes_are_numbered_without_gaps_or_duplicates() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let ws = app.workspace(&org, "Production").await;
    let base = format!("/api/v1/orgs/{}/workspaces/{ws}/workflows", org.id);
    let wf: Value = app
        .post(&base, &org.owner.token, &json!({"name": "w", "definition": DEFINITION}))
        .await
        .json()
        .await
        .unwrap();
    let publish = format!("{base}/{}/publish", wf["id"].as_str().unwrap());

    let mut versions: Vec<i64> = futures_util::stream::iter(0..20)
        .map(|_| async {
            let res = app.request(reqwest::Method::POST, &publish, Some(&org.owner.token), None).await;
            assert_eq!(res.status(), StatusCode::CREATED);
            res.json::<Value>().await.unwrap()["version"].as_i64().unwrap()
        })
        .buffer_unordered(10)
        .collect()
        .await;
    versions.sort();
    assert_eq!(versions, (1..=20).collect::<Vec<_>>());
    assert_eq!(app.raw_count("select max(version)::int8 from workflow_versions", &[]).await, 20);
}
