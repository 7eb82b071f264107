//! Queryable lists: typed filters, a sort from each list's allowlist, cursors both ways that stay
//! exact under the sort, `count=exact` capped at 10,000, and nothing silently truncated.

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, TestOrg, assert_problem};

/// Every page of `path` (which already has its query), following `next_cursor`.
async fn all_pages(app: &TestApp, path: &str, token: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut url = path.to_owned();
    for _ in 0..100 {
        let res = app.get(&url, token).await;
        assert_eq!(res.status(), StatusCode::OK, "{url}");
        let page: Value = res.json().await.unwrap();
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => url = format!("{path}&cursor={cursor}"),
            None => return items,
        }
    }
    panic!("more than 100 pages");
}

fn names(items: &[Value]) -> Vec<String> {
    items.iter().map(|i| i["name"].as_str().unwrap().to_owned()).collect()
}

async fn workspaces(app: &TestApp, org: &TestOrg, names: &[&str]) {
    for name in names {
        app.workspace(org, name).await;
    }
}

#[tokio::test]
async fn a_list_pages_both_ways_under_each_sort_and_never_shows_another_tenant() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let other = app.org_with_owner("other").await;
    workspaces(&app, &org, &["delta", "Alpha", "charlie", "Echo", "bravo"]).await;
    workspaces(&app, &other, &["aardvark", "zebra"]).await;
    let base = format!("/api/v1/orgs/{}/workspaces", org.id);
    let token = &org.owner.token;

    // Creation order both ways, and by name both ways (the database's collation).
    let created = names(&all_pages(&app, &format!("{base}?limit=2&sort=created_at"), token).await);
    assert_eq!(created, ["delta", "Alpha", "charlie", "Echo", "bravo"]);
    let newest = names(&all_pages(&app, &format!("{base}?limit=2&sort=-created_at"), token).await);
    assert_eq!(newest, ["bravo", "Echo", "charlie", "Alpha", "delta"]);
    let by_name = names(&all_pages(&app, &format!("{base}?limit=2&sort=name"), token).await);
    let mut expected = by_name.clone();
    expected.sort_by_key(|n| n.to_lowercase());
    assert_eq!(by_name.len(), 5);
    let by_name_desc = names(&all_pages(&app, &format!("{base}?limit=2&sort=-name"), token).await);
    assert_eq!(by_name_desc, by_name.iter().rev().cloned().collect::<Vec<_>>());

    // Forward to the last page, then back again with prev_cursor: the same pages.
    let first: Value = app.get(&format!("{base}?limit=2&sort=name"), token).await.json().await.unwrap();
    assert!(first["prev_cursor"].is_null(), "the first page has nothing before it");
    let cursor = first["next_cursor"].as_str().unwrap();
    let second: Value =
        app.get(&format!("{base}?limit=2&sort=name&cursor={cursor}"), token).await.json().await.unwrap();
    let back = second["prev_cursor"].as_str().unwrap();
    let again: Value =
        app.get(&format!("{base}?limit=2&sort=name&cursor={back}"), token).await.json().await.unwrap();
    assert_eq!(names(again["items"].as_array().unwrap()), names(first["items"].as_array().unwrap()));
    assert!(again["prev_cursor"].is_null());
    assert_eq!(again["next_cursor"], first["next_cursor"]);

    // A row added before the cursor does not shift the next page (keyset, not offset).
    app.workspace(&org, "Able").await;
    let third: Value =
        app.get(&format!("{base}?limit=2&sort=name&cursor={cursor}"), token).await.json().await.unwrap();
    assert_eq!(third["items"], second["items"]);

    // Another tenant's rows never appear, under any sort; a count counts only ours.
    for sort in ["created_at", "-created_at", "name", "-name"] {
        let all = names(&all_pages(&app, &format!("{base}?limit=3&sort={sort}"), token).await);
        assert_eq!(all.len(), 6, "{sort}");
        assert!(!all.iter().any(|n| n == "aardvark" || n == "zebra"), "{sort}: {all:?}");
    }
    let counted: Value = app.get(&format!("{base}?count=exact&limit=1"), token).await.json().await.unwrap();
    assert_eq!((counted["total"].as_i64(), counted["total_capped"].as_bool()), (Some(6), Some(false)));
    let uncounted: Value = app.get(&base, token).await.json().await.unwrap();
    assert!(uncounted.get("total").is_none(), "no count unless asked: {uncounted}");
    // Another tenant's list, whatever the query: the same 404.
    let res = app.get(&format!("/api/v1/orgs/{}/workspaces?sort=name&count=exact", other.id), token).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn filters_are_typed_and_hostile_values_are_refused_or_inert() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    workspaces(&app, &org, &["Prod EU", "prod-us", "50% off", "500 club", "staging"]).await;
    let base = format!("/api/v1/orgs/{}/workspaces", org.id);
    let token = &org.owner.token;

    let got = names(&all_pages(&app, &format!("{base}?name_prefix=PROD&sort=name"), token).await);
    assert_eq!(got, ["Prod EU", "prod-us"], "case-insensitive prefix");
    // The pattern's own wildcards are literal: "50%" is not "50 anything".
    let got = names(&all_pages(&app, &format!("{base}?name_prefix=50%25&sort=name"), token).await);
    assert_eq!(got, ["50% off"]);
    let got = names(&all_pages(&app, &format!("{base}?name_prefix=_&sort=name"), token).await);
    assert!(got.is_empty(), "_ matches only an underscore: {got:?}");
    let got = names(
        &all_pages(&app, &format!("{base}?name_prefix=%27%3B%20drop%20table%20workspaces%3B--"), token).await,
    );
    assert!(got.is_empty());
    assert_eq!(app.raw_count("select count(*) from workspaces", &[]).await, 5);

    // Unknown sorts, foreign cursors, bad limits: a 422 naming the parameter.
    let res = app.get(&format!("{base}?sort=secret_column"), token).await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "sort", "{body}");
    assert!(
        body["errors"][0]["message"].as_str().unwrap().contains("-created_at"),
        "lists the allowed: {body}"
    );
    let page: Value = app.get(&format!("{base}?limit=1&sort=name"), token).await.json().await.unwrap();
    let name_cursor = page["next_cursor"].as_str().unwrap();
    let res = app.get(&format!("{base}?limit=1&sort=created_at&cursor={name_cursor}"), token).await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "cursor");
    let res = app.get(&format!("{base}?cursor={}", "A".repeat(5000)), token).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let res = app.get(&format!("{base}?count=approximately"), token).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let res = app.get(&format!("{base}?name_prefix={}", "x".repeat(201)), token).await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "name_prefix");

    // Members by role and e-mail; API keys by state; invitations by state.
    app.member(&org, "Viewer.One@example.com", "viewer").await;
    app.member(&org, "editor@example.com", "editor").await;
    let members = format!("/api/v1/orgs/{}/members", org.id);
    let viewers = all_pages(&app, &format!("{members}?role=viewer&sort=-created_at"), token).await;
    assert_eq!(viewers.len(), 1);
    assert_eq!(viewers[0]["email"].as_str().unwrap().to_lowercase(), "viewer.one@example.com");
    let found =
        all_pages(&app, &format!("{members}?email=VIEWER.ONE@example.com&sort=created_at"), token).await;
    assert_eq!(found.len(), 1);
    let res = app.get(&format!("{members}?role=emperor"), token).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let newest_first = all_pages(&app, &format!("{members}?sort=-created_at&limit=1"), token).await;
    assert_eq!(newest_first.len(), 3);
    assert_eq!(newest_first[0]["email"], "editor@example.com");
    assert_eq!(newest_first[2]["user_id"], org.owner.id.to_string(), "the owner joined first");

    let (revoked, _) = app.api_key(&org, &["workspaces:read"]).await;
    app.api_key(&org, &["workspaces:read"]).await;
    let res = app.delete(&format!("/api/v1/orgs/{}/api-keys/{revoked}", org.id), token).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let keys = format!("/api/v1/orgs/{}/api-keys", org.id);
    let active = all_pages(&app, &format!("{keys}?state=active"), token).await;
    let gone = all_pages(&app, &format!("{keys}?state=revoked"), token).await;
    assert_eq!((active.len(), gone.len()), (1, 1));
    assert_eq!(gone[0]["id"], revoked.to_string());
}

