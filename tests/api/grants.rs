//! No grant exceeds the granter. Every path by which permissions flow from one principal to
//! another (member add and role change, invitation create and accept, custom role create and
//! edit, API key scopes, restriction edits, identity-provider consents) × every built-in role and
//! a custom role as the granter × every role (built-in and custom) as what is granted. Expected
//! outcomes come from the permission catalogue the server publishes: allowed exactly when the
//! granter holds the path's permission and everything the target grants; otherwise 403 naming a
//! missing permission, and nothing changed. A new operation whose body carries a role, scopes,
//! permissions or workspaces fails the test until it is covered here.

use std::collections::{BTreeSet, HashMap};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestOrg, TestUser, assert_problem};

type Perms = BTreeSet<String>;

/// The paths the matrix walks, by the operation that serves each.
const COVERED: &[&str] = &[
    "add_member",
    "update_member",
    "create_invitation",
    "accept_invitation",
    "create_role",
    "update_role",
    "create_api_key",
    "update_member_workspaces",
    "create_provider_grant",
];

/// Body fields by which a request hands out access.
const GRANTING_FIELDS: &[&str] = &["role", "custom_role_id", "scopes", "permissions", "workspace_ids"];

/// A custom role a member may hold: enough to manage members, roles and keys, nothing else.
const DELEGATE: &[&str] =
    &["org:read", "members:read", "members:manage", "roles:manage", "api_keys:manage", "workspaces:read"];

/// What a grant hands out: a role (built-in, or custom with its id) and the permissions it carries.
#[derive(Clone, Debug)]
struct Target {
    role: String,
    custom_role_id: Option<Uuid>,
    perms: Perms,
}

impl Target {
    fn role_body(&self) -> Value {
        json!({"role": self.role, "custom_role_id": self.custom_role_id})
    }
    fn label(&self) -> String {
        match self.custom_role_id {
            Some(_) => format!("custom{:?}", self.perms),
            None => self.role.clone(),
        }
    }
}

fn perms(list: &[&str]) -> Perms {
    list.iter().map(|p| (*p).to_owned()).collect()
}

/// One granter's organization: the granter, a victim to act on, a workspace, and custom roles.
struct Rig {
    label: String,
    org: TestOrg,
    granter: TestUser,
    granter_perms: Perms,
    victim: TestUser,
    workspace: Uuid,
    targets: Vec<Target>,
    /// A custom role to edit (granting org:read only).
    editable_role: Uuid,
}

