//! Tenant isolation, end to end. The route list comes from the served OpenAPI document, so a new
//! organization-scoped route without a probe body below fails this suite.

use std::collections::BTreeMap;

use futures_util::StreamExt as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestOrg, app_url, assert_problem, connect, set_context, without_request_id};

/// A valid body for every write route, keyed by "METHOD path-template".
fn probe_body(method: &Method, template: &str, b_user: Uuid) -> Option<Option<Value>> {
    let body = match (method.as_str(), template) {
        ("GET" | "DELETE", _) | ("POST", "/api/v1/orgs/{org_id}/exports") => None,
        ("PATCH", "/api/v1/orgs/{org_id}") => Some(json!({"name": "Pwned"})),
        ("POST", "/api/v1/orgs/{org_id}/members") => Some(json!({"user_id": b_user, "role": "admin"})),
        ("PATCH", "/api/v1/orgs/{org_id}/members/{user_id}") => Some(json!({"role": "viewer"})),
        ("POST", "/api/v1/orgs/{org_id}/workspaces") => Some(json!({"name": "Pwned"})),
        ("PATCH", "/api/v1/orgs/{org_id}/workspaces/{workspace_id}") => Some(json!({"name": "Pwned"})),
        ("POST", "/api/v1/orgs/{org_id}/api-keys") => {
            Some(json!({"name": "Pwned", "scopes": ["workspaces:read"]}))
        }
        ("PUT", "/api/v1/orgs/{org_id}/members/{user_id}/workspaces") => Some(json!({"workspace_ids": []})),
        ("POST", "/api/v1/orgs/{org_id}/workspaces/{workspace_id}/workflows") => {
            Some(json!({"name": "pwned", "definition": "steps:\n  - id: a\n    uses: x\n"}))
        }
        ("PATCH", "/api/v1/orgs/{org_id}/workspaces/{workspace_id}/workflows/{workflow_id}") => {
            Some(json!({"name": "pwned"}))
        }
        ("POST", "/api/v1/orgs/{org_id}/workspaces/{workspace_id}/workflows/{workflow_id}/publish")
        | ("POST", "/api/v1/orgs/{org_id}/workspaces/{workspace_id}/workflows/{workflow_id}/archive")
        | ("POST", "/api/v1/orgs/{org_id}/workspaces/{workspace_id}/runs/{run_id}/cancel") => None,
        ("POST", "/api/v1/orgs/{org_id}/workspaces/{workspace_id}/workflows/{workflow_id}/runs") => {
            Some(json!({"input": {"pwned": true}}))
        }
        ("PUT", "/api/v1/orgs/{org_id}/workspaces/{workspace_id}/provider-keys/{provider}") => {
            Some(json!({"api_key": "sk-proj-pwned0123456789abcdefghijklmn"}))
        }
        ("POST", "/api/v1/orgs/{org_id}/workspaces/{workspace_id}/provider-keys/{provider}/verify") => None,
        ("PUT", "/api/v1/orgs/{org_id}/flags/{flag_key}") => Some(json!({"enabled": true})),
        ("PUT", "/api/v1/orgs/{org_id}/subscription") => Some(json!({"plan_id": "enterprise"})),
        ("POST", "/api/v1/orgs/{org_id}/flags/evaluate") => None,
        ("POST", "/api/v1/orgs/{org_id}/invitations") => {
            Some(json!({"email": "pwned@example.test", "role": "admin"}))
        }
        ("POST", "/api/v1/orgs/{org_id}/invitations/bulk") => {
            Some(json!({"invitations": [{"email": "pwned@example.test", "role": "admin"}]}))
        }
        ("POST", "/api/v1/orgs/{org_id}/provider-grants") => {
            Some(json!({"provider": "issuer:https://idp.example.test", "role": "admin"}))
        }
        ("POST", "/api/v1/orgs/{org_id}/roles") => {
            Some(json!({"name": "pwned", "permissions": ["org:read"]}))
        }
        ("PATCH", "/api/v1/orgs/{org_id}/roles/{role_id}") => Some(json!({"name": "pwned"})),
        ("POST", "/api/v1/orgs/{org_id}/webhook-endpoints") => {
            Some(json!({"url": "https://attacker.example.com/x", "event_types": ["*"]}))
        }
        ("PATCH", "/api/v1/orgs/{org_id}/webhook-endpoints/{endpoint_id}") => {
            Some(json!({"url": "https://attacker.example.com/x"}))
        }
        ("POST", "/api/v1/orgs/{org_id}/webhook-endpoints/{endpoint_id}/rotate-secret") => Some(json!({})),
        ("POST", "/api/v1/orgs/{org_id}/webhook-endpoints/{endpoint_id}/test") => None,
        ("POST", "/api/v1/orgs/{org_id}/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/retry") => {
            None
        }
        _ => return None,
    };
    Some(body)
}

