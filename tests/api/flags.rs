//! Feature flags: platform definitions, per-organization rollouts, the kill switch, targeting,
//! sticky percentages, and cache invalidation across servers through LISTEN/NOTIFY.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use tenantry::flags::{FlagRule, OrgConfig, Reason, evaluate};

use crate::helpers::{TestApp, TestOrg, TestUser, assert_problem};

async fn platform_admin(app: &TestApp) -> TestUser {
    let ops = app.user("ops@platform.test").await;
    app.rls_bypassing_admin
        .execute("insert into platform_admins (user_id) values ($1)", &[&ops.id])
        .await
        .unwrap();
    ops
}

async fn define(app: &TestApp, admin: &TestUser, key: &str, body: Value) -> StatusCode {
    app.request(Method::PUT, &format!("/api/v1/admin/flags/{key}"), Some(&admin.token), Some(&body))
        .await
        .status()
}

/// Every flag's (value, reason) for this caller.
async fn evaluated(app: &TestApp, org: &TestOrg, token: &str) -> HashMap<String, (bool, String)> {
    let res = app
        .request(Method::POST, &format!("/api/v1/orgs/{}/flags/evaluate", org.id), Some(token), None)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    body["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let value = (f["value"].as_bool().unwrap(), f["reason"].as_str().unwrap().to_owned());
            (f["key"].as_str().unwrap().to_owned(), value)
        })
        .collect()
}

async fn configure(app: &TestApp, org: &TestOrg, key: &str, config: Value) -> reqwest::Response {
    app.request(
        Method::PUT,
        &format!("/api/v1/orgs/{}/flags/{key}", org.id),
        Some(&org.owner.token),
        Some(&config),
    )
    .await
}

#[test]
fn ten_thousand_users_at_25_percent_land_between_24_and_26_percent_and_stay_put() {
    let rule = |key: &str| FlagRule {
        key: key.into(),
        default_enabled: false,
        kill_switch: false,
        org: Some(OrgConfig { rollout_percentage: Some(25), ..Default::default() }),
        target: None,
    };
    // Synthetic users, fixed so the test is deterministic: random-looking UUIDv4 ids from a seeded
    // generator, and time-ordered UUIDv7 ids like the ones the server issues (long shared prefixes).
    fn splitmix(mut x: u64) -> u64 {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }
    let random: Vec<Uuid> = (0..10_000u64)
        .map(|i| {
            let bytes = (u128::from(splitmix(2 * i)) << 64 | u128::from(splitmix(2 * i + 1))).to_be_bytes();
            uuid::Builder::from_random_bytes(bytes).into_uuid()
        })
        .collect();
    let ordered: Vec<Uuid> = (0..10_000u64)
        .map(|i| {
            // Ten a second, with seeded (not thread-random) counter and random bits.
            let mut tail = [0u8; 10];
            tail.copy_from_slice(&splitmix(3 * i + 20_001).to_be_bytes().repeat(2)[..10]);
            uuid::Builder::from_unix_timestamp_millis(1_795_000_000_000 + i * 100, &tail).into_uuid()
        })
        .collect();
    for key in ["new-editor", "billing-v2", "x"] {
        for users in [&random, &ordered] {
            let on = users.iter().filter(|u| evaluate(&rule(key), Some(**u), **u).0).count();
            assert!((2400..=2600).contains(&on), "{key}: {on} of 10000 users at 25%");
            // The same user always gets the same answer.
            for u in users.iter().take(500) {
                assert_eq!(evaluate(&rule(key), Some(*u), *u), evaluate(&rule(key), Some(*u), *u));
                assert_eq!(evaluate(&rule(key), Some(*u), *u).1, Reason::PercentageRollout);
            }
        }
    }
}

