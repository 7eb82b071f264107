//! Payment webhooks: signatures, exactly-once processing, ordering, tenant routing, and events
//! nobody can route.

use std::collections::BTreeMap;

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use tenantry::webhooks::sign_hex;

use crate::helpers::{TestApp, assert_problem};

async fn app() -> TestApp {
    TestApp::spawn_with(|s| {
        s.billing.stripe_webhook_secrets = vec!["whsec_old".to_owned().into(), "whsec_new".to_owned().into()];
        s.billing.razorpay_webhook_secrets = vec!["rzp_secret".to_owned().into()];
    })
    .await
}

fn stripe_header(secret: &str, timestamp: i64, body: &str) -> String {
    format!("t={timestamp},v1={}", sign_hex(secret, format!("{timestamp}.{body}").as_bytes()))
}

async fn send_stripe(app: &TestApp, body: &str, signature: Option<String>) -> reqwest::Response {
    let mut request = app
        .http
        .post(format!("{}/api/v1/webhooks/stripe", app.address))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(signature) = signature {
        request = request.header("Stripe-Signature", signature);
    }
    request.send().await.unwrap()
}

async fn deliver(app: &TestApp, event: &Value) -> String {
    let body = event.to_string();
    let res =
        send_stripe(app, &body, Some(stripe_header("whsec_new", chrono::Utc::now().timestamp(), &body)))
            .await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json::<Value>().await.unwrap()["status"].as_str().unwrap().to_owned()
}

fn invoice_paid(id: &str, org: Uuid, invoice: Uuid, amount: i64) -> Value {
    json!({"id": id, "type": "invoice.paid", "created": chrono::Utc::now().timestamp(),
           "data": {"object": {"id": "in_1", "amount_paid": amount, "currency": "usd", "subscription": "sub_1",
                               "metadata": {"organization_id": org, "invoice_id": invoice}}}})
}

fn subscription_event(id: &str, org: Uuid, status: &str, created: i64) -> Value {
    json!({"id": id, "type": "customer.subscription.updated", "created": created,
           "data": {"object": {"id": "sub_1", "status": status, "metadata": {"organization_id": org}}}})
}

#[tokio::test]
async fn bad_signatures_are_refused_and_change_nothing_while_a_rotated_secret_still_verifies() {
    let app = app().await;
    let org = app.org_with_owner("acme").await;
    let invoice = app.subscription(&org).await;
    let body = invoice_paid("evt_sig", org.id, invoice, 4900).to_string();
    let now = chrono::Utc::now().timestamp();

    let forged = format!("t={now},v1={}", "ab".repeat(32));
    let cases = [
        (Some(forged), StatusCode::UNAUTHORIZED, "invalid_signature"),
        (Some(stripe_header("whsec_wrong", now, &body)), StatusCode::UNAUTHORIZED, "invalid_signature"),
        (Some(stripe_header("whsec_new", now - 400, &body)), StatusCode::UNAUTHORIZED, "invalid_signature"),
        (
            Some(stripe_header("whsec_new", now, &body.replace("4900", "1"))),
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
        ),
        (None, StatusCode::BAD_REQUEST, "missing_signature"),
        (Some("v1=nonsense".into()), StatusCode::BAD_REQUEST, "malformed_signature"),
    ];
    for (signature, status, code) in cases {
        assert_problem(send_stripe(&app, &body, signature).await, status, code).await;
    }
    // Razorpay: the body's HMAC, and an event id.
    let rzp_body = json!({"event": "payment.captured"}).to_string();
    let razorpay = |signature: &str, event_id: Option<&str>| {
        let mut request = app
            .http
            .post(format!("{}/api/v1/webhooks/razorpay", app.address))
            .header("content-type", "application/json")
            .header("X-Razorpay-Signature", signature.to_owned())
            .body(rzp_body.clone());
        if let Some(id) = event_id {
            request = request.header("X-Razorpay-Event-Id", id);
        }
        request.send()
    };
    let res = razorpay(&sign_hex("rzp_wrong", rzp_body.as_bytes()), Some("evt_r")).await.unwrap();
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_signature").await;
    assert_eq!(app.raw_count("select count(*) from webhook_events", &[]).await, 0, "nothing was recorded");
    assert_eq!(app.raw_count("select count(*) from invoices where status = 'paid'", &[]).await, 0);

    // The secret being retired still verifies during the rotation.
    let res = send_stripe(&app, &body, Some(stripe_header("whsec_old", now, &body))).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "processed");
    // A signed event we do not act on is acknowledged and not kept; no event id header is needed.
    let res = razorpay(&sign_hex("rzp_secret", rzp_body.as_bytes()), None).await.unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ignored");
}