fn fill(template: &str, ids: &BTreeMap<&str, Uuid>) -> String {
    let mut path = template
        .replace("{table}", "workspaces")
        .replace("{version}", "1")
        .replace("{provider}", "openai")
        .replace("{flag_key}", "probe-flag");
    for (name, id) in ids {
        path = path.replace(&format!("{{{name}}}"), &id.to_string());
    }
    assert!(!path.contains('{'), "no probe id for a parameter in {template}");
    path
}

/// Everything organization A owns, as a superuser sees it.
async fn snapshot(app: &TestApp, org: Uuid) -> Vec<String> {
    let mut out = Vec::new();
    for sql in [
        "select row_to_json(o)::text from organizations o where id = $1",
        "select row_to_json(m)::text from memberships m where organization_id = $1 order by user_id",
        "select row_to_json(w)::text from workspaces w where organization_id = $1 order by id",
        "select row_to_json(k)::text from api_keys k where organization_id = $1 order by id",
        "select row_to_json(r)::text from roles r where organization_id = $1 order by id",
        "select row_to_json(i)::text from invitations i where organization_id = $1 order by id",
        "select row_to_json(e)::text from exports e where organization_id = $1 order by id",
        "select row_to_json(w)::text from workflows w where organization_id = $1 order by id",
        "select row_to_json(v)::text from workflow_versions v where organization_id = $1 order by workflow_id, version",
        "select row_to_json(p)::text from role_permissions p where organization_id = $1 order by role_id, permission",
        "select row_to_json(r)::text from workflow_runs r where organization_id = $1 order by id",
        "select row_to_json(i)::text from workflow_run_inputs i where organization_id = $1 order by run_id",
        "select row_to_json(p)::text from provider_keys p where organization_id = $1 order by workspace_id, provider",
        "select row_to_json(k)::text from organization_data_keys k where organization_id = $1",
        "select row_to_json(f)::text from organization_flags f where organization_id = $1 order by flag_key",
        "select row_to_json(t)::text from feature_flag_targets t where organization_id = $1 order by flag_key",
        "select row_to_json(s)::text from subscriptions s where organization_id = $1",
        "select row_to_json(i)::text from invoices i where organization_id = $1 order by id",
        "select row_to_json(l)::text from invoice_lines l where organization_id = $1 order by invoice_id, line_no",
        "select row_to_json(a)::text from ledger_accounts a where organization_id = $1 order by id",
        "select row_to_json(t)::text from journal_transactions t where organization_id = $1 order by id",
        "select row_to_json(e)::text from journal_entries e where organization_id = $1 order by transaction_id, line_no",
        "select row_to_json(g)::text from provider_grants g where organization_id = $1 order by id",
        "select row_to_json(w)::text from member_workspaces w where organization_id = $1 order by user_id, workspace_id",
        "select row_to_json(e)::text from events e where organization_id = $1 order by id",
        "select row_to_json(w)::text from webhook_endpoints w where organization_id = $1 order by id",
        "select row_to_json(d)::text from webhook_deliveries d where organization_id = $1 order by id",
    ] {
        for row in app.rls_bypassing_admin.query(sql, &[&org]).await.unwrap() {
            out.push(row.get(0));
        }
    }
    out
}

