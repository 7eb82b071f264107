use serde_json::Value;

use crate::helpers::TestApp;

#[test]
fn the_committed_openapi_document_matches_the_handlers() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
        .expect("openapi/openapi.json is committed");
    let generated = tenantry::api::openapi_json();
    assert!(
        committed == generated,
        "openapi/openapi.json is stale: run `make openapi` and commit the result"
    );
}

#[test]
fn every_operation_is_named_documented_and_secured() {
    let doc: Value = serde_json::from_str(&tenantry::api::openapi_json()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let mut ids = std::collections::HashSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id =
                op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
            assert!(
                [
                    "list_",
                    "get_",
                    "create_",
                    "update_",
                    "delete_",
                    "add_",
                    "remove_",
                    "refresh_",
                    "sign_",
                    "suspend_",
                    "rotate_",
                    "retry_",
                    "test_",
                    "archive_",
                    "start_",
                    "put_",
                    "evaluate_",
                    "receive_",
                    "cancel_",
                    "reactivate_",
                    "accept_",
                    "verify_",
                    "health",
                    "ready"
                ]
                .iter()
                .any(|p| id.starts_with(p)),
                "{id} is not <verb>_<resource>"
            );
            let responses = op["responses"].as_object().unwrap();
            // The only operations without a bearer token: health, token refresh, the public keys,
            // the sign-in flow, the plans on offer and the payment webhooks (signed by the provider).
            const PUBLIC: &[&str] = &[
                "health",
                "ready",
                "get_jwks",
                "refresh_session",
                "list_providers",
                "sign_in_start",
                "sign_in_callback",
                "list_plans",
                "receive_stripe_webhook",
                "receive_razorpay_webhook",
            ];
            if PUBLIC.contains(&id) {
                assert_eq!(op["security"], serde_json::json!([{}]), "{id} is public");
                continue;
            }
            assert_eq!(op["security"][0]["bearer"], serde_json::json!([]), "{id} declares bearer security");
            assert!(responses.contains_key("401"), "{id} documents 401");
            if path.contains("{org_id}") {
                assert!(responses.contains_key("404"), "{id} documents 404");
                assert_eq!(
                    responses["404"]["content"]["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/Problem"
                );
            }
        }
    }
}

#[tokio::test]
async fn the_server_serves_the_same_document_and_swagger_ui() {
    let app = TestApp::spawn().await;
    let served = app.served_openapi().await;
    let generated: Value = serde_json::from_str(&tenantry::api::openapi_json()).unwrap();
    assert_eq!(served, generated);

    let res = app.http.get(format!("{}/swagger-ui", app.address)).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 308);
    assert_eq!(res.headers()["location"], "/swagger-ui/");
    let res = app.http.get(format!("{}/swagger-ui/", app.address)).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.text().await.unwrap().contains("swagger-ui"));
}