#[tokio::test]
async fn the_newest_audit_events_are_the_first_page_and_counts_are_capped() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    workspaces(&app, &org, &["one", "two", "three"]).await;
    let token = &org.owner.token;
    let audit = format!("/api/v1/orgs/{}/audit-events", org.id);
    let newest: Value =
        app.get(&format!("{audit}?sort=-created_at&limit=2&count=exact"), token).await.json().await.unwrap();
    let seqs: Vec<i64> =
        newest["items"].as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    let max = app.raw_count("select max(seq) from audit_events where organization_id = $1", &[&org.id]).await;
    assert_eq!(seqs, [max, max - 1], "newest first");
    assert_eq!(newest["total"].as_i64(), Some(max));
    let all: Vec<i64> = all_pages(&app, &format!("{audit}?sort=-created_at&limit=2"), token)
        .await
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(all, (1..=max).rev().collect::<Vec<_>>(), "every entry once, newest first");
    let creates = all_pages(&app, &format!("{audit}?action=workspace.create&sort=-created_at"), token).await;
    assert_eq!(creates.len(), 3);

    // Over the cap: the total says so instead of counting for ever.
    app.rls_bypassing_admin
        .execute(
            "insert into workspaces (organization_id, id, name) \
             select $1, gen_random_uuid(), 'bulk-' || n from generate_series(1, 10005) n",
            &[&org.id],
        )
        .await
        .unwrap();
    let page: Value = app
        .get(&format!("/api/v1/orgs/{}/workspaces?count=exact&limit=1&name_prefix=bulk", org.id), token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!((page["total"].as_i64(), page["total_capped"].as_bool()), (Some(10_000), Some(true)));
}

