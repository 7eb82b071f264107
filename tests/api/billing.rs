//! Billing: plans, subscriptions, invoices and the double-entry ledger.

use std::collections::BTreeMap;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use tenantry::billing::{self, PaymentOutcome};
use tenantry::db::{Actor, Db, TenantTx};
use tenantry::domain::{OrgId, UserId};

use crate::helpers::{TestApp, TestOrg, app_url, assert_problem, connect, set_context};

async fn subscribe(app: &TestApp, org: &TestOrg, plan: &str) -> reqwest::Response {
    app.request(
        Method::PUT,
        &format!("/api/v1/orgs/{}/subscription", org.id),
        Some(&org.owner.token),
        Some(&json!({"plan_id": plan, "provider": "stripe"})),
    )
    .await
}

async fn invoices(app: &TestApp, org: &TestOrg) -> Vec<Value> {
    let body: Value =
        app.get(&format!("/api/v1/orgs/{}/invoices", org.id), &org.owner.token).await.json().await.unwrap();
    body["items"].as_array().unwrap().clone()
}

fn db(app: &TestApp) -> Db {
    app.app_db(2)
}

#[tokio::test]
async fn plans_are_public_and_priced_in_minor_units() {
    let app = TestApp::spawn().await;
    let plans = app.public_json("/api/v1/plans").await;
    let ids: Vec<&str> = plans.as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["free", "pro", "enterprise"]);
    assert_eq!(plans[1]["price_minor"], 4900);
    assert_eq!(plans[1]["currency"], "USD");
    assert_eq!(plans[1]["limits"]["seats"], 25);
}

#[tokio::test]
async fn subscribing_issues_an_invoice_and_the_ledger_follows_every_change() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let res = app.get(&format!("/api/v1/orgs/{}/subscription", org.id), &org.owner.token).await;
    assert_problem(res, StatusCode::GONE, "no_subscription").await;

    // Pro: incomplete until paid, one open invoice, receivable against revenue.
    let res = subscribe(&app, &org, "pro").await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let sub: Value = res.json().await.unwrap();
    assert_eq!((sub["plan_id"].as_str(), sub["status"].as_str()), (Some("pro"), Some("incomplete")));
    let invoice_id = sub["invoice_id"].as_str().unwrap().to_owned();
    let res = app.get(&format!("/api/v1/orgs/{}/invoices/{invoice_id}", org.id), &org.owner.token).await;
    let invoice: Value = res.json().await.unwrap();
    assert_eq!((invoice["number"].as_i64(), invoice["status"].as_str()), (Some(1), Some("open")));
    assert_eq!((invoice["total_minor"].as_i64(), invoice["currency"].as_str()), (Some(4900), Some("USD")));
    assert_eq!(invoice["lines"][0]["amount_minor"], 4900);
    assert!(invoice["lines"][0]["description"].as_str().unwrap().starts_with("Pro plan"));
    assert_eq!(
        app.balances(&org).await,
        BTreeMap::from([("receivable".into(), 4900), ("revenue".into(), -4900)])
    );

    // The same plan again: nothing happens.
    let res = subscribe(&app, &org, "pro").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(invoices(&app, &org).await.len(), 1);

    // Enterprise: the Pro invoice is voided (and reversed), a new one issued.
    let res = subscribe(&app, &org, "enterprise").await;
    assert_eq!(res.status(), StatusCode::OK);
    let list = invoices(&app, &org).await;
    let statuses: Vec<(i64, &str)> =
        list.iter().map(|i| (i["number"].as_i64().unwrap(), i["status"].as_str().unwrap())).collect();
    assert_eq!(statuses, vec![(1, "void"), (2, "open")]);
    assert_eq!(
        app.balances(&org).await,
        BTreeMap::from([("receivable".into(), 250_000), ("revenue".into(), -250_000)])
    );

    // The journal: issue, void, issue; each transaction balances.
    let journal: Value = app
        .get(&format!("/api/v1/orgs/{}/ledger/journal", org.id), &org.owner.token)
        .await
        .json()
        .await
        .unwrap();
    let items = journal["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    for t in items {
        let sum: i64 =
            t["entries"].as_array().unwrap().iter().map(|e| e["amount_minor"].as_i64().unwrap()).sum();
        assert_eq!(sum, 0, "{t}");
    }

    // Cancel: the open invoice is voided; the ledger nets to zero.
    let res = app.delete(&format!("/api/v1/orgs/{}/subscription", org.id), &org.owner.token).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "canceled");
    assert_eq!(app.balances(&org).await, BTreeMap::from([("receivable".into(), 0), ("revenue".into(), 0)]));
    let res = app.delete(&format!("/api/v1/orgs/{}/subscription", org.id), &org.owner.token).await;
    assert_problem(res, StatusCode::CONFLICT, "subscription_state").await;

    // Subscribing again starts a new subscription; Free needs no invoice and is active at once.
    let res = subscribe(&app, &org, "free").await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let again: Value = res.json().await.unwrap();
    assert_eq!(again["status"], "active");
    assert_ne!(again["id"], sub["id"]);
    assert_eq!(invoices(&app, &org).await.len(), 2);

    let res = subscribe(&app, &org, "platinum").await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "plan_id");
    let audited = app
        .raw_count(
            "select count(*) from audit_events where organization_id = $1 and action like 'subscription.%'",
            &[&org.id],
        )
        .await;
    assert_eq!(audited, 4);
}

