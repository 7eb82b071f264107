//! HTTP semantics (RFC 9110): 405 with `Allow` for a path that exists under another method,
//! HEAD for every GET, and compression by `Accept-Encoding` for bodies worth it.

use std::io::Read as _;

use reqwest::{Method, StatusCode, header};
use uuid::Uuid;

use crate::helpers::{TestApp, assert_problem};

fn allow_of(res: &reqwest::Response) -> Vec<String> {
    let mut methods: Vec<String> =
        res.headers()[header::ALLOW].to_str().unwrap().split(',').map(|m| m.trim().to_owned()).collect();
    methods.sort();
    methods
}

#[tokio::test]
async fn a_wrong_method_is_405_with_allow_alike_for_every_tenant_and_an_unknown_path_stays_404() {
    let app = TestApp::spawn().await;
    let a = app.org_with_owner("org-a").await;
    let b = app.org_with_owner("org-b").await;
    let mut bodies = Vec::new();
    for (org, token) in [(a.id, &a.owner.token), (b.id, &a.owner.token), (Uuid::new_v4(), &a.owner.token)] {
        let res = app.request(Method::PUT, &format!("/api/v1/orgs/{org}"), Some(token), None).await;
        assert_eq!(allow_of(&res), ["DELETE", "GET", "HEAD", "PATCH"]);
        let mut body = assert_problem(res, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
        body.as_object_mut().unwrap().remove("request_id");
        bodies.push(body);
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "own, another tenant's and a random id alike: {bodies:?}"
    );
    // Without a credential too (the route table is the public OpenAPI document).
    let res = app.request(Method::DELETE, "/api/v1/orgs", None, None).await;
    assert_eq!(allow_of(&res), ["GET", "HEAD", "POST"]);
    assert_problem(res, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    // A path that is no route is still 404, whatever the method.
    for method in [Method::GET, Method::PUT] {
        let res = app.request(method, "/api/v1/nothing/here", Some(&a.owner.token), None).await;
        assert!(!res.headers().contains_key(header::ALLOW));
        assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    }
    // Nothing was changed by the refused methods.
    assert_eq!(app.raw_count("select count(*) from organizations", &[]).await, 2);
}

#[tokio::test]
async fn head_answers_like_get_without_a_body() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let other = app.org_with_owner("other").await;
    let path = format!("/api/v1/orgs/{}/workspaces", org.id);
    app.workspace(&org, "Production").await;
    let get = app.get(&path, &org.owner.token).await;
    assert_eq!(get.status(), StatusCode::OK);
    let length = get.headers()[header::CONTENT_LENGTH].clone();
    let content_type = get.headers()[header::CONTENT_TYPE].clone();
    assert!(!get.bytes().await.unwrap().is_empty());
    let head = app.request(Method::HEAD, &path, Some(&org.owner.token), None).await;
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()[header::CONTENT_LENGTH], length, "the length GET would send");
    assert_eq!(head.headers()[header::CONTENT_TYPE], content_type);
    assert!(head.headers().contains_key("ratelimit"), "through the same middleware as GET");
    assert!(head.bytes().await.unwrap().is_empty(), "and no body");
    // Another tenant's list: the same 404 as for GET.
    let res = app
        .request(Method::HEAD, &format!("/api/v1/orgs/{}/workspaces", other.id), Some(&org.owner.token), None)
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    // A route without GET has no HEAD either.
    let res = app.request(Method::HEAD, "/api/v1/auth/token", None, None).await;
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(allow_of(&res), ["POST"]);
}