#[tokio::test]
async fn no_list_is_silently_cut_short() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let workspace = app.workspace(&org, "Production").await;
    let workflow = app.workflow(&org, workspace).await;
    let token = &org.owner.token;
    let base = format!("/api/v1/orgs/{}/workspaces/{workspace}/workflows/{workflow}", org.id);
    for _ in 0..4 {
        let res = app.request(reqwest::Method::POST, &format!("{base}/publish"), Some(token), None).await;
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    let versions: Vec<i64> = all_pages(&app, &format!("{base}/versions?limit=2&sort=-version"), token)
        .await
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [5, 4, 3, 2, 1]);
    // A missing workflow is a 404, not an empty page.
    let res = app
        .get(
            &format!("/api/v1/orgs/{}/workspaces/{workspace}/workflows/{}/versions", org.id, Uuid::now_v7()),
            token,
        )
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;

    // Workflows by state and name; runs newest first.
    let res = app
        .post(
            &format!("/api/v1/orgs/{}/workspaces/{workspace}/workflows", org.id),
            token,
            &json!({"name": "zz-archived", "definition": "steps:\n  - id: a\n    uses: http.get\n"}),
        )
        .await;
    let archived = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let res = app
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/orgs/{}/workspaces/{workspace}/workflows/{archived}/archive", org.id),
            Some(token),
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let workflows = format!("/api/v1/orgs/{}/workspaces/{workspace}/workflows", org.id);
    let active = names(&all_pages(&app, &format!("{workflows}?state=active&sort=-name"), token).await);
    let gone = names(&all_pages(&app, &format!("{workflows}?state=archived"), token).await);
    assert_eq!((active, gone), (vec!["fixture-wf".to_owned()], vec!["zz-archived".to_owned()]));
    let first = app.run(&org, workspace, workflow).await;
    let second = app.run(&org, workspace, workflow).await;
    let runs = all_pages(
        &app,
        &format!("/api/v1/orgs/{}/workspaces/{workspace}/runs?sort=-created_at&limit=1", org.id),
        token,
    )
    .await;
    let ids: Vec<&str> = runs.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [second.to_string(), first.to_string()]);
}