#[tokio::test]
async fn a_payment_posts_once_marks_the_invoice_paid_and_activates_the_subscription() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let sub: Value = subscribe(&app, &org, "pro").await.json().await.unwrap();
    let invoice: Uuid = sub["invoice_id"].as_str().unwrap().parse().unwrap();
    let db = db(&app);
    let actor = Actor::user(UserId(org.owner.id));
    for expected in [PaymentOutcome::Applied { invoice_paid: true }, PaymentOutcome::Duplicate] {
        let (mut tx, _) = TenantTx::begin_org(&db, actor, OrgId(org.id)).await.unwrap();
        let outcome = billing::record_payment(&mut tx, OrgId(org.id), invoice, 4900, "USD", "test:payment-1")
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(outcome, expected);
    }
    let (mut tx, _) = TenantTx::begin_org(&db, actor, OrgId(org.id)).await.unwrap();
    let other_currency =
        billing::record_payment(&mut tx, OrgId(org.id), invoice, 4900, "EUR", "test:payment-2").await;
    assert_eq!(other_currency.unwrap(), PaymentOutcome::NoInvoice);
    drop(tx);

    let got: Value = app
        .get(&format!("/api/v1/orgs/{}/subscription", org.id), &org.owner.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["status"], "active");
    let list = invoices(&app, &org).await;
    assert_eq!(
        (list[0]["status"].as_str(), list[0]["amount_paid_minor"].as_i64()),
        (Some("paid"), Some(4900))
    );
    assert_eq!(
        app.balances(&org).await,
        BTreeMap::from([("cash".into(), 4900), ("receivable".into(), 0), ("revenue".into(), -4900)])
    );
    // A paid invoice is final: cancelling leaves it (and its ledger) alone.
    let res = app.delete(&format!("/api/v1/orgs/{}/subscription", org.id), &org.owner.token).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(invoices(&app, &org).await[0]["status"], "paid");
}

#[tokio::test]
async fn the_database_refuses_an_unbalanced_or_altered_ledger_even_from_the_app_role() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    subscribe(&app, &org, "pro").await;
    let account: Uuid = app
        .rls_bypassing_admin
        .query_one("select id from ledger_accounts where code = 'receivable'", &[])
        .await
        .unwrap()
        .get(0);
    let client = connect(&app_url(&app.database)).await;
    let unbalanced = async {
        client.batch_execute("begin").await.unwrap();
        set_context(&client, org.owner.id, org.id).await;
        let txn = Uuid::new_v4();
        client
            .execute(
                "insert into journal_transactions (organization_id, id, description, source) values ($1, $2, 'forged', 'forged')",
                &[&org.id, &txn],
            )
            .await
            .unwrap();
        for amount in [1000i64, -999] {
            client
                .execute(
                    "insert into journal_entries (organization_id, transaction_id, line_no, account_id, amount_minor, currency) \
                     values ($1, $2, (select coalesce(max(line_no), 0) + 1 from journal_entries where transaction_id = $2), $3, $4, 'USD')",
                    &[&org.id, &txn, &account, &amount],
                )
                .await
                .unwrap();
        }
        client.batch_execute("commit").await
    }
    .await;
    let err = unbalanced.expect_err("an unbalanced transaction was committed");
    assert_eq!(err.code().map(|c| c.code()), Some("TY042"), "{err}");

    // A single entry: refused as well.
    client.batch_execute("begin").await.unwrap();
    set_context(&client, org.owner.id, org.id).await;
    let txn = Uuid::new_v4();
    client
        .execute(
            "insert into journal_transactions (organization_id, id, description, source) values ($1, $2, 'lonely', 'lonely')",
            &[&org.id, &txn],
        )
        .await
        .unwrap();
    let err = client.batch_execute("commit").await.expect_err("a transaction without entries was committed");
    assert_eq!(err.code().map(|c| c.code()), Some("TY042"));

    // Posted entries never change, not even for a superuser.
    for sql in [
        "update journal_entries set amount_minor = 1",
        "delete from journal_entries",
        "delete from journal_transactions",
    ] {
        let err = app.rls_bypassing_admin.execute(sql, &[]).await.expect_err(sql);
        assert_eq!(err.code().map(|c| c.code()), Some("TY043"), "{sql}");
    }
    assert_eq!(app.raw_count("select count(*) from journal_transactions", &[]).await, 1);
    assert_eq!(app.raw_count("select count(*) from journal_entries", &[]).await, 2);
}