#[tokio::test]
async fn the_same_payment_delivered_fifty_times_at_once_posts_once() {
    let app = app().await;
    let org = app.org_with_owner("acme").await;
    let invoice = app.subscription(&org).await;
    let body = invoice_paid("evt_once", org.id, invoice, 4900).to_string();
    let signature = stripe_header("whsec_new", chrono::Utc::now().timestamp(), &body);
    let deliveries = (0..50).map(|_| send_stripe(&app, &body, Some(signature.clone())));
    let responses = futures_util::future::join_all(deliveries).await;
    let mut outcomes = BTreeMap::<String, usize>::new();
    for res in responses {
        assert_eq!(res.status(), StatusCode::OK);
        *outcomes
            .entry(res.json::<Value>().await.unwrap()["status"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(outcomes, BTreeMap::from([("duplicate".into(), 49), ("processed".into(), 1)]));
    let payments = app
        .raw_count("select count(*) from journal_transactions where organization_id = $1 and source = 'stripe:evt_once'", &[&org.id])
        .await;
    assert_eq!(payments, 1);
    assert_eq!(
        app.raw_count("select count(*) from journal_entries where organization_id = $1", &[&org.id]).await,
        4
    );
    assert_eq!(
        app.balances(&org).await,
        BTreeMap::from([("cash".into(), 4900), ("receivable".into(), 0), ("revenue".into(), -4900)])
    );
    let inv: Value = app
        .get(&format!("/api/v1/orgs/{}/invoices/{invoice}", org.id), &org.owner.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!((inv["status"].as_str(), inv["amount_paid_minor"].as_i64()), (Some("paid"), Some(4900)));
    assert_eq!(app.subscription_status(&org).await, "active");
    // A later, different payment event for the paid invoice posts nothing more.
    assert_eq!(deliver(&app, &invoice_paid("evt_twice", org.id, invoice, 4900)).await, "ignored");
    assert_eq!(
        app.raw_count("select count(*) from journal_entries where organization_id = $1", &[&org.id]).await,
        4
    );
}

#[tokio::test]
async fn out_of_order_events_never_move_the_subscription_back() {
    let app = app().await;
    let org = app.org_with_owner("acme").await;
    let invoice = app.subscription(&org).await;
    deliver(&app, &invoice_paid("evt_pay", org.id, invoice, 4900)).await;
    assert_eq!(app.subscription_status(&org).await, "active");
    let t = chrono::Utc::now().timestamp();
    // The newer event (past_due at t+20) arrives before the older one (active at t+10).
    assert_eq!(deliver(&app, &subscription_event("evt_b", org.id, "past_due", t + 20)).await, "processed");
    assert_eq!(deliver(&app, &subscription_event("evt_a", org.id, "active", t + 10)).await, "ignored");
    assert_eq!(app.subscription_status(&org).await, "past_due");
    assert_eq!(deliver(&app, &subscription_event("evt_c", org.id, "unpaid", t + 30)).await, "processed");
    assert_eq!(deliver(&app, &subscription_event("evt_d", org.id, "active", t + 40)).await, "processed");
    assert_eq!(app.subscription_status(&org).await, "active");
    // Not a legal move (active -> trialing): ignored, whatever its time.
    assert_eq!(deliver(&app, &subscription_event("evt_e", org.id, "trialing", t + 50)).await, "ignored");
    assert_eq!(app.subscription_status(&org).await, "active");
}

#[tokio::test]
async fn an_event_for_one_organization_never_touches_another_and_unroutable_events_are_kept() {
    let app = app().await;
    let a = app.org_with_owner("org-a").await;
    let b = app.org_with_owner("org-b").await;
    app.subscription(&a).await;
    let b_invoice = app.subscription(&b).await;
    let b_before = app.balances(&b).await;

    // A's event naming B's invoice: the invoice decides whose event it is, and the metadata
    // disagrees, so nothing is applied anywhere.
    assert_eq!(deliver(&app, &invoice_paid("evt_cross", a.id, b_invoice, 4900)).await, "unroutable");
    assert_eq!(app.balances(&b).await, b_before);
    assert_eq!(app.subscription_status(&b).await, "incomplete");
    // An unknown organization in the metadata, or an invoice that is nobody's: kept too.
    assert_eq!(deliver(&app, &invoice_paid("evt_lost", Uuid::new_v4(), b_invoice, 4900)).await, "unroutable");
    assert_eq!(deliver(&app, &invoice_paid("evt_nobody", b.id, Uuid::new_v4(), 4900)).await, "unroutable");
    assert_eq!(
        app.raw_count("select count(*) from journal_transactions where source like 'stripe:%'", &[]).await,
        0
    );
    assert_eq!(
        app.raw_count("select count(*) from webhook_events where status = 'unroutable'", &[]).await,
        3
    );

    let ops = app.user("ops@platform.test").await;
    let res = app.get("/api/v1/admin/webhook-events", &ops.token).await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    app.rls_bypassing_admin
        .execute("insert into platform_admins (user_id) values ($1)", &[&ops.id])
        .await
        .unwrap();
    let listed: Value = app.get("/api/v1/admin/webhook-events", &ops.token).await.json().await.unwrap();
    let ids: Vec<&str> =
        listed["items"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.contains(&"evt_cross") && ids.contains(&"evt_lost") && ids.contains(&"evt_nobody"));
    // Paged, one at a time, in the same order both ways: none left out.
    let mut paged = Vec::new();
    let mut url = "/api/v1/admin/webhook-events?limit=1".to_owned();
    loop {
        let page: Value = app.get(&url, &ops.token).await.json().await.unwrap();
        paged.extend(
            page["items"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => url = format!("/api/v1/admin/webhook-events?limit=1&cursor={cursor}"),
            None => {
                let back = page["prev_cursor"].as_str().unwrap();
                let before: Value = app
                    .get(&format!("/api/v1/admin/webhook-events?limit=1&cursor={back}"), &ops.token)
                    .await
                    .json()
                    .await
                    .unwrap();
                assert_eq!(before["items"][0]["event_id"].as_str().unwrap(), paged[1]);
                break;
            }
        }
    }
    assert_eq!(paged, ids);

    // An event without metadata is routed by the invoice it pays: B's.
    let mut orphan = invoice_paid("evt_orphan", b.id, b_invoice, 4900);
    orphan["data"]["object"]["metadata"] = json!({"invoice_id": b_invoice});
    assert_eq!(deliver(&app, &orphan).await, "processed");
    assert_eq!(app.subscription_status(&b).await, "active");
    assert_eq!(app.balances(&b).await["cash"], 4900);
    assert!(!app.balances(&a).await.contains_key("cash"), "A received nothing");
    // B's own event for the same invoice posts nothing more.
    assert_eq!(deliver(&app, &invoice_paid("evt_b_pays", b.id, b_invoice, 4900)).await, "ignored");
}

/// Subscription events are applied only to the subscription whose provider reference they name
/// (linked by the first payment, or given at subscribing), never by their metadata alone.
#[tokio::test]
async fn a_subscription_event_moves_only_the_subscription_it_names() {
    let app = app().await;
    let a = app.org_with_owner("org-a").await;
    let b = app.org_with_owner("org-b").await;
    let a_invoice = app.subscription(&a).await;
    app.subscription(&b).await;
    let t = chrono::Utc::now().timestamp();
    // Before A's payment links `sub_1`, nobody's subscription carries it.
    assert_eq!(deliver(&app, &subscription_event("evt_early", a.id, "active", t)).await, "unroutable");
    deliver(&app, &invoice_paid("evt_pay", a.id, a_invoice, 4900)).await;
    // Metadata naming B with A's reference: refused; B stays incomplete (and so on free limits).
    assert_eq!(deliver(&app, &subscription_event("evt_b", b.id, "past_due", t + 5)).await, "unroutable");
    assert_eq!(app.subscription_status(&b).await, "incomplete");
    assert_eq!(deliver(&app, &subscription_event("evt_a", a.id, "past_due", t + 5)).await, "processed");
    assert_eq!(app.subscription_status(&a).await, "past_due");
    let mut other = subscription_event("evt_other", a.id, "unpaid", t + 9);
    other["data"]["object"]["id"] = json!("sub_somebody_else");
    assert_eq!(deliver(&app, &other).await, "unroutable");
    assert_eq!(app.subscription_status(&a).await, "past_due");
}

#[tokio::test]
async fn a_razorpay_payment_pays_its_invoice_once() {
    let app = app().await;
    let org = app.org_with_owner("acme").await;
    let invoice = app.subscription(&org).await;
    let body =
        json!({"entity": "event", "event": "payment.captured", "created_at": chrono::Utc::now().timestamp(),
        "payload": {"payment": {"entity": {"id": "pay_1", "amount": 4900, "currency": "USD",
                    "notes": {"organization_id": org.id, "invoice_id": invoice}}}}})
        .to_string();
    let send = || {
        app.http
            .post(format!("{}/api/v1/webhooks/razorpay", app.address))
            .header("content-type", "application/json")
            .header("X-Razorpay-Signature", sign_hex("rzp_secret", body.as_bytes()))
            .header("X-Razorpay-Event-Id", "evt_rzp_1")
            .body(body.clone())
            .send()
    };
    for expected in ["processed", "duplicate"] {
        let res = send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.json::<Value>().await.unwrap()["status"], expected);
    }
    // The captured signed body replayed under a new (unsigned) event id is the same event.
    let replay = app
        .http
        .post(format!("{}/api/v1/webhooks/razorpay", app.address))
        .header("content-type", "application/json")
        .header("X-Razorpay-Signature", sign_hex("rzp_secret", body.as_bytes()))
        .header("X-Razorpay-Event-Id", "evt_rzp_fresh")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(replay.json::<Value>().await.unwrap()["status"], "duplicate");
    assert_eq!(
        app.raw_count("select count(*) from journal_transactions where source like 'razorpay:%'", &[]).await,
        1,
        "paid once"
    );
    assert_eq!(app.subscription_status(&org).await, "active");
    assert_eq!(
        app.balances(&org).await,
        BTreeMap::from([("cash".into(), 4900), ("receivable".into(), 0), ("revenue".into(), -4900)])
    );
}