#[tokio::test]
async fn flags_evaluate_by_rule_with_the_kill_switch_first_and_one_tenant_never_affects_another() {
    let app = TestApp::spawn().await;
    let ops = platform_admin(&app).await;
    assert_eq!(
        define(&app, &ops, "new-editor", json!({"description": "The new editor"})).await,
        StatusCode::CREATED
    );
    assert_eq!(define(&app, &ops, "beta", json!({"default_enabled": false})).await, StatusCode::CREATED);
    assert_eq!(define(&app, &ops, "dark-mode", json!({"default_enabled": true})).await, StatusCode::CREATED);

    let a = app.org_with_owner("org-a").await;
    let alice = app.member(&a, "alice@org-a.test", "viewer").await;
    let bob = app.member(&a, "bob@org-a.test", "viewer").await;
    let carol = app.member(&a, "carol@org-a.test", "viewer").await;
    let b = app.org_with_owner("org-b").await;
    let b_user = app.member(&b, "dave@org-b.test", "viewer").await;

    // A's rollout: 25%, alice always, bob never.
    let res = configure(
        &app,
        &a,
        "new-editor",
        json!({"rollout_percentage": 25, "allow_users": [alice.id], "deny_users": [bob.id]}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let flags = evaluated(&app, &a, &alice.token).await;
    assert_eq!(flags["new-editor"], (true, "user_allowed".into()));
    assert_eq!(flags["dark-mode"], (true, "default".into()));
    assert_eq!(flags["beta"], (false, "default".into()));
    assert_eq!(evaluated(&app, &a, &bob.token).await["new-editor"], (false, "user_denied".into()));
    let carols = evaluated(&app, &a, &carol.token).await["new-editor"].clone();
    assert_eq!(carols.1, "percentage_rollout");
    for _ in 0..5 {
        assert_eq!(evaluated(&app, &a, &carol.token).await["new-editor"], carols, "sticky");
    }

    // B is untouched by A's configuration, and B's targeting does not reach A.
    assert_eq!(evaluated(&app, &b, &b_user.token).await["new-editor"], (false, "default".into()));
    let res = app
        .request(
            Method::PUT,
            &format!("/api/v1/admin/flags/beta/organizations/{}", b.id),
            Some(&ops.token),
            Some(&json!({"enabled": true})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(evaluated(&app, &b, &b_user.token).await["beta"], (true, "organization_targeted".into()));
    assert_eq!(evaluated(&app, &a, &alice.token).await["beta"], (false, "default".into()));
    let res = configure(&app, &a, "dark-mode", json!({"enabled": false})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(evaluated(&app, &a, &carol.token).await["dark-mode"], (false, "organization_off".into()));
    assert_eq!(evaluated(&app, &b, &b_user.token).await["dark-mode"], (true, "default".into()));

    // The kill switch beats every rule, in every organization.
    assert_eq!(define(&app, &ops, "new-editor", json!({"kill_switch": true})).await, StatusCode::NO_CONTENT);
    assert_eq!(evaluated(&app, &a, &alice.token).await["new-editor"], (false, "kill_switch".into()));
    assert_eq!(evaluated(&app, &b, &b_user.token).await["new-editor"], (false, "kill_switch".into()));
    assert_eq!(define(&app, &ops, "new-editor", json!({"kill_switch": false})).await, StatusCode::NO_CONTENT);
    assert_eq!(evaluated(&app, &a, &alice.token).await["new-editor"], (true, "user_allowed".into()));

    // Listed with A's configuration only; changes are audited in each one's own log.
    let list: Value =
        app.get(&format!("/api/v1/orgs/{}/flags", a.id), &a.owner.token).await.json().await.unwrap();
    let editor = list.as_array().unwrap().iter().find(|f| f["key"] == "new-editor").unwrap().clone();
    assert_eq!(editor["config"]["rollout_percentage"], 25);
    let list: Value =
        app.get(&format!("/api/v1/orgs/{}/flags", b.id), &b.owner.token).await.json().await.unwrap();
    assert!(list.as_array().unwrap().iter().all(|f| f["config"].is_null()));
    assert_eq!(list.as_array().unwrap().iter().find(|f| f["key"] == "beta").unwrap()["targeted"], true);
    let audited = app
        .raw_count(
            "select count(*) from audit_events where organization_id = $1 and action = 'flag.configure'",
            &[&a.id],
        )
        .await;
    assert_eq!(audited, 2);
    let audited = app
        .raw_count(
            "select count(*) from audit_events where organization_id = $1 and action like 'flag.%'",
            &[&b.id],
        )
        .await;
    assert_eq!(audited, 1, "B's log holds its targeting only");
    let platform = app
        .raw_count(
            "select count(*) from audit_events where organization_id = '00000000-0000-0000-0000-000000000000' \
             and action in ('flag.create', 'flag.update', 'flag.target')",
            &[],
        )
        .await;
    assert_eq!(platform, 6);

    // Removing A's configuration returns A to the defaults.
    let res = app.delete(&format!("/api/v1/orgs/{}/flags/dark-mode", a.id), &a.owner.token).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(evaluated(&app, &a, &carol.token).await["dark-mode"], (true, "default".into()));
}

#[tokio::test]
async fn another_server_sees_a_change_through_listen_notify() {
    let app = TestApp::spawn().await;
    let ops = platform_admin(&app).await;
    define(&app, &ops, "new-editor", json!({})).await;
    let org = app.org_with_owner("acme").await;
    let other = app.sibling(|_| {}).await;

    // The other server caches the rules...
    assert_eq!(evaluated(&other, &org, &org.owner.token).await["new-editor"], (false, "default".into()));
    assert_eq!(evaluated(&other, &org, &org.owner.token).await["new-editor"], (false, "default".into()));
    // ...this one changes them; the other hears of it.
    assert_eq!(configure(&app, &org, "new-editor", json!({"enabled": true})).await.status(), StatusCode::OK);
    let mut seen = None;
    for _ in 0..100 {
        let value = evaluated(&other, &org, &org.owner.token).await["new-editor"].clone();
        if value.0 {
            seen = Some(value);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, Some((true, "organization_on".into())), "the other server never saw the change");
    // And a platform change (the kill switch) reaches it the same way.
    define(&app, &ops, "new-editor", json!({"kill_switch": true})).await;
    let mut killed = false;
    for _ in 0..100 {
        if evaluated(&other, &org, &org.owner.token).await["new-editor"] == (false, "kill_switch".into()) {
            killed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(killed, "the kill switch never reached the other server");
}

#[tokio::test]
async fn bad_flag_configurations_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let ops = platform_admin(&app).await;
    define(&app, &ops, "new-editor", json!({})).await;
    let org = app.org_with_owner("acme").await;
    let res = configure(&app, &org, "new-editor", json!({"rollout_percentage": 101})).await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "rollout_percentage");
    let res = configure(&app, &org, "new-editor", json!({"enabled": "yes"})).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let res = configure(&app, &org, "no-such-flag", json!({"enabled": true})).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = configure(&app, &org, "Not%20A%20Key", json!({"enabled": true})).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(app.raw_count("select count(*) from organization_flags", &[]).await, 0);

    // Platform definitions are for platform admins only; keys are validated.
    assert_eq!(
        define(&app, &org.owner, "mine", json!({"default_enabled": true})).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(define(&app, &ops, "Bad Key", json!({})).await, StatusCode::UNPROCESSABLE_ENTITY);
    let res = app
        .request(
            Method::PUT,
            &format!("/api/v1/admin/flags/new-editor/organizations/{}", Uuid::new_v4()),
            Some(&ops.token),
            Some(&json!({"enabled": true})),
        )
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(app.raw_count("select count(*) from feature_flags", &[]).await, 1);
    assert_eq!(app.raw_count("select count(*) from feature_flag_targets", &[]).await, 0);
}

/// Polls an evaluation until it answers `expected`; returns how long that took.
async fn until_status(app: &TestApp, org: &TestOrg, token: &str, expected: StatusCode) -> Duration {
    let started = std::time::Instant::now();
    let path = format!("/api/v1/orgs/{}/flags/evaluate", org.id);
    loop {
        let status = app.request(Method::POST, &path, Some(token), None).await.status();
        if status == expected {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(3), "still {status}, expected {expected}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn the_cached_standing_ends_with_the_membership_key_or_organization() {
    let app = TestApp::spawn().await;
    let ops = platform_admin(&app).await;
    define(&app, &ops, "new-editor", json!({})).await;
    let org = app.org_with_owner("acme").await;
    let member = app.member(&org, "carol@acme.test", "viewer").await;
    let (key_id, key) = app.api_key(&org, &["flags:read"]).await;
    // Warm: these evaluations are served from memory.
    for token in [&member.token, &key, &org.owner.token] {
        until_status(&app, &org, token, StatusCode::OK).await;
        until_status(&app, &org, token, StatusCode::OK).await;
    }

    // A role without flags:read: refused.
    let res = app
        .patch(
            &format!("/api/v1/orgs/{}/members/{}", org.id, member.id),
            &org.owner.token,
            &json!({"role": "billing_admin"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut waits = vec![until_status(&app, &org, &member.token, StatusCode::FORBIDDEN).await];
    // Removed: not found, like any other organization.
    let res = app.delete(&format!("/api/v1/orgs/{}/members/{}", org.id, member.id), &org.owner.token).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    waits.push(until_status(&app, &org, &member.token, StatusCode::NOT_FOUND).await);
    // A revoked key: unauthorized.
    let res = app.delete(&format!("/api/v1/orgs/{}/api-keys/{key_id}", org.id), &org.owner.token).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    waits.push(until_status(&app, &org, &key, StatusCode::UNAUTHORIZED).await);
    // A suspended organization: refused for everyone.
    let res = app
        .request(
            Method::POST,
            &format!("/api/v1/admin/organizations/{}/suspend", org.id),
            Some(&ops.token),
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    waits.push(until_status(&app, &org, &org.owner.token, StatusCode::FORBIDDEN).await);
    let slowest = waits.iter().max().unwrap();
    assert!(*slowest < Duration::from_secs(1), "invalidation took {slowest:?}");
}