#[tokio::test]
async fn every_org_scoped_route_answers_another_tenants_objects_exactly_like_random_ids() {
    let app = TestApp::spawn_with(crate::helpers::with_trusted_idp).await;
    let a: TestOrg = app.org_with_owner("org-a").await;
    let a_member = app.member(&a, "member@org-a.test", "editor").await;
    let a_workspace = app.workspace(&a, "A's workspace").await;
    let a_key = app.api_key(&a, &["workspaces:read"]).await.0;
    let a_role = app.custom_role(&a, "a-role", &["org:read"]).await;
    let a_invitation = app.invitation(&a, "someone@example.test", "viewer").await.0;
    let a_provider_grant = app.provider_grant(&a, "viewer").await;
    let a_workflow = app.workflow(&a, a_workspace).await;
    let a_run = app.run(&a, a_workspace, a_workflow).await;
    app.provider_key(&a, a_workspace).await;
    app.flag_config(&a, "probe-flag").await;
    let a_invoice = app.subscription(&a).await;
    let a_export: Uuid = app.export(&a).await["id"].as_str().unwrap().parse().unwrap();
    let a_event: Uuid = app
        .rls_bypassing_admin
        .query_one("select id from events where organization_id = $1 order by id limit 1", &[&a.id])
        .await
        .unwrap()
        .get(0);
    let a_endpoint = app.webhook_endpoint(&a, "https://hooks.example.com/a", &["*"]).await.0;
    app.workspace(&a, "A's delivered workspace").await;
    let a_delivery: Uuid = app
        .rls_bypassing_admin
        .query_one("select id from webhook_deliveries where endpoint_id = $1 limit 1", &[&a_endpoint])
        .await
        .unwrap()
        .get(0);
    let b: TestOrg = app.org_with_owner("org-b").await;
    let b_workspace = app.workspace(&b, "B's workspace").await;
    let b_user = app.member(&b, "member@org-b.test", "viewer").await;
    let before = snapshot(&app, a.id).await;

    // B's owner names A's organization and A's objects; then ids that exist nowhere; then B's own
    // organization with A's object ids. Every path parameter must have an entry here.
    let a_ids = BTreeMap::from([
        ("org_id", a.id),
        ("workspace_id", a_workspace),
        ("user_id", a_member.id),
        ("key_id", a_key),
        ("role_id", a_role),
        ("invitation_id", a_invitation),
        ("export_id", a_export),
        ("workflow_id", a_workflow),
        ("run_id", a_run),
        ("invoice_id", a_invoice),
        ("grant_id", a_provider_grant),
        ("event_id", a_event),
        ("endpoint_id", a_endpoint),
        ("delivery_id", a_delivery),
    ]);
    let random = BTreeMap::from([
        ("org_id", Uuid::new_v4()),
        ("workspace_id", Uuid::new_v4()),
        ("user_id", Uuid::new_v4()),
        ("key_id", Uuid::new_v4()),
        ("role_id", Uuid::new_v4()),
        ("invitation_id", Uuid::new_v4()),
        ("export_id", Uuid::new_v4()),
        ("workflow_id", Uuid::new_v4()),
        ("run_id", Uuid::new_v4()),
        ("invoice_id", Uuid::new_v4()),
        ("grant_id", Uuid::new_v4()),
        ("event_id", Uuid::now_v7()),
        ("endpoint_id", Uuid::now_v7()),
        ("delivery_id", Uuid::now_v7()),
    ]);
    let mixed = BTreeMap::from([
        ("org_id", b.id),
        ("workspace_id", a_workspace),
        ("user_id", a_member.id),
        ("key_id", a_key),
        ("role_id", a_role),
        ("invitation_id", a_invitation),
        ("export_id", a_export),
        ("workflow_id", a_workflow),
        ("run_id", a_run),
        ("invoice_id", a_invoice),
        ("grant_id", a_provider_grant),
        ("event_id", a_event),
        ("endpoint_id", a_endpoint),
        ("delivery_id", a_delivery),
    ]);
    let doc = app.served_openapi().await;
    let mut probed = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        if !template.contains("{org_id}") {
            continue;
        }
        for method_name in ["get", "post", "put", "patch", "delete"] {
            if item.get(method_name).is_none() {
                continue;
            }
            let method: Method = method_name.to_uppercase().parse().unwrap();
            if template.starts_with("/api/v1/admin/") {
                // Platform routes: a non-admin gets the same 403 whatever organization is named.
                let body = Some(if template.contains("/flags/") {
                    json!({"enabled": true})
                } else {
                    json!({"region": "eu"})
                });
                let res = app
                    .request(method.clone(), &fill(template, &a_ids), Some(&b.owner.token), body.as_ref())
                    .await;
                let named = without_request_id(assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await);
                let res = app
                    .request(method.clone(), &fill(template, &random), Some(&b.owner.token), body.as_ref())
                    .await;
                let nowhere =
                    without_request_id(assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await);
                assert_eq!(named, nowhere, "{method} {template}");
                continue;
            }
            let body = probe_body(&method, template, b_user.id)
                .unwrap_or_else(|| panic!("add a cross-tenant probe body for {method} {template}"));

            let res = app
                .request(method.clone(), &fill(template, &a_ids), Some(&b.owner.token), body.as_ref())
                .await;
            assert_eq!(res.status(), StatusCode::NOT_FOUND, "{method} {template} with A's ids");
            let cross = without_request_id(assert_problem(res, StatusCode::NOT_FOUND, "not_found").await);
            let res = app
                .request(method.clone(), &fill(template, &random), Some(&b.owner.token), body.as_ref())
                .await;
            assert_eq!(res.status(), StatusCode::NOT_FOUND, "{method} {template} with random ids");
            let nowhere = without_request_id(assert_problem(res, StatusCode::NOT_FOUND, "not_found").await);
            assert_eq!(cross, nowhere, "{method} {template}: A's ids must look like random ids");

            // Inside B's own organization, A's object ids are just as unknown. (A flag key names a
            // platform flag every organization may configure, not an object of A's.)
            if template.matches('{').count() > 1 && !template.ends_with("/flags/{flag_key}") {
                let res = app
                    .request(method.clone(), &fill(template, &mixed), Some(&b.owner.token), body.as_ref())
                    .await;
                assert_eq!(
                    res.status(),
                    StatusCode::NOT_FOUND,
                    "{method} {template} in B with A's object ids"
                );
                let own_org =
                    without_request_id(assert_problem(res, StatusCode::NOT_FOUND, "not_found").await);
                assert_eq!(own_org, nowhere, "{method} {template} in B with A's object ids");
            }
            probed += 1;
        }
    }
    assert!(probed >= 12, "only {probed} operations probed: is the OpenAPI document complete?");

    // Organization-independent routes never list A's data to B.
    let orgs: Value = app.get("/api/v1/orgs", &b.owner.token).await.json().await.unwrap();
    let ids: Vec<&str> =
        orgs["items"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![b.id.to_string()]);

    assert_eq!(snapshot(&app, a.id).await, before, "B's requests changed nothing of A's");
    let _ = b_workspace;
}

