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