#[tokio::test]
async fn platform_admins_page_every_organization_by_name_and_state() {
    let app = TestApp::spawn().await;
    let beta = app.org_with_owner("beta").await;
    app.org_with_owner("alpha").await;
    app.org_with_owner("gamma").await;
    let ops = app.user("ops@platform.test").await;
    app.rls_bypassing_admin
        .execute("insert into platform_admins (user_id) values ($1)", &[&ops.id])
        .await
        .unwrap();
    let names_desc: Vec<String> =
        all_pages(&app, "/api/v1/admin/organizations?sort=-name&limit=1", &ops.token)
            .await
            .iter()
            .map(|o| o["slug"].as_str().unwrap().to_owned())
            .collect();
    assert_eq!(names_desc, ["gamma", "beta", "alpha"]);
    let res = app
        .request(
            reqwest::Method::POST,
            &format!("/api/v1/admin/organizations/{}/suspend", beta.id),
            Some(&ops.token),
            None,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let suspended = all_pages(&app, "/api/v1/admin/organizations?suspended=true", &ops.token).await;
    assert_eq!(suspended.len(), 1);
    assert_eq!(suspended[0]["id"], beta.id.to_string());
    // Not for anyone else, whatever the query.
    let res = app.get("/api/v1/admin/organizations?sort=name", &beta.owner.token).await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
}

async fn csv_get(app: &TestApp, path: &str, token: &str) -> reqwest::Response {
    app.http
        .get(format!("{}{path}", app.address))
        .bearer_auth(token)
        .header(reqwest::header::ACCEPT, "text/csv")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_audit_log_invoices_and_usage_come_as_csv_with_links_to_the_rest() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let other = app.org_with_owner("other").await;
    workspaces(&app, &org, &["one", "two", "=SUM(A1:A9)"]).await;
    let token = &org.owner.token;
    let audit = format!("/api/v1/orgs/{}/audit-events", org.id);

    let res = csv_get(&app, &format!("{audit}?limit=2&sort=-created_at"), token).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let link = res.headers()["link"].to_str().unwrap().to_owned();
    let body = res.text().await.unwrap();
    let lines: Vec<&str> = body.trim_end().split("\r\n").collect();
    assert!(lines[0].starts_with("seq,id,occurred_at,actor_type"), "{body}");
    assert_eq!(lines.len(), 3, "a header and two rows: {body}");
    assert!(link.contains("rel=\"next\"") && link.contains("sort=-created_at"), "{link}");
    // Following every Link yields every entry exactly once.
    let mut seqs: Vec<i64> =
        lines[1..].iter().map(|l| l.split(',').next().unwrap().parse().unwrap()).collect();
    let mut next = link;
    while let Some(url) =
        next.split(", ").find(|l| l.ends_with("rel=\"next\"")).map(|l| l[1..l.find('>').unwrap()].to_owned())
    {
        let res = csv_get(&app, &url, token).await;
        next = res.headers().get("link").map(|l| l.to_str().unwrap().to_owned()).unwrap_or_default();
        let body = res.text().await.unwrap();
        seqs.extend(
            body.trim_end()
                .split("\r\n")
                .skip(1)
                .map(|l| l.split(',').next().unwrap().parse::<i64>().unwrap()),
        );
    }
    let max = app.raw_count("select max(seq) from audit_events where organization_id = $1", &[&org.id]).await;
    assert_eq!(seqs, (1..=max).rev().collect::<Vec<_>>());
    // Larger pages than JSON allows, and still bounded.
    let res = csv_get(&app, &format!("{audit}?limit=5000"), token).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = csv_get(&app, &format!("{audit}?limit=10001"), token).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    // JSON stays the default, and q-values decide.
    let res = app.get(&audit, token).await;
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("application/json"));

    // Invoices and usage too; another tenant's are the usual 404, as a problem document.
    app.rls_bypassing_admin
        .execute("insert into plans (id, name, price_minor, currency, interval) values ('csvpro', 'Pro', 2900, 'USD', 'month') on conflict do nothing", &[])
        .await
        .unwrap();
    let res = app
        .request(
            reqwest::Method::PUT,
            &format!("/api/v1/orgs/{}/subscription", org.id),
            Some(token),
            Some(&json!({"plan_id": "csvpro"})),
        )
        .await;
    assert!(res.status().is_success(), "{}", res.status());
    let body = csv_get(&app, &format!("/api/v1/orgs/{}/invoices", org.id), token).await.text().await.unwrap();
    let lines: Vec<&str> = body.trim_end().split("\r\n").collect();
    assert_eq!(
        lines[0],
        "id,number,subscription_id,status,currency,total_minor,amount_paid_minor,period_start,period_end,issued_at,paid_at,voided_at"
    );
    assert_eq!(lines.len(), 2);
    assert!(lines[1].contains(",open,USD,2900,0,"), "{body}");
    let res = csv_get(&app, &format!("/api/v1/orgs/{}/usage", org.id), token).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().starts_with("day,api_key_id,requests\r\n"));
    let res = csv_get(&app, &format!("/api/v1/orgs/{}/audit-events", other.id), token).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
}
