//! Tenant data lifecycle: deleting an organization removes every row it owns (checked through
//! the catalog, table by table); erasing a user removes their personal data (GDPR), refused
//! while they are the last owner somewhere.

use reqwest::StatusCode;

use crate::helpers::{TestApp, assert_problem};

#[tokio::test]
async fn deleting_an_organization_leaves_no_row_of_it_in_any_tenant_table() {
    let app = TestApp::spawn_with(crate::helpers::with_trusted_idp).await;
    let org = app.org_with_owner("acme").await;
    let other = app.org_with_owner("other").await;
    for o in [&org, &other] {
        let member = app.member(o, &format!("m@{}.test", o.id.simple()), "viewer").await;
        let ws = app.workspace(o, "Production").await;
        let workflow = app.workflow(o, ws).await;
        app.run(o, ws, workflow).await;
        app.provider_key(o, ws).await;
        app.flag_config(o, "lifecycle-flag").await;
        app.subscription(o).await;
        let res = app
            .http
            .post(format!("{}/api/v1/orgs/{}/workspaces", app.address, o.id))
            .bearer_auth(&o.owner.token)
            .header("Idempotency-Key", "lifecycle")
            .json(&serde_json::json!({"name": "Idempotent"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        app.rls_bypassing_admin
            .execute(
                "insert into feature_flag_targets (organization_id, flag_key, enabled) values ($1, 'lifecycle-flag', true)",
                &[&o.id],
            )
            .await
            .unwrap();
        let res = app
            .request(
                reqwest::Method::PUT,
                &format!("/api/v1/orgs/{}/members/{}/workspaces", o.id, member.id),
                Some(&o.owner.token),
                Some(&serde_json::json!({"workspace_ids": [ws]})),
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        app.api_key(o, &["org:read"]).await;
        app.custom_role(o, "reader", &["org:read"]).await;
        app.invitation(o, "x@example.test", "viewer").await;
        app.provider_grant(o, "admin").await;
        // An endpoint gets a delivery of the next event; an attempt at it (the dispatcher's
        // record, written here as it would be).
        app.webhook_endpoint(o, "https://hooks.example.com/lifecycle", &["*"]).await;
        app.workspace(o, "delivered").await;
        app.rls_bypassing_admin
            .execute(
                "insert into webhook_delivery_attempts (organization_id, delivery_id, attempt, started_at, duration_ms, \
                   response_status) select organization_id, id, 1, now(), 5, 200 from webhook_deliveries \
                 where organization_id = $1",
                &[&o.id],
            )
            .await
            .unwrap();
        app.export(o).await;
    }

    app.state.usage.flush(&app.state.db).await.unwrap(); // both organizations' usage counted
    let res = app.delete(&format!("/api/v1/orgs/{}", org.id), &org.owner.token).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    let tables = app
        .rls_bypassing_admin
        .query(
            "select c.oid::regclass::text from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             join pg_attribute a on a.attrelid = c.oid and a.attname = 'organization_id' and not a.attisdropped \
             where c.relkind = 'r' and n.nspname = 'public' order by 1",
            &[],
        )
        .await
        .unwrap();
    let mut checked = 0;
    for row in tables {
        let table: String = row.get(0);
        let gone = app
            .raw_count(&format!("select count(*) from {table} where organization_id = $1"), &[&org.id])
            .await;
        let kept = app
            .raw_count(&format!("select count(*) from {table} where organization_id = $1"), &[&other.id])
            .await;
        if table == "audit_events" {
            // The log is kept on purpose: it outlives what it describes.
            assert!(gone > 0 && kept > 0, "audit chains are kept");
            continue;
        }
        if table == "organization_tombstones" {
            // What is left of a deleted organization: its id and when it went.
            assert_eq!((gone, kept), (1, 0), "one tombstone, for the deleted organization only");
            continue;
        }
        assert_eq!(gone, 0, "{table} still holds rows of the deleted organization");
        assert!(kept > 0, "{table}: the other organization's rows are untouched");
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} tenant tables checked");
    assert_eq!(app.raw_count("select count(*) from organizations where id = $1", &[&org.id]).await, 0);
}

#[tokio::test]
async fn a_user_erases_themselves_unless_they_are_the_last_owner_somewhere() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let carol = app.member(&org, "carol@acme.test", "editor").await;
    let session = app.sign_in(&carol).await;

    // The owner cannot leave the organization ownerless.
    let res = app.delete("/api/v1/me", &org.owner.token).await;
    assert_problem(res, StatusCode::CONFLICT, "last_owner").await;
    assert_eq!(app.raw_count("select count(*) from users where id = $1", &[&org.owner.id]).await, 1);

    let res = app.delete("/api/v1/me", &session.access_token).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    for (table, column) in [("users", "id"), ("memberships", "user_id"), ("sessions", "user_id")] {
        let sql = format!("select count(*) from {table} where {column} = $1");
        assert_eq!(app.raw_count(&sql, &[&carol.id]).await, 0, "{table} still holds the erased user");
    }
    assert_problem(
        app.get("/api/v1/me", &session.access_token).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    let erased = app
        .raw_count(
            "select count(*) from audit_events where action = 'user.erase' and actor_id = $1",
            &[&carol.id],
        )
        .await;
    assert_eq!(erased, 1);

    // With a second owner, the first may go.
    let second = app.member(&org, "second@acme.test", "owner").await;
    assert_eq!(app.delete("/api/v1/me", &org.owner.token).await.status(), StatusCode::NO_CONTENT);
    let owners = app
        .raw_count(
            "select count(*) from memberships where organization_id = $1 and role = 'owner' and user_id = $2",
            &[&org.id, &second.id],
        )
        .await;
    assert_eq!(owners, 1, "the second owner remains");
}

#[tokio::test]
async fn an_export_holds_every_row_of_the_organization_and_none_of_another() {
    let app = TestApp::spawn_with(crate::helpers::with_trusted_idp).await;
    let org = app.org_with_owner("acme").await;
    let other = app.org_with_owner("other").await;
    for o in [&org, &other] {
        app.member(o, &format!("m@{}.test", o.id.simple()), "viewer").await;
        app.workspace(o, "Production").await;
        app.workspace(o, "Staging").await;
        app.api_key(o, &["org:read"]).await;
        app.custom_role(o, "reader", &["org:read"]).await;
        app.invitation(o, "x@example.test", "viewer").await;
        app.provider_grant(o, "admin").await;
    }
    let admin = app.member(&org, "admin@acme.test", "admin").await;
    let res = app
        .request(reqwest::Method::POST, &format!("/api/v1/orgs/{}/exports", org.id), Some(&admin.token), None)
        .await;
    let body = assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(body["permission"], "org:export");

    let export = app.export(&org).await;
    assert_eq!(export["tables_done"], export["tables_total"]);
    let files = export["files"].as_array().unwrap();
    assert_eq!(files.len(), tenantry::api::exports::TABLES.len());
    for file in files {
        let table = file["table"].as_str().unwrap();
        let res = app.get(file["url"].as_str().unwrap(), &org.owner.token).await;
        assert_eq!(res.status(), StatusCode::OK, "{table}");
        assert_eq!(res.headers()["content-type"], "application/x-ndjson");
        let text = res.text().await.unwrap();
        let lines: Vec<serde_json::Value> =
            text.lines().filter(|l| !l.is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len() as i64, file["rows"].as_i64().unwrap(), "{table}");
        assert!(!text.contains(&other.id.to_string()), "{table} holds the other organization's data");
        assert!(!text.contains("secret_hash") && !text.contains("token_hash"), "{table} holds secrets");
        let expected = match table {
            "organizations" => 1,
            "users" => {
                app.raw_count("select count(*) from memberships where organization_id = $1", &[&org.id]).await
            }
            _ => {
                let sql = format!("select count(*) from {table} where organization_id = $1");
                app.raw_count(&sql, &[&org.id]).await
            }
        };
        // The audit log gains the export's own entry after the snapshot was taken.
        let tolerance = if table == "audit_events" { 1 } else { 0 };
        assert!(
            expected - lines.len() as i64 <= tolerance && expected >= lines.len() as i64,
            "{table}: {} rows exported, {expected} in the database",
            lines.len()
        );
    }
}

#[tokio::test]
async fn the_export_covers_every_tenant_table() {
    let app = TestApp::spawn().await;
    let rows = app
        .rls_bypassing_admin
        .query(
            "select c.relname::text from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             join pg_attribute a on a.attrelid = c.oid and a.attname = 'organization_id' and not a.attisdropped \
             where c.relkind = 'r' and n.nspname = 'public' \
               and c.relname not in ('exports', 'export_files', 'export_chunks', 'workflow_run_inputs', 'organization_data_keys', \
                                     'idempotency_keys', 'organization_tombstones', 'member_profiles')",
            &[],
        )
        .await
        .unwrap();
    // Not exported: workflow_run_inputs holds a queued run's input for its worker only (in `full`
    // mode the same input is on the exported run) and is deleted when the run finishes;
    // organization_data_keys is key material (wrapped), not the tenant's data; idempotency_keys is
    // a day-long cache of responses the tenant already received; organization_tombstones exist only
    // once the organization is gone; member_profiles is the export's `users` (its members' profiles).
    let exported: Vec<&str> = tenantry::api::exports::TABLES.iter().map(|(t, _)| *t).collect();
    for row in rows {
        let table: String = row.get(0);
        assert!(exported.contains(&table.as_str()), "add {table} to the organization export");
    }
}

#[tokio::test]
async fn a_deleted_organizations_audit_chain_is_kept_or_anonymised_as_configured() {
    for anonymise in [false, true] {
        let app = TestApp::spawn_with(|s| {
            if anonymise {
                s.audit_on_organization_delete = tenantry::config::AuditRetention::Anonymise;
            }
        })
        .await;
        let org = app.org_with_owner("acme").await;
        app.member(&org, "carol@acme.test", "editor").await;
        app.workspace(&org, "Production").await;
        let entries =
            app.raw_count("select count(*) from audit_events where organization_id = $1", &[&org.id]).await;

        let res = app.delete(&format!("/api/v1/orgs/{}", org.id), &org.owner.token).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);

        let personal = app
            .raw_count(
                "select count(*) from audit_events where organization_id = $1 \
                 and action <> 'audit.anonymise' \
                 and (actor_id is not null or ip is not null or user_agent is not null or details <> '{}')",
                &[&org.id],
            )
            .await;
        let total =
            app.raw_count("select count(*) from audit_events where organization_id = $1", &[&org.id]).await;
        let broken = app.raw_count("select count(*) from app.audit_verify($1)", &[&org.id]).await;
        assert_eq!(broken, 0, "the chain verifies (anonymise: {anonymise})");
        if anonymise {
            assert_eq!(personal, 0, "no personal data is left");
            assert_eq!(total, entries + 2, "entries kept, plus the deletion and the anonymisation");
            let last = app
                .raw_count(
                    "select count(*) from audit_events where organization_id = $1 and action = 'audit.anonymise' \
                     and seq = (select max(seq) from audit_events where organization_id = $1)",
                    &[&org.id],
                )
                .await;
            assert_eq!(last, 1);
        } else {
            assert!(personal > 0, "kept as it was");
            assert_eq!(total, entries + 1, "plus the deletion");
        }
    }
}

#[tokio::test]
async fn an_export_is_a_job_one_at_a_time_that_stops_when_its_owner_may_no_longer_export() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let exports = format!("/api/v1/orgs/{}/exports", org.id);
    // Hold every export slot: jobs wait, queued.
    let slots =
        app.state.export_slots.acquire_many(tenantry::api::exports::CONCURRENT_EXPORTS as u32).await.unwrap();
    let res = app.request(reqwest::Method::POST, &exports, Some(&org.owner.token), None).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let job: serde_json::Value = res.json().await.unwrap();
    assert_eq!(job["status"], "queued");
    assert_eq!(job["files"], serde_json::json!([]));
    // One at a time per organization.
    let res = app.request(reqwest::Method::POST, &exports, Some(&org.owner.token), None).await;
    assert_problem(res, StatusCode::CONFLICT, "export_in_progress").await;
    // Not downloadable before it succeeded.
    let res = app.get(&format!("{location}/workspaces"), &org.owner.token).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    drop(slots);
    let mut job = serde_json::Value::Null;
    for _ in 0..200 {
        job = app.get(&location, &org.owner.token).await.json().await.unwrap();
        if job["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(job["rows_exported"].as_i64().unwrap() > 0 && job["finished_at"].is_string());

    // A second owner starts one and is demoted before it runs: nothing is written for them.
    let second = app.member(&org, "second@acme.test", "owner").await;
    let slots =
        app.state.export_slots.acquire_many(tenantry::api::exports::CONCURRENT_EXPORTS as u32).await.unwrap();
    let res = app.request(reqwest::Method::POST, &exports, Some(&second.token), None).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let id: uuid::Uuid =
        res.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().parse().unwrap();
    let res = app
        .patch(
            &format!("/api/v1/orgs/{}/members/{}", org.id, second.id),
            &org.owner.token,
            &serde_json::json!({"role": "viewer"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    drop(slots);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let chunks = app.raw_count("select count(*) from export_chunks where export_id = $1", &[&id]).await;
    assert_eq!(chunks, 0, "no row exported for someone who may no longer export");
    let status: String = app
        .rls_bypassing_admin
        .query_one("select status from exports where id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_ne!(status, "succeeded");
    let res = app.get(&format!("/api/v1/orgs/{}/exports/{id}", org.id), &second.token).await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
}