async fn rig(app: &TestApp, label: &str, builtin: &HashMap<String, Perms>) -> Rig {
    let org = app.org_with_owner(&format!("g-{}", label.replace('_', "-"))).await;
    let small = app.custom_role(&org, "small", &["org:read"]).await;
    let big = app.custom_role(&org, "big", &["org:read", "billing:manage", "members:manage"]).await;
    let editable_role = app.custom_role(&org, "editable", &["org:read"]).await;
    let (granter, granter_perms) = if label == "owner" {
        (org.owner.clone(), builtin["owner"].clone())
    } else if label == "delegate" {
        let role = app.custom_role(&org, "delegate", DELEGATE).await;
        let user = app.user(&format!("granter@{label}.test")).await;
        let res = app
            .post(
                &format!("/api/v1/orgs/{}/members", org.id),
                &org.owner.token,
                &json!({"user_id": user.id, "role": "custom", "custom_role_id": role}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        (user, perms(DELEGATE))
    } else {
        (app.member(&org, &format!("granter@{label}.test"), label).await, builtin[label].clone())
    };
    let victim = app.member(&org, &format!("victim@{label}.test"), "viewer").await;
    let workspace = app.workspace(&org, "W1").await;
    let mut targets: Vec<Target> = builtin
        .iter()
        .map(|(role, perms)| Target { role: role.clone(), custom_role_id: None, perms: perms.clone() })
        .collect();
    targets.sort_by(|a, b| a.role.cmp(&b.role));
    targets.push(Target { role: "custom".into(), custom_role_id: Some(small), perms: perms(&["org:read"]) });
    targets.push(Target {
        role: "custom".into(),
        custom_role_id: Some(big),
        perms: perms(&["org:read", "billing:manage", "members:manage"]),
    });
    Rig { label: label.to_owned(), org, granter, granter_perms, victim, workspace, targets, editable_role }
}

/// The outcome the catalogue predicts, and the 403 it must otherwise be.
fn expect(rig: &Rig, needs: &str, target: &Perms) -> Result<(), Perms> {
    if !rig.granter_perms.contains(needs) {
        return Err(perms(&[needs]));
    }
    let missing: Perms = target.difference(&rig.granter_perms).cloned().collect();
    if missing.is_empty() { Ok(()) } else { Err(missing) }
}

async fn check(res: reqwest::Response, expected: &Result<(), Perms>, case: &str) {
    let status = res.status();
    match expected {
        Ok(()) => assert!(
            status.is_success(),
            "{case}: expected success, got {status}: {}",
            res.text().await.unwrap()
        ),
        Err(missing) => {
            let problem = assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
            let named = problem["permission"].as_str().unwrap().to_owned();
            assert!(missing.contains(&named), "{case}: 403 names {named}, expected one of {missing:?}");
        }
    }
}

async fn count(app: &TestApp, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> i64 {
    app.raw_count(sql, params).await
}

async fn walk(app: &TestApp, rig: &Rig) -> usize {
    let org = rig.org.id;
    let token = &rig.granter.token;
    let mut cases = 0;
    for (i, target) in rig.targets.iter().enumerate() {
        let case = |path: &str| format!("{} grants {} by {path}", rig_label(rig), target.label());
        let role_target = &target.perms;

        // Member add.
        let newcomer = app.user(&format!("new{i}@{}.test", rig.org.id.simple())).await;
        let mut body = target.role_body();
        body["user_id"] = json!(newcomer.id);
        let expected = expect(rig, "members:manage", role_target);
        check(
            app.post(&format!("/api/v1/orgs/{org}/members"), token, &body).await,
            &expected,
            &case("add_member"),
        )
        .await;
        let added = count(
            app,
            "select count(*) from memberships where organization_id = $1 and user_id = $2",
            &[&org, &newcomer.id],
        )
        .await;
        assert_eq!(added, i64::from(expected.is_ok()), "{}", case("add_member"));

        // Role change of a viewer: acting on them needs the viewer role's permissions too.
        let both: Perms = role_target.union(&viewer_perms(rig)).cloned().collect();
        let expected = expect(rig, "members:manage", &both);
        let res = app
            .patch(&format!("/api/v1/orgs/{org}/members/{}", rig.victim.id), token, &target.role_body())
            .await;
        check(res, &expected, &case("update_member")).await;
        let role: String = app
            .rls_bypassing_admin
            .query_one(
                "select role from memberships where organization_id = $1 and user_id = $2",
                &[&org, &rig.victim.id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            role == target.role,
            expected.is_ok() || target.role == "viewer",
            "{}",
            case("update_member")
        );
        // Back to viewer, by the owner, for the next target.
        let res = app
            .patch(
                &format!("/api/v1/orgs/{org}/members/{}", rig.victim.id),
                &rig.org.owner.token,
                &json!({"role": "viewer"}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK);

        // Invitation create.
        let mut body = target.role_body();
        body["email"] = json!(format!("invitee{i}@example.test"));
        let expected = expect(rig, "members:manage", role_target);
        check(
            app.post(&format!("/api/v1/orgs/{org}/invitations"), token, &body).await,
            &expected,
            &case("create_invitation"),
        )
        .await;
        let invited = count(
            app,
            "select count(*) from invitations where organization_id = $1 and email = $2",
            &[&org, &format!("invitee{i}@example.test")],
        )
        .await;
        assert_eq!(invited, i64::from(expected.is_ok()), "{}", case("create_invitation"));

        // Invitation accept: an invitation in the granter's name (as if made before they lost a
        // permission) is accepted only while the granter could still make it.
        let secret: [u8; 32] = tenantry::auth::api_keys::random_bytes();
        let hash = tenantry::auth::api_keys::sha256(&secret);
        let invitation = Uuid::new_v4();
        app.rls_bypassing_admin
            .execute(
                "insert into invitations (organization_id, id, email, role, custom_role_id, token_hash, invited_by, \
                   expires_at) values ($1, $2, 'accept@example.test', $3, $4, $5, $6, now() + interval '1 day')",
                &[&org, &invitation, &target.role, &target.custom_role_id, &hash.as_slice(), &rig.granter.id],
            )
            .await
            .unwrap();
        let invitation_token = format!("tnty_inv_{}_{}", invitation.simple(), hex(&secret));
        let acceptor = app.user(&format!("acceptor{i}@{}.test", rig.org.id.simple())).await;
        let res = app
            .post("/api/v1/invitations/accept", &acceptor.token, &json!({"token": invitation_token}))
            .await;
        let expected = expect(rig, "members:manage", role_target);
        if expected.is_ok() {
            assert_eq!(res.status(), StatusCode::OK, "{}", case("accept_invitation"));
        } else {
            assert_eq!(res.status(), StatusCode::CONFLICT, "{}", case("accept_invitation"));
            assert_problem(res, StatusCode::CONFLICT, "invitation_beyond_inviter").await;
        }
        let joined = count(
            app,
            "select count(*) from memberships where organization_id = $1 and user_id = $2",
            &[&org, &acceptor.id],
        )
        .await;
        assert_eq!(joined, i64::from(expected.is_ok()), "{}", case("accept_invitation"));

        // Custom role create and edit, with the target's permissions.
        let list: Vec<&String> = target.perms.iter().collect();
        let expected = expect(rig, "roles:manage", role_target);
        let res = app
            .post(
                &format!("/api/v1/orgs/{org}/roles"),
                token,
                &json!({"name": format!("made-{i}"), "permissions": list}),
            )
            .await;
        check(res, &expected, &case("create_role")).await;
        let made = count(
            app,
            "select count(*) from roles where organization_id = $1 and name = $2",
            &[&org, &format!("made-{i}")],
        )
        .await;
        assert_eq!(made, i64::from(expected.is_ok()), "{}", case("create_role"));
        let res = app
            .patch(
                &format!("/api/v1/orgs/{org}/roles/{}", rig.editable_role),
                token,
                &json!({"permissions": list}),
            )
            .await;
        check(res, &expected, &case("update_role")).await;
        let now: Vec<String> = app
            .rls_bypassing_admin
            .query("select permission from role_permissions where organization_id = $1 and role_id = $2 order by 1", &[&org, &rig.editable_role])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let expected_now: Vec<String> =
            if expected.is_ok() { target.perms.iter().cloned().collect() } else { vec!["org:read".into()] };
        assert_eq!(now, expected_now, "{}", case("update_role"));
        // Back to org:read, by the owner.
        app.patch(
            &format!("/api/v1/orgs/{org}/roles/{}", rig.editable_role),
            &rig.org.owner.token,
            &json!({"permissions": ["org:read"]}),
        )
        .await;

        // API key scopes.
        let expected = expect(rig, "api_keys:manage", role_target);
        let res = app
            .post(
                &format!("/api/v1/orgs/{org}/api-keys"),
                token,
                &json!({"name": format!("key-{i}"), "scopes": list}),
            )
            .await;
        let status = res.status();
        match &expected {
            Ok(()) => assert_eq!(status, StatusCode::CREATED, "{}", case("create_api_key")),
            // A scope the creator lacks is named as a field (the body is otherwise fine).
            Err(missing) if rig.granter_perms.contains("api_keys:manage") => {
                let problem =
                    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
                let text = problem["errors"].to_string();
                assert!(
                    missing.iter().any(|m| text.contains(m.as_str())),
                    "{}: {problem}",
                    case("create_api_key")
                );
            }
            Err(_) => check(res, &expected, &case("create_api_key")).await,
        }
        let keys = count(
            app,
            "select count(*) from api_keys where organization_id = $1 and name = $2",
            &[&org, &format!("key-{i}")],
        )
        .await;
        assert_eq!(keys, i64::from(expected.is_ok()), "{}", case("create_api_key"));

        // Identity-provider consent (built-in roles only).
        if target.custom_role_id.is_none() {
            let expected = expect(rig, "members:manage", role_target);
            let body = json!({"provider": "issuer:https://idp.example.test", "role": target.role});
            check(
                app.post(&format!("/api/v1/orgs/{org}/provider-grants"), token, &body).await,
                &expected,
                &case("create_provider_grant"),
            )
            .await;
            let granted = count(
                app,
                "select count(*) from provider_grants where organization_id = $1 and role = $2",
                &[&org, &target.role],
            )
            .await;
            assert_eq!(granted, i64::from(expected.is_ok()), "{}", case("create_provider_grant"));
            app.rls_bypassing_admin
                .execute("delete from provider_grants where organization_id = $1", &[&org])
                .await
                .unwrap();
        }
        cases += 1;
    }

    // Restriction edits of the viewer: restrict, then lift.
    let expected = expect(rig, "members:manage", &viewer_perms(rig));
    let path = format!("/api/v1/orgs/{org}/members/{}/workspaces", rig.victim.id);
    for ids in [json!([rig.workspace]), json!([])] {
        let res = app.request(Method::PUT, &path, Some(token), Some(&json!({"workspace_ids": ids}))).await;
        check(res, &expected, &format!("{} restricts the viewer", rig_label(rig))).await;
    }
    // And of an owner: only an owner may touch one.
    let owner_path = format!("/api/v1/orgs/{org}/members/{}/workspaces", rig.org.owner.id);
    let res = app
        .request(Method::PUT, &owner_path, Some(token), Some(&json!({"workspace_ids": [rig.workspace]})))
        .await;
    check(
        res,
        &expect(rig, "members:manage", &rig_owner_perms(rig)),
        &format!("{} restricts the owner", rig_label(rig)),
    )
    .await;
    if rig.granter.id != rig.org.owner.id {
        let restricted = count(
            app,
            "select count(*) from memberships where organization_id = $1 and user_id = $2 and restricted",
            &[&org, &rig.org.owner.id],
        )
        .await;
        assert_eq!(restricted, 0, "{}: the owner was not restricted", rig_label(rig));
    }
    cases
}

fn rig_label(rig: &Rig) -> String {
    rig.label.clone()
}

fn viewer_perms(rig: &Rig) -> Perms {
    rig.targets.iter().find(|t| t.role == "viewer").map(|t| t.perms.clone()).unwrap_or_default()
}

/// The owner role's permissions (everything in the catalogue).
fn rig_owner_perms(rig: &Rig) -> Perms {
    rig.targets.iter().find(|t| t.role == "owner").map(|t| t.perms.clone()).unwrap_or_default()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn no_path_lets_any_role_grant_more_than_it_holds() {
    let app = TestApp::spawn_with(|s| {
        crate::helpers::with_trusted_idp(s);
        s.rate_limits.enabled = false;
    })
    .await;
    let builtin = crate::helpers::builtin_role_grants(&app).await;
    assert_eq!(builtin.len(), 8);

    // Every operation that hands out access is walked here.
    let doc = app.served_openapi().await;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(reference) =
                op.pointer("/requestBody/content/application~1json/schema/$ref").and_then(Value::as_str)
            else {
                continue;
            };
            let schema = &doc["components"]["schemas"][reference.rsplit('/').next().unwrap()];
            let fields: Vec<&str> = schema["properties"]
                .as_object()
                .map(|p| p.keys().map(String::as_str).collect())
                .unwrap_or_default();
            let id = op["operationId"].as_str().unwrap();
            if fields.iter().any(|f| GRANTING_FIELDS.contains(f)) && !path.starts_with("/api/v1/admin/") {
                assert!(
                    COVERED.contains(&id),
                    "{method} {path} ({id}) hands out access: add it to the grant matrix"
                );
            }
        }
    }

    let mut labels: Vec<String> = builtin.keys().cloned().collect();
    labels.sort();
    labels.push("delegate".into());
    let mut cases = 0;
    for label in &labels {
        let rig = rig(&app, label, &builtin).await;
        cases += walk(&app, &rig).await;
    }
    assert_eq!(cases, labels.len() * 10, "9 granters x 10 targets");
}

/// The review's first finding: a member whose custom role holds only org:read, members:read and
/// members:manage made themselves admin and invited an admin.
#[tokio::test]
async fn a_member_manager_cannot_make_themselves_or_anyone_else_admin() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("escalate").await;
    let role = app.custom_role(&org, "member-manager", &["org:read", "members:read", "members:manage"]).await;
    let mallory = app.user("mallory@escalate.test").await;
    let body = json!({"user_id": mallory.id, "role": "custom", "custom_role_id": role});
    assert_eq!(
        app.post(&format!("/api/v1/orgs/{}/members", org.id), &org.owner.token, &body).await.status(),
        201
    );

    let res = app
        .patch(
            &format!("/api/v1/orgs/{}/members/{}", org.id, mallory.id),
            &mallory.token,
            &json!({"role": "admin"}),
        )
        .await;
    let problem = assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    assert!(
        !["org:read", "members:read", "members:manage"].contains(&problem["permission"].as_str().unwrap())
    );
    let res = app
        .post(
            &format!("/api/v1/orgs/{}/invitations", org.id),
            &mallory.token,
            &json!({"email": "friend@evil.test", "role": "admin"}),
        )
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    let friend = app.user("friend@evil.test").await;
    let res = app
        .post(
            &format!("/api/v1/orgs/{}/members", org.id),
            &mallory.token,
            &json!({"user_id": friend.id, "role": "editor"}),
        )
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    // What they may give: their own role, or less.
    let res = app
        .post(
            &format!("/api/v1/orgs/{}/members", org.id),
            &mallory.token,
            &json!({"user_id": friend.id, "role": "custom", "custom_role_id": role}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);

    assert_eq!(
        app.raw_count(
            "select count(*) from memberships where organization_id = $1 and role = 'admin'",
            &[&org.id]
        )
        .await,
        0
    );
    assert_eq!(app.raw_count("select count(*) from invitations", &[]).await, 0);
    let denied = app
        .raw_count(
            "select count(*) from audit_events where organization_id = $1 and outcome = 'denied'",
            &[&org.id],
        )
        .await;
    assert_eq!(denied, 3, "each refusal is in the audit log");
}

/// The review's second finding: a member restricted to W1 read W2 through an API key they made,
/// and lifted their own restriction.
#[tokio::test]
async fn a_restricted_member_cannot_reach_beyond_their_workspaces() {
    let app = TestApp::spawn_with(crate::helpers::with_trusted_idp).await;
    let org = app.org_with_owner("restricted").await;
    let w1 = app.workspace(&org, "W1").await;
    let w2 = app.workspace(&org, "W2").await;
    let admin = app.member(&org, "admin@restricted.test", "admin").await;
    let restrict = |user: Uuid, ids: Value| {
        let path = format!("/api/v1/orgs/{}/members/{user}/workspaces", org.id);
        let token = org.owner.token.clone();
        let app = &app;
        async move { app.request(Method::PUT, &path, Some(&token), Some(&json!({"workspace_ids": ids}))).await }
    };
    assert_eq!(restrict(admin.id, json!([w1])).await.status(), StatusCode::OK);
    let base = format!("/api/v1/orgs/{}", org.id);

    // Their key is restricted like them, and W2 does not exist for it.
    let res = app
        .post(
            &format!("{base}/api-keys"),
            &admin.token,
            &json!({"name": "mine", "scopes": ["workspaces:read"]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let key: Value = res.json().await.unwrap();
    assert_eq!(key["workspace_ids"], json!([w1]));
    let secret = key["secret"].as_str().unwrap();
    assert_eq!(app.get(&format!("{base}/workspaces/{w1}"), secret).await.status(), StatusCode::OK);
    assert_problem(
        app.get(&format!("{base}/workspaces/{w2}"), secret).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let listed: Value = app.get(&format!("{base}/workspaces"), secret).await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let res = app
        .post(
            &format!("{base}/api-keys"),
            &admin.token,
            &json!({"name": "wider", "scopes": ["workspaces:read"], "workspace_ids": [w2]}),
        )
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "workspace_restricted").await;

    // They cannot lift or widen their own restriction, nor touch an unrestricted member.
    let own = format!("{base}/members/{}/workspaces", admin.id);
    for ids in [json!([]), json!([w1, w2]), json!([w2])] {
        let res =
            app.request(Method::PUT, &own, Some(&admin.token), Some(&json!({"workspace_ids": ids}))).await;
        assert_problem(res, StatusCode::FORBIDDEN, "workspace_restricted").await;
    }
    let editor = app.member(&org, "editor@restricted.test", "editor").await;
    let res = app
        .request(
            Method::PUT,
            &format!("{base}/members/{}/workspaces", editor.id),
            Some(&admin.token),
            Some(&json!({"workspace_ids": [w1]})),
        )
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "workspace_restricted").await;
    let res =
        app.patch(&format!("{base}/members/{}", editor.id), &admin.token, &json!({"role": "viewer"})).await;
    assert_problem(res, StatusCode::FORBIDDEN, "workspace_restricted").await;

    // What they add or invite is restricted to their workspaces.
    let newcomer = app.user("new@restricted.test").await;
    let res = app
        .post(
            &format!("{base}/members"),
            &admin.token,
            &json!({"user_id": newcomer.id, "role": "editor", "workspace_ids": [w2]}),
        )
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "workspace_restricted").await;
    let res = app
        .post(&format!("{base}/members"), &admin.token, &json!({"user_id": newcomer.id, "role": "editor"}))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let shown: Value = app
        .get(&format!("{base}/members/{}/workspaces", newcomer.id), &admin.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown, json!({"user_id": newcomer.id, "restricted": true, "workspace_ids": [w1]}));
    let res = app
        .post(
            &format!("{base}/invitations"),
            &admin.token,
            &json!({"email": "inv@restricted.test", "role": "viewer"}),
        )
        .await;
    let invitation: Value = res.json().await.unwrap();
    assert_eq!(invitation["workspace_ids"], json!([w1]));
    let invitee = app.user("inv@restricted.test").await;
    let res =
        app.post("/api/v1/invitations/accept", &invitee.token, &json!({"token": invitation["token"]})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let listed: Value = app.get(&format!("{base}/workspaces"), &invitee.token).await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "the invitee joined restricted to W1");
    // Provider-granted members would be unrestricted: a restricted member cannot consent.
    let res = app
        .post(
            &format!("{base}/provider-grants"),
            &admin.token,
            &json!({"provider": "issuer:https://idp.example.test", "role": "viewer"}),
        )
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "workspace_restricted").await;

    // Deleting their last workspace leaves them restricted to nothing, not unrestricted.
    assert_eq!(
        app.delete(&format!("{base}/workspaces/{w1}"), &org.owner.token).await.status(),
        StatusCode::NO_CONTENT
    );
    let listed: Value = app.get(&format!("{base}/workspaces"), &admin.token).await.json().await.unwrap();
    assert_eq!(listed["items"], json!([]));
    assert_eq!(
        app.raw_count(
            "select count(*) from memberships where organization_id = $1 and user_id = $2 and restricted",
            &[&org.id, &admin.id]
        )
        .await,
        1
    );
}