#[tokio::test]
async fn without_a_context_the_app_role_sees_nothing_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let a = app.org_with_owner("org-a").await;
    app.workspace(&a, "Production").await;
    let b = app.org_with_owner("org-b").await;
    let db = connect(&app_url(&app.database)).await;

    for table in ["organizations", "memberships", "workspaces", "users"] {
        let sql = format!("select count(*) from {table}");
        let n: i64 = db.query_one(&sql, &[]).await.unwrap().get(0);
        assert_eq!(n, 0, "{table} without context");
    }
    let err = db
        .execute("insert into workspaces (organization_id, name, region) values ($1, 'x', 'us')", &[&a.id])
        .await
        .expect_err("insert without context");
    assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE));
    assert_eq!(db.execute("update workspaces set name = 'x'", &[]).await.unwrap(), 0);
    assert_eq!(db.execute("delete from workspaces", &[]).await.unwrap(), 0);
    assert_eq!(db.execute("delete from organizations", &[]).await.unwrap(), 0);

    // Naming an organization is not enough: the user must be a member of it.
    db.batch_execute("begin").await.unwrap();
    set_context(&db, b.owner.id, a.id).await;
    let n: i64 = db.query_one("select count(*) from workspaces", &[]).await.unwrap().get(0);
    assert_eq!(n, 0, "B's owner with A's organization in context");
    assert_eq!(db.execute("update workspaces set name = 'x'", &[]).await.unwrap(), 0);
    db.batch_execute("rollback").await.unwrap();

    // An organization without a user is nothing either.
    db.batch_execute("begin").await.unwrap();
    db.execute("select set_config('app.current_organization_id', $1, true)", &[&a.id.to_string()])
        .await
        .unwrap();
    let n: i64 = db.query_one("select count(*) from workspaces", &[]).await.unwrap().get(0);
    assert_eq!(n, 0);
    db.batch_execute("rollback").await.unwrap();

    // Transaction-local settings do not survive the transaction.
    db.batch_execute("begin").await.unwrap();
    set_context(&db, a.owner.id, a.id).await;
    let n: i64 = db.query_one("select count(*) from workspaces", &[]).await.unwrap().get(0);
    assert_eq!(n, 1, "the owner sees their workspace inside the transaction");
    db.batch_execute("commit").await.unwrap();
    let n: i64 = db.query_one("select count(*) from workspaces", &[]).await.unwrap().get(0);
    assert_eq!(n, 0, "and nothing after it");
    assert_eq!(app.raw_count("select count(*) from workspaces", &[]).await, 1);
}

