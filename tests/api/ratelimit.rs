//! Rate limits: per principal, and per organization at its plan's rate, with 429, Retry-After
//! and the RateLimit headers; strangers never spend an organization's budget; instances sharing a
//! Redis share the budgets, and fall back to their own when it goes away.

use reqwest::StatusCode;
use tenantry::domain::OrgId;
use tenantry::http::ratelimit::RateLimits;
use uuid::Uuid;

use crate::helpers::{TestApp, assert_problem};
use crate::services::Redis;

#[tokio::test]
async fn a_principal_over_its_rate_gets_429_with_retry_after() {
    let app = TestApp::spawn_with(|s| s.rate_limits.per_principal_per_minute = 5).await;
    let org = app.org_with_owner("acme").await; // spends part of the owner's budget
    let path = format!("/api/v1/orgs/{}/workspaces", org.id);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let res = app.get(&path, &org.owner.token).await;
        statuses.push(res.status().as_u16());
        if res.status() == StatusCode::OK {
            assert!(
                res.headers()["ratelimit-policy"].to_str().unwrap().starts_with("\"principal\";q=5;w=60")
            );
            assert!(res.headers()["ratelimit"].to_str().unwrap().contains(";r="));
        } else {
            let retry: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=13).contains(&retry), "retry after {retry}");
            assert_eq!(res.headers()["ratelimit"].to_str().unwrap(), format!("\"principal\";r=0;t={retry}"));
            let body = assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
            assert!(body["detail"].as_str().unwrap().contains("principal"));
        }
    }
    // Some allowed, then refused from the first refusal on (5 a minute, setup included).
    let first_refusal = statuses.iter().position(|s| *s == 429).expect("a refusal");
    assert!(first_refusal >= 1, "{statuses:?}");
    assert!(statuses[first_refusal..].iter().all(|s| *s == 429), "{statuses:?}");
    // Another principal has its own budget.
    let other = app.user("other@example.test").await;
    assert_eq!(app.get("/api/v1/orgs", &other.token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_organization_is_limited_at_its_plans_rate_and_strangers_never_spend_it() {
    let app = TestApp::spawn().await;
    // The free plan allows 4 requests a minute per organization, for this test.
    app.rls_bypassing_admin
        .execute(
            "update plans set limits = jsonb_set(limits, '{requests_per_minute}', '4') where id = 'free'",
            &[],
        )
        .await
        .unwrap();
    let a = app.org_with_owner("org-a").await;
    let alice = app.member(&a, "alice@org-a.test", "viewer").await;
    let b = app.org_with_owner("org-b").await;
    let path = format!("/api/v1/orgs/{}/workspaces", a.id);
    // A stranger hammering A's organization: refused by the database, and charged nothing there.
    for _ in 0..10 {
        assert_eq!(app.get(&path, &b.owner.token).await.status(), StatusCode::NOT_FOUND);
    }
    // A's members share A's budget once the database has admitted them (their first request).
    let mut statuses = Vec::new();
    for token in [
        &a.owner.token,
        &alice.token,
        &a.owner.token,
        &alice.token,
        &a.owner.token,
        &alice.token,
        &alice.token,
    ] {
        statuses.push(app.get(&path, token).await.status().as_u16());
        tokio::time::sleep(std::time::Duration::from_millis(30)).await; // the plan's rate lookup lands
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(statuses.iter().filter(|s| **s == 200).count() <= 6, "{statuses:?}");
    let res = app.get(&path, &alice.token).await;
    let body = assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert!(body["detail"].as_str().unwrap().contains("organization"));
    // B is untouched by A's limit.
    assert_eq!(
        app.get(&format!("/api/v1/orgs/{}/workspaces", b.id), &b.owner.token).await.status(),
        StatusCode::OK
    );
}

/// Two instances sharing one Redis: a budget is the same however requests are spread.
fn shared_limits(redis: &Redis, per_principal: u32) -> impl Fn(&mut tenantry::config::Settings) + Clone {
    let url = redis.url();
    move |s| {
        s.rate_limits.per_principal_per_minute = per_principal;
        s.rate_limits.redis_url = Some(url.clone().into());
    }
}

#[tokio::test]
async fn two_instances_sharing_redis_share_a_principals_budget() {
    let redis = Redis::start();
    let a = TestApp::spawn_with(shared_limits(&redis, 6)).await;
    let b = a.sibling(shared_limits(&redis, 6)).await;
    let user = a.user("alice@example.test").await; // 1 of the 6
    let mut statuses = Vec::new();
    for i in 0..10 {
        let app = if i % 2 == 0 { &b } else { &a };
        statuses.push(app.get("/api/v1/orgs", &user.token).await.status().as_u16());
    }
    // Alone, each instance would have allowed all of its 5 (6 a minute each).
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429, 429, 429], "{statuses:?}");
    let res = a.get("/api/v1/orgs", &user.token).await;
    assert!(res.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // The bucket lives in Redis, under the principal's id, and expires on its own.
    let mut redis_conn = redis.connection().await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("tenantry:rl:p:{}", user.id))
        .query_async(&mut redis_conn)
        .await
        .unwrap();
    assert!((1..=61_000).contains(&ttl), "ttl {ttl} ms");
    // Another principal is unaffected.
    let other = a.user("bob@example.test").await;
    assert_eq!(a.get("/api/v1/orgs", &other.token).await.status(), StatusCode::OK);
}

/// The same over TLS (`rediss://`, the tests' CA, a client certificate), as managed Redis with
/// in-transit encryption; with a CA that did not sign the server's certificate nothing is shared.
#[tokio::test]
async fn instances_share_budgets_over_rediss_and_a_wrong_ca_shares_nothing() {
    let (_redis, port) = Redis::start_tls();
    let tls = std::env::var("TEST_TLS_DIR").unwrap();
    let over_tls = |ca: &str| {
        let (url, ca, tls) = (format!("rediss://localhost:{port}/0"), format!("{tls}/{ca}"), tls.clone());
        move |s: &mut tenantry::config::Settings| {
            s.rate_limits.per_principal_per_minute = 4;
            s.rate_limits.redis_url = Some(url.clone().into());
            s.rate_limits.redis_ca_file = Some(ca.clone().into());
            s.rate_limits.redis_client_cert_file = Some(format!("{tls}/client.crt").into());
            s.rate_limits.redis_client_key_file = Some(format!("{tls}/client.key").into());
        }
    };
    let a = TestApp::spawn_with(over_tls("ca.crt")).await;
    let b = a.sibling(over_tls("ca.crt")).await;
    let user = a.user("alice@example.test").await; // 1 of the 4
    let mut statuses = Vec::new();
    for i in 0..6 {
        let app = if i % 2 == 0 { &b } else { &a };
        statuses.push(app.get("/api/v1/orgs", &user.token).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429], "{statuses:?}");

    // Trusting the wrong CA, an instance cannot reach Redis and limits on its own: Alice,
    // refused by the two that share, is served there.
    let c = a.sibling(over_tls("other-ca.crt")).await;
    assert_eq!(c.get("/api/v1/orgs", &user.token).await.status(), StatusCode::OK);
    assert_eq!(a.get("/api/v1/orgs", &user.token).await.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn an_organizations_budget_is_shared_and_a_refusal_charges_nothing() {
    let redis = Redis::start();
    let app = TestApp::spawn().await;
    app.rls_bypassing_admin
        .execute(
            "update plans set limits = jsonb_set(limits, '{requests_per_minute}', '3') where id = 'free'",
            &[],
        )
        .await
        .unwrap();
    let acme = app.org_with_owner("acme").await;
    let org = OrgId(acme.id);
    let bob_member = app.member(&acme, "bob@acme.test", "viewer").await;
    let settings = |url: String| tenantry::config::RateLimitSettings {
        per_principal_per_minute: 100,
        redis_url: Some(url.into()),
        ..Default::default()
    };
    // Two instances' limiters, each learning the organization's plan rate (3 a minute).
    let one = RateLimits::new(&settings(redis.url())).unwrap();
    let two = RateLimits::new(&settings(redis.url())).unwrap();
    let metrics = tenantry::http::metrics::Metrics::new(&tenantry::metrics::pool_wait_histogram());
    // The rate is read as a principal the database admitted: two real members.
    let (alice, bob) = (acme.owner.id, bob_member.id);
    one.admitted(alice, tenantry::db::Actor::user(tenantry::domain::UserId(alice)), org, &app.state.db);
    two.admitted(bob, tenantry::db::Actor::user(tenantry::domain::UserId(bob)), org, &app.state.db);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await; // the rate lookups land
    let d = one.check(alice, Some(org), &metrics).await.unwrap();
    assert_eq!((d.policy, d.remaining), ("organization", 2));
    assert_eq!(two.check(bob, Some(org), &metrics).await.unwrap().remaining, 1);
    assert_eq!(one.check(alice, Some(org), &metrics).await.unwrap().remaining, 0);
    let refused = two.check(bob, Some(org), &metrics).await.unwrap_err();
    assert_eq!((refused.policy, refused.limit), ("organization", 3));
    assert!((1..=20).contains(&refused.reset_secs), "{refused:?}");
    // Outside the organization Bob's own bucket is untouched by the refusal: 1 charge of 100.
    let mine = two.check(bob, None, &metrics).await.unwrap();
    assert_eq!((mine.policy, mine.remaining), ("principal", 98));
}

#[tokio::test]
async fn when_redis_goes_away_each_instance_limits_on_its_own() {
    let mut redis = Redis::start();
    let app = TestApp::spawn_with(|s| {
        shared_limits(&redis, 3)(s);
        s.metrics_token = Some("metrics-token".to_owned().into());
    })
    .await;
    let user = app.user("alice@example.test").await;
    assert_eq!(app.get("/api/v1/orgs", &user.token).await.status(), StatusCode::OK);
    redis.kill();
    // Served, and limited by the instance's own (fresh) buckets: 3 a minute.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(app.get("/api/v1/orgs", &user.token).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    let metrics =
        app.http.get(format!("{}/metrics", app.address)).bearer_auth("metrics-token").send().await.unwrap();
    let text = metrics.text().await.unwrap();
    let errors = text
        .lines()
        .find_map(|l| l.strip_prefix("tenantry_rate_limit_backend_errors_total "))
        .expect("the backend error counter");
    assert!(errors.parse::<u64>().unwrap() >= 1, "{errors}");
}

/// Strangers cost nothing past their address's budget: requests whose credential is absent or
/// unknown (each would cost a lookup or a signature check) are limited per client address, and a
/// caller whose credential was verified before is not charged at all.
#[tokio::test]
async fn unauthenticated_work_is_limited_per_client_address() {
    let app = TestApp::spawn_with(|s| {
        s.rate_limits.unauthenticated_per_minute = 5;
        let mut github = tenantry::config::ProviderSettings::new(
            "github",
            tenantry::config::ProviderKind::Github,
            "client",
            "http://127.0.0.1/api/v1/auth/github/callback",
        );
        github.base_url = Some("http://127.0.0.1:9".into());
        s.auth.providers = vec![github];
    })
    .await;
    let owner = app.user("owner@flood.test").await; // one charge: a new token
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let res = app.http.get(format!("{}/api/v1/auth/github/login", app.address)).send().await.unwrap();
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses.iter().filter(|s| **s == 303).count(), 4, "{statuses:?}");
    let refused = app.http.get(format!("{}/api/v1/auth/github/login", app.address)).send().await.unwrap();
    assert_eq!(refused.headers()["ratelimit-policy"].to_str().unwrap(), "\"address\";q=5;w=60");
    assert_problem(refused, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert_eq!(app.raw_count("select count(*) from login_attempts", &[]).await, 4, "no row past the budget");
    // Guessed API keys (valid checksums) and refresh tokens: no lookup past the budget either.
    let lookups = app.state.auth.api_key_lookups();
    let guess = {
        let body = format!("tnty_{}{}", Uuid::new_v4().simple(), "ab".repeat(32));
        format!("{body}{:08x}", crc32fast::hash(body.as_bytes()))
    };
    let res = app.get("/api/v1/me", &guess).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(app.state.auth.api_key_lookups(), lookups, "refused before the lookup");
    // A token verified before costs nothing: the owner is still served.
    assert_eq!(app.get("/api/v1/me", &owner.token).await.status(), StatusCode::OK);
    // Another client (as reported by a trusted proxy) has its own budget; see the next test.
}

/// Behind a trusted proxy, the client is the address it reports (for the per-address limit and
/// the audit log); from anyone else, forwarded headers are ignored.
#[tokio::test]
async fn a_trusted_proxy_reports_the_client_address() {
    let app = TestApp::spawn_with(|s| {
        s.rate_limits.unauthenticated_per_minute = 2;
        s.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let from = |client: &'static str| {
        app.http
            .get(format!("{}/api/v1/auth/providers", app.address))
            .header("x-forwarded-for", client)
            .send()
    };
    for client in ["198.51.100.1", "198.51.100.1", "198.51.100.2", "198.51.100.2"] {
        assert_eq!(from(client).await.unwrap().status(), StatusCode::OK, "{client}: within its own budget");
    }
    assert_eq!(from("198.51.100.1").await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
    let org = app.org_with_owner("proxied").await;
    let res = app
        .http
        .post(format!("{}/api/v1/orgs/{}/workspaces", app.address, org.id))
        .bearer_auth(&org.owner.token)
        .header("x-forwarded-for", "203.0.113.50")
        .json(&serde_json::json!({"name": "W"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let recorded = app
        .raw_count(
            "select count(*) from audit_events where action = 'workspace.create' and ip = '203.0.113.50'",
            &[],
        )
        .await;
    assert_eq!(recorded, 1, "the audit log records the client, not the proxy");
}

/// From a peer that is not a trusted proxy, `X-Forwarded-For` and `Forwarded` are ignored: a
/// caller can neither escape its address's budget by rotating them nor write them into the audit
/// log.
#[tokio::test]
async fn forwarded_headers_from_an_untrusted_peer_are_ignored() {
    let app = TestApp::spawn_with(|s| {
        s.rate_limits.unauthenticated_per_minute = 3;
        s.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()]; // the balancer, not the test
    })
    .await;
    let org = app.org_with_owner("spoofed").await; // its first-seen token: 1 of the 3
    let mut statuses = Vec::new();
    for i in 0..4 {
        let res = app
            .http
            .get(format!("{}/api/v1/auth/providers", app.address))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .header("forwarded", format!("for=198.51.100.{}", i + 100))
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 429, 429], "one budget however the headers rotate");
    let res = app
        .http
        .post(format!("{}/api/v1/orgs/{}/workspaces", app.address, org.id))
        .bearer_auth(&org.owner.token)
        .header("x-forwarded-for", "203.0.113.66")
        .header("forwarded", "for=203.0.113.67")
        .json(&serde_json::json!({"name": "W"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let ip = app
        .rls_bypassing_admin
        .query_one("select host(ip) from audit_events where action = 'workspace.create'", &[])
        .await
        .unwrap()
        .get::<_, String>(0);
    assert_eq!(ip, "127.0.0.1", "the audit log records the peer, not what it claims");
}

/// A paid plan's rate needs a subscription in good standing: an `incomplete` one (first invoice
/// unpaid) is limited at the free plan's rate until the payment arrives.
#[tokio::test]
async fn an_unpaid_subscription_gets_the_free_plans_rate() {
    let app = TestApp::spawn_with(|s| {
        s.billing.stripe_webhook_secrets = vec!["whsec_rate".to_owned().into()];
    })
    .await;
    app.rls_bypassing_admin
        .execute(
            "update plans set limits = jsonb_set(limits, '{requests_per_minute}', '7') where id = 'free'",
            &[],
        )
        .await
        .unwrap();
    app.rls_bypassing_admin
        .execute(
            "update plans set limits = jsonb_set(limits, '{requests_per_minute}', '70') where id = 'pro'",
            &[],
        )
        .await
        .unwrap();
    let acme = app.org_with_owner("unpaid").await;
    let invoice = app.subscription(&acme).await;
    assert_eq!(app.subscription_status(&acme).await, "incomplete");
    let org = OrgId(acme.id);
    let rate = |expected: u32| {
        let app = &app;
        let owner = acme.owner.id;
        async move {
            let limits = RateLimits::new(&Default::default()).unwrap();
            limits.admitted(
                owner,
                tenantry::db::Actor::user(tenantry::domain::UserId(owner)),
                org,
                &app.state.db,
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await; // the rate lookup lands
            let metrics = tenantry::http::metrics::Metrics::new(&tenantry::metrics::pool_wait_histogram());
            let d = limits.check(owner, Some(org), &metrics).await.unwrap();
            assert_eq!((d.policy, d.limit), ("organization", expected));
        }
    };
    rate(7).await;
    // The first invoice is paid: the plan's rate applies.
    let body = serde_json::json!({"id": "evt_rate", "type": "invoice.paid", "created": chrono::Utc::now().timestamp(),
        "data": {"object": {"amount_paid": 4900, "currency": "usd", "metadata": {"invoice_id": invoice}}}})
    .to_string();
    let t = chrono::Utc::now().timestamp();
    let signature =
        format!("t={t},v1={}", tenantry::webhooks::sign_hex("whsec_rate", format!("{t}.{body}").as_bytes()));
    let res = app
        .http
        .post(format!("{}/api/v1/webhooks/stripe", app.address))
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(app.subscription_status(&acme).await, "active");
    rate(70).await;
}
