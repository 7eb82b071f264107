//! Hostile input: every path segment and query parameter of every operation in the served
//! OpenAPI document, driven with values an attacker tries first (extreme dates and numbers,
//! huge, negative, malformed, percent-encoded). Whatever the value, the answer is a response
//! (never a dropped connection), never a 5xx, and every error is a problem document.

use futures_util::StreamExt as _;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::TestApp;

/// Raw (already percent-encoded where needed) values for one path segment or query value.
fn hostile_values() -> Vec<String> {
    let mut values: Vec<String> = [
        "-262143-01-01",
        "+262143-12-31",
        "262143-12-31",
        "0000-00-00",
        "1969-12-31",
        "9999-12-31T23:59:59Z",
        "-262143-01-01T00:00:00Z",
        "2026-13-45T99:99:99+99:99",
        "-1",
        "0",
        "1e308",
        "NaN",
        "9223372036854775807",
        "-9223372036854775808",
        "99999999999999999999999999999",
        "%00",
        "a%00b",
        "%FF%FE%FD",
        "%C0%AF",
        "..%2F..%2Fetc%2Fpasswd",
        "%2e%2e",
        "'%3B%20drop%20table%20users%3B--",
        "%7B%7D",
        "%5B%5D",
        "true",
        "null",
        "00000000-0000-0000-0000-000000000000",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        "%F0%9F%92%A3",
        "AAAA%3D%3D",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    values.push("9".repeat(2_000));
    values.push("x".repeat(4_000));
    values.push(Uuid::new_v4().to_string());
    values
}

struct Operation {
    method: Method,
    path: String,
    path_params: Vec<String>,
    query_params: Vec<String>,
}

fn operations(doc: &Value) -> Vec<Operation> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Ok(method) = method.to_uppercase().parse::<Method>() else { continue };
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let names = |place: &str| -> Vec<String> {
                params
                    .iter()
                    .filter(|p| p["in"] == place)
                    .map(|p| p["name"].as_str().unwrap().to_owned())
                    .collect()
            };
            out.push(Operation {
                method,
                path: path.clone(),
                path_params: names("path"),
                query_params: names("query"),
            });
        }
    }
    out
}

/// Fills the path template: `org_id` with `org`, every other parameter with a fresh id, and
/// `target` (if any) with the raw hostile value.
fn fill(op: &Operation, org: Uuid, target: Option<(&str, &str)>) -> String {
    let mut path = op.path.clone();
    for name in &op.path_params {
        let value = match target {
            Some((t, v)) if t == name => v.to_owned(),
            _ if name == "org_id" => org.to_string(),
            _ if name == "version" => "1".to_owned(),
            _ if name == "provider" => "openai".to_owned(),
            _ if name == "flag_key" => "some-flag".to_owned(),
            _ if name == "table" => "workspaces".to_owned(),
            _ => Uuid::new_v4().to_string(),
        };
        path = path.replace(&format!("{{{name}}}"), &value);
    }
    path
}

#[tokio::test]
async fn hostile_path_segments_and_query_values_never_cause_a_5xx_or_a_dropped_connection() {
    let app = TestApp::spawn_with(|s| s.rate_limits.enabled = false).await;
    let org = app.org_with_owner("hostile").await;
    let doc = app.served_openapi().await;
    let values = hostile_values();
    let mut cases = Vec::new();
    for op in operations(&doc) {
        // Writes run against an organization the caller is not in, so no hostile value can
        // change anything real; reads against the caller's own (every code path past admission).
        let org_for = |op: &Operation| if op.method == Method::GET { org.id } else { Uuid::new_v4() };
        for name in &op.path_params {
            for value in &values {
                cases.push((op.method.clone(), fill(&op, org_for(&op), Some((name, value)))));
            }
        }
        for name in &op.query_params {
            for value in &values {
                let base = fill(&op, org_for(&op), None);
                cases.push((op.method.clone(), format!("{base}?{name}={value}")));
            }
        }
    }
    assert!(cases.len() > 2_000, "the document drives enough cases: {}", cases.len());
    let total = cases.len();
    let failures: Vec<String> = futures_util::stream::iter(cases)
        .map(|(method, path)| {
            let app = &app;
            let token = org.owner.token.clone();
            async move {
                let mut req =
                    app.http.request(method.clone(), format!("{}{path}", app.address)).bearer_auth(token);
                if method != Method::GET && method != Method::DELETE {
                    req = req.json(&json!({}));
                }
                let shown = format!("{method} {}", path.chars().take(160).collect::<String>());
                match req.send().await {
                    Err(e) => Some(format!("{shown}: no response ({e})")),
                    Ok(res) if res.status().is_server_error() => Some(format!("{shown}: {}", res.status())),
                    Ok(res) if res.status().is_client_error() => {
                        let ct = res
                            .headers()
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        (ct.as_deref() != Some("application/problem+json"))
                            .then(|| format!("{shown}: {} with content-type {ct:?}", res.status()))
                    }
                    Ok(_) => None,
                }
            }
        })
        .buffer_unordered(8)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    assert!(failures.is_empty(), "{} of {total} cases failed:\n{}", failures.len(), failures.join("\n"));
    // The server is still there and still isolates.
    let res = app.get(&format!("/api/v1/orgs/{}", org.id), &org.owner.token).await;
    assert_eq!(res.status(), reqwest::StatusCode::OK);
}

/// The reviewed crash: a far-past `to` panicked in the date arithmetic and dropped the
/// connection. Now it is a 422 naming the field, for members and strangers alike.
#[tokio::test]
async fn an_extreme_usage_date_is_a_422_not_a_panic() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("usage-dates").await;
    let stranger = app.user("stranger@usage-dates.test").await;
    for token in [&org.owner.token, &stranger.token] {
        let res = app.get(&format!("/api/v1/orgs/{}/usage?to=-262143-01-01", org.id), token).await;
        let body = crate::helpers::assert_problem(
            res,
            reqwest::StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(body["errors"][0]["field"], "to");
    }
}

/// An alias bomb posted as a draft: refused at the node budget (a member), or never parsed at
/// all (a stranger gets the plain 404 before the YAML is looked at).
#[tokio::test]
async fn a_yaml_alias_bomb_is_refused_and_a_strangers_yaml_is_never_parsed() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("yaml-bomb").await;
    let workspace = app.workspace(&org, "ws").await;
    let level = |name: &str, of: &str| format!("{name}: &{name} [{}]\n", vec![of; 100].join(","));
    let bomb = format!(
        "{}{}{}{}steps:\n  - id: a\n    uses: x\n    with: {{boom: *d}}\n",
        level("a", "x"),
        level("b", "*a"),
        level("c", "*b"),
        level("d", "*c")
    );
    let path = format!("/api/v1/orgs/{}/workspaces/{workspace}/workflows", org.id);
    let body = json!({"name": "bomb", "definition": bomb});
    let res = app.post(&path, &org.owner.token, &body).await;
    let problem =
        crate::helpers::assert_problem(res, reqwest::StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
            .await;
    assert!(problem["errors"][0]["message"].as_str().unwrap().contains("nodes"), "{problem}");
    let stranger = app.user("stranger@yaml-bomb.test").await;
    let res = app.post(&path, &stranger.token, &body).await;
    crate::helpers::assert_problem(res, reqwest::StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(app.raw_count("select count(*) from workflows", &[]).await, 0);
}