/// The app role records a sealed context in one transaction and replays it, setting by setting,
/// in the next (on the same connection, so the same backend): the seal is bound to the
/// transaction it was made in, so the replay is admitted nowhere. Even after its member is
/// removed, an old seal cannot bring the access back.
#[tokio::test]
async fn a_sealed_context_recorded_in_one_transaction_is_worthless_in_the_next() {
    let app = TestApp::spawn().await;
    let a = app.org_with_owner("org-a").await;
    app.workspace(&a, "Production").await;
    let db = connect(&app_url(&app.database)).await;
    const SETTINGS: [&str; 8] = [
        "app.current_user_id",
        "app.current_organization_id",
        "app.current_region",
        "app.verified_org",
        "app.verified_permissions",
        "app.verified_workspaces",
        "app.context_seal",
        "app.current_session_id",
    ];

    db.batch_execute("begin").await.unwrap();
    set_context(&db, a.owner.id, a.id).await;
    let n: i64 = db.query_one("select count(*) from workspaces", &[]).await.unwrap().get(0);
    assert_eq!(n, 1, "the sealed context admits its member");
    let mut recorded = Vec::new();
    for name in SETTINGS {
        let value: Option<String> =
            db.query_one("select current_setting($1, true)", &[&name]).await.unwrap().get(0);
        recorded.push((name, value.unwrap_or_default()));
    }
    assert_eq!(recorded[6].1.len(), 64, "the seal is a SHA-256 in hex");
    db.batch_execute("commit").await.unwrap();

    db.batch_execute("begin").await.unwrap();
    for (name, value) in &recorded {
        db.execute("select set_config($1, $2, true)", &[name, value]).await.unwrap();
    }
    let n: i64 = db.query_one("select count(*) from workspaces", &[]).await.unwrap().get(0);
    assert_eq!(n, 0, "the replayed seal admits nothing");
    let org: Option<Uuid> = db.query_one("select app.current_org_id()", &[]).await.unwrap().get(0);
    assert_eq!(org, None);
    let err = db
        .execute(
            "insert into workspaces (organization_id, name, region) values ($1, 'replayed', 'us')",
            &[&a.id],
        )
        .await
        .expect_err("an insert under a replayed seal");
    assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE));
    db.batch_execute("rollback").await.unwrap();
    assert_eq!(app.raw_count("select count(*) from workspaces where name = 'replayed'", &[]).await, 0);
}

async fn pool_bleed(pool_size: usize) {
    // A load test: 2,000 requests from two principals in seconds, far over any rate limit.
    let app = TestApp::spawn_with(|s| {
        s.pool_size = pool_size;
        s.rate_limits.enabled = false;
    })
    .await;
    let a = app.org_with_owner("org-a").await;
    let b = app.org_with_owner("org-b").await;
    for i in 0..5 {
        app.workspace(&a, &format!("a-{i}")).await;
        app.workspace(&b, &format!("b-{i}")).await;
    }
    let requests = 2000;
    let results = futures_util::stream::iter(0..requests)
        .map(|i| {
            let app = &app;
            let (org, other) = if i % 4 < 2 { (&a, &b) } else { (&b, &a) };
            async move {
                match i % 10 {
                    // A write now and then, so connections carry write transactions too.
                    3 => {
                        let res = app
                            .post(
                                &format!("/api/v1/orgs/{}/workspaces", org.id),
                                &org.owner.token,
                                &json!({"name": format!("w-{i}")}),
                            )
                            .await;
                        assert_eq!(res.status(), StatusCode::CREATED);
                        let ws: Value = res.json().await.unwrap();
                        assert_eq!(ws["organization_id"], org.id.to_string());
                    }
                    // A refused request, so error paths and rollbacks are exercised.
                    7 => {
                        let res =
                            app.get(&format!("/api/v1/orgs/{}/workspaces", other.id), &org.owner.token).await;
                        assert_eq!(res.status(), StatusCode::NOT_FOUND);
                    }
                    _ => {
                        let res = app
                            .get(&format!("/api/v1/orgs/{}/workspaces?limit=200", org.id), &org.owner.token)
                            .await;
                        assert_eq!(res.status(), StatusCode::OK);
                        let page: Value = res.json().await.unwrap();
                        for ws in page["items"].as_array().unwrap() {
                            assert_eq!(
                                ws["organization_id"],
                                org.id.to_string(),
                                "a row of the other organization leaked"
                            );
                        }
                    }
                }
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    assert_eq!(results.len(), requests);
    let per_org = app.raw_count("select count(*) from workspaces where organization_id = $1", &[&a.id]).await;
    assert_eq!(per_org, 5 + 100, "every write landed in its own organization");
}

#[tokio::test]
async fn a_pool_of_one_connection_never_bleeds_context_between_tenants() {
    pool_bleed(1).await;
}

#[tokio::test]
async fn a_pool_of_two_connections_never_bleeds_context_between_tenants() {
    pool_bleed(2).await;
}
