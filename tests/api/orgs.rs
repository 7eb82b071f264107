use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem};

#[tokio::test]
async fn creating_an_organization_makes_the_caller_its_owner() {
    let app = TestApp::spawn_with(|s| s.region = tenantry::domain::Region::Eu).await;
    let alice = app.user("alice@example.test").await;

    let res = app
        .post("/api/v1/orgs", &alice.token, &json!({"name": "  Acme  ", "slug": "acme", "region": "eu"}))
        .await;

    assert_eq!(res.status(), StatusCode::CREATED);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["name"], "Acme");
    assert_eq!(body["slug"], "acme");
    assert_eq!(body["region"], "eu");
    assert_eq!(body["data_mode"], "metadata_only");
    assert_eq!(body["role"], "owner");
    let id: uuid::Uuid = body["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(location, format!("/api/v1/orgs/{id}"));
    let owners = app
        .raw_count(
            "select count(*) from memberships where organization_id = $1 and user_id = $2 and role = 'owner'",
            &[&id, &alice.id],
        )
        .await;
    assert_eq!(owners, 1);
}

#[tokio::test]
async fn a_taken_slug_is_a_conflict_and_creates_nothing() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let bob = app.user("bob@example.test").await;

    let res = app.post("/api/v1/orgs", &bob.token, &json!({"name": "Other", "slug": "acme"})).await;

    assert_problem(res, StatusCode::CONFLICT, "slug_taken").await;
    assert_eq!(app.raw_count("select count(*) from organizations", &[]).await, 1);
    assert_eq!(app.raw_count("select count(*) from memberships where user_id = $1", &[&bob.id]).await, 0);
    let _ = org;
}

#[tokio::test]
async fn invalid_fields_are_named_and_nothing_is_created() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@example.test").await;

    let res = app.post("/api/v1/orgs", &alice.token, &json!({"name": "", "slug": "Not A Slug"})).await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let fields: Vec<&str> =
        body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, vec!["name", "slug"]);

    let res =
        app.post("/api/v1/orgs", &alice.token, &json!({"name": "A", "slug": "a", "region": "mars"})).await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "region");

    assert_eq!(app.raw_count("select count(*) from organizations", &[]).await, 0);
}

#[tokio::test]
async fn the_list_shows_only_the_callers_organizations_with_cursor_pages() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@example.test").await;
    for slug in ["one", "two", "three"] {
        let res = app.post("/api/v1/orgs", &alice.token, &json!({"name": slug, "slug": slug})).await;
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    app.org_with_owner("someone-else").await;

    let first: Value = app.get("/api/v1/orgs?limit=2", &alice.token).await.json().await.unwrap();
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().expect("a second page").to_owned();
    let second: Value =
        app.get(&format!("/api/v1/orgs?limit=2&cursor={cursor}"), &alice.token).await.json().await.unwrap();
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert!(second["next_cursor"].is_null());
    let mut slugs: Vec<String> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
        .map(|o| o["slug"].as_str().unwrap().to_owned())
        .collect();
    slugs.sort();
    assert_eq!(slugs, vec!["one", "three", "two"]);

    let res = app.get("/api/v1/orgs?limit=500", &alice.token).await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "limit");
    let res = app.get("/api/v1/orgs?cursor=bogus", &alice.token).await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "cursor");
}

#[tokio::test]
async fn admins_update_the_organization_and_members_get_403_naming_the_permission() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let admin = app.member(&org, "admin@acme.test", "admin").await;
    let member = app.member(&org, "member@acme.test", "editor").await;
    let path = format!("/api/v1/orgs/{}", org.id);

    let res = app.patch(&path, &member.token, &json!({"name": "Hijacked"})).await;
    let body = assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(body["permission"], "org:update");
    assert_eq!(app.raw_count("select count(*) from organizations where name = 'Hijacked'", &[]).await, 0);

    let res = app.patch(&path, &admin.token, &json!({"name": "Acme Two", "data_mode": "full"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["name"], "Acme Two");
    assert_eq!(body["data_mode"], "full");
    assert_eq!(body["role"], "admin");
    assert_eq!(
        app.raw_count("select count(*) from organizations where id = $1 and data_mode = 'full'", &[&org.id])
            .await,
        1
    );

    let res = app.patch(&path, &admin.token, &json!({})).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let res = app.patch(&path, &admin.token, &json!({"region": "eu"})).await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "region", "region is not updatable here");
}

#[tokio::test]
async fn only_an_owner_deletes_an_organization_and_everything_in_it_goes() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let admin = app.member(&org, "admin@acme.test", "admin").await;
    app.workspace(&org, "Production").await;
    let path = format!("/api/v1/orgs/{}", org.id);

    let body =
        assert_problem(app.delete(&path, &admin.token).await, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(body["permission"], "org:delete");
    assert_eq!(app.raw_count("select count(*) from organizations", &[]).await, 1);

    assert!(app.raw_count("select count(*) from events", &[]).await > 0);
    let res = app.delete(&path, &org.owner.token).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    for table in ["organizations", "memberships", "workspaces", "events"] {
        let sql = format!("select count(*) from {table}");
        assert_eq!(app.raw_count(&sql, &[]).await, 0, "{table} emptied");
    }
    assert_problem(app.get(&path, &org.owner.token).await, StatusCode::NOT_FOUND, "not_found").await;
}