#[tokio::test]
async fn large_bodies_are_compressed_as_the_client_prefers_and_tiny_ones_are_not() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    for i in 0..20 {
        app.workspace(&org, &format!("Workspace number {i}")).await;
    }
    let path = format!("{}/api/v1/orgs/{}/workspaces?limit=20", app.address, org.id);
    let fetch = |encoding: &'static str| {
        app.http.get(&path).bearer_auth(&org.owner.token).header(header::ACCEPT_ENCODING, encoding).send()
    };
    let plain = fetch("identity").await.unwrap();
    assert!(!plain.headers().contains_key(header::CONTENT_ENCODING));
    let plain = plain.bytes().await.unwrap();
    assert!(plain.len() >= 1024, "a page worth compressing: {} bytes", plain.len());

    let gzip = fetch("gzip").await.unwrap();
    assert_eq!(gzip.headers()[header::CONTENT_ENCODING], "gzip");
    let vary: Vec<String> = gzip
        .headers()
        .get_all(header::VARY)
        .iter()
        .map(|v| v.to_str().unwrap().to_ascii_lowercase())
        .collect();
    assert!(vary.iter().any(|v| v.contains("accept-encoding")), "{vary:?}");
    let compressed = gzip.bytes().await.unwrap();
    assert!(compressed.len() < plain.len());
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&compressed[..]).read_to_end(&mut decoded).unwrap();
    assert_eq!(decoded, plain);

    // The client's preference decides: brotli when it ranks first.
    let br = fetch("gzip;q=0.5, br").await.unwrap();
    assert_eq!(br.headers()[header::CONTENT_ENCODING], "br");
    let compressed = br.bytes().await.unwrap();
    let mut decoded = Vec::new();
    brotli_decompressor::Decompressor::new(&compressed[..], 4096).read_to_end(&mut decoded).unwrap();
    assert_eq!(decoded, plain);

    // A tiny body goes as it is.
    let res = app
        .http
        .get(format!("{}/api/v1/health", app.address))
        .header(header::ACCEPT_ENCODING, "gzip, br")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(!res.headers().contains_key(header::CONTENT_ENCODING));
    assert_eq!(res.json::<serde_json::Value>().await.unwrap()["status"], "ok");
}

/// A PATCH body is an RFC 7396 merge patch: absent leaves a field, `null` removes it (a role's
/// description) or is refused where the field cannot be removed, a value replaces it.
#[tokio::test]
async fn patch_bodies_are_merge_patches_where_null_removes() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let res = app
        .post(
            &format!("/api/v1/orgs/{}/roles", org.id),
            &org.owner.token,
            &serde_json::json!({"name": "auditor", "description": "Reads the audit log", "permissions": ["workspaces:read"]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let role: serde_json::Value = res.json().await.unwrap();
    let path = format!("{}/api/v1/orgs/{}/roles/{}", app.address, org.id, role["id"].as_str().unwrap());
    let patch = |body: &'static str, content_type: &'static str| {
        app.http
            .patch(&path)
            .bearer_auth(&org.owner.token)
            .header(header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
    };
    let res = patch(r#"{"description": null}"#, "application/merge-patch+json").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let updated: serde_json::Value = res.json().await.unwrap();
    assert_eq!(updated["description"], "", "null cleared it");
    assert_eq!(
        (&updated["name"], &updated["permissions"]),
        (&role["name"], &role["permissions"]),
        "absent: kept"
    );
    // A field that cannot be removed: 422 naming it, and nothing changes.
    for (body, field) in
        [(r#"{"name": null}"#, "name"), (r#"{"permissions": null, "description": "x"}"#, "permissions")]
    {
        let res = patch(body, "application/merge-patch+json").await.unwrap();
        let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let stored = app
        .rls_bypassing_admin
        .query_one(
            "select name, description from roles where id = $1",
            &[&role["id"].as_str().unwrap().parse::<Uuid>().unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(
        (stored.get::<_, String>(0), stored.get::<_, String>(1)),
        ("auditor".to_owned(), String::new())
    );
    // The same semantics as plain JSON, and for the organization's own fields.
    let res = app
        .http
        .patch(format!("{}/api/v1/orgs/{}", app.address, org.id))
        .bearer_auth(&org.owner.token)
        .json(&serde_json::json!({"slug": null}))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "slug");
    assert_eq!(app.raw_count("select count(*) from organizations where slug = 'acme'", &[]).await, 1);
}