/// The contract a client generator reads: every operation and parameter described, the headers
/// and problem statuses any operation can answer, API keys as a scheme, pages by reference.
#[test]
fn every_operation_is_described_with_its_headers_statuses_and_schemes() {
    let doc: Value = serde_json::from_str(&tenantry::api::openapi_json()).unwrap();
    assert_eq!(doc["components"]["securitySchemes"]["api_key"]["scheme"], "bearer");
    for name in ["X-Request-Id", "RateLimit", "Retry-After", "Location", "ETag", "Idempotent-Replayed"] {
        assert!(doc["components"]["headers"][name]["description"].is_string(), "header {name}");
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for (name, schema) in schemas.iter().filter(|(n, _)| n.starts_with("Page_")) {
        let item = &name["Page_".len()..];
        assert_eq!(
            schema["properties"]["items"]["items"]["$ref"],
            format!("#/components/schemas/{item}"),
            "{name}"
        );
        assert!(schema["properties"]["prev_cursor"].is_object(), "{name} pages both ways");
    }
    let mut api_key_ops = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap();
            let description = op["description"].as_str().unwrap_or_default();
            assert!(description.len() > 20, "{id} has a description: {description:?}");
            for p in op["parameters"].as_array().into_iter().flatten() {
                let text = p["description"].as_str().unwrap_or_default();
                assert!(!text.is_empty(), "{id}: parameter {} is described", p["name"]);
            }
            let responses = op["responses"].as_object().unwrap();
            for status in ["429", "503"] {
                assert!(responses.contains_key(status), "{id} documents {status}");
            }
            assert!(responses["429"]["headers"]["Retry-After"].is_object(), "{id}: 429 says when to retry");
            for (status, response) in responses {
                assert!(response["headers"]["X-Request-Id"].is_object(), "{id} {status}: X-Request-Id");
                if status == "201" || status == "202" {
                    assert!(response["headers"]["Location"].is_object(), "{id} {status}: Location");
                }
            }
            if op["requestBody"].is_object() {
                for status in ["400", "413", "422"] {
                    assert!(responses.contains_key(status), "{id} has a body: documents {status}");
                }
            }
            if path.contains("/orgs/{org_id}") {
                assert!(responses.contains_key("421"), "{id}: another region's organization");
                if method != "get" {
                    let takes_key = op["parameters"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|p| p["name"] == "Idempotency-Key");
                    assert!(takes_key, "{id}: a write in an organization takes an Idempotency-Key");
                }
            }
            let schemes: Vec<&str> = op["security"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|s| s.as_object().unwrap().keys().map(String::as_str))
                .collect();
            if schemes.contains(&"api_key") {
                api_key_ops += 1;
                assert!(!tenantry::api::contract::USER_ONLY.contains(&id), "{id} needs a person");
            }
        }
    }
    assert!(api_key_ops > 40, "API keys work on most organization operations ({api_key_ops})");
    let groups: Vec<&str> =
        doc["x-tagGroups"].as_array().unwrap().iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(groups, ["Customer API", "Platform administration", "Payment provider receivers"]);
    for receiver in ["/api/v1/webhooks/stripe", "/api/v1/webhooks/razorpay"] {
        assert_eq!(doc["paths"][receiver]["post"]["tags"], serde_json::json!(["payment_webhooks"]));
    }
}

/// What the document says about API keys is what the server does: an operation it lists for
/// API keys never answers an API key `user_required`, and one it keeps for people always does.
#[tokio::test]
async fn api_keys_work_where_the_document_says_and_nowhere_else() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    let catalogue: Value = app.get("/api/v1/permissions", &org.owner.token).await.json().await.unwrap();
    let all_scopes: Vec<String> = catalogue["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .filter(|name| name != "platform:admin")
        .collect();
    let scopes: Vec<&str> = all_scopes.iter().map(String::as_str).collect();
    let (_, key) = app.api_key(&org, &scopes).await;
    let doc = app.served_openapi().await;
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let Some(op) = item.get("get") else { continue };
        if !path.contains("{org_id}") {
            continue;
        }
        let documented = op["security"].as_array().unwrap().iter().any(|s| s.get("api_key").is_some());
        let concrete = path
            .replace("{org_id}", &org.id.to_string())
            .split('/')
            .map(|seg| if seg.starts_with('{') { uuid::Uuid::now_v7().to_string() } else { seg.to_owned() })
            .collect::<Vec<_>>()
            .join("/");
        let res = app.get(&concrete, &key).await;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or_default();
        let refused = body["code"] == "user_required";
        assert_eq!(
            documented, !refused,
            "{path}: documented for API keys {documented}, answered {status} {body}"
        );
        assert_ne!(status.as_u16(), 401, "{path}: the key authenticates");
        checked += 1;
    }
    assert!(checked > 15, "{checked} operations checked");
    for (path, body) in [
        (format!("/api/v1/orgs/{}/roles", org.id), serde_json::json!({"name": "r", "permissions": []})),
        (
            format!("/api/v1/orgs/{}/api-keys", org.id),
            serde_json::json!({"name": "k", "scopes": ["org:read"]}),
        ),
    ] {
        let res = app.post(&path, &key, &body).await;
        crate::helpers::assert_problem(res, reqwest::StatusCode::FORBIDDEN, "user_required").await;
    }
}
