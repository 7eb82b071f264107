//! What the OpenAPI document says about every operation alike, added after the handlers'
//! annotations: the answers the middleware gives on any route (429 with `RateLimit`, 503, 413,
//! 421, 401), the headers every response carries (`X-Request-Id`, `RateLimit`), conditional
//! requests (`ETag`, `If-Match`, 304/412/428), idempotency keys, API keys as a second security
//! scheme, page schemas by reference, and tag groups that keep platform administration and the
//! payment-provider receivers apart from the customer API.
//!
//! Kept here rather than repeated on ninety handlers: the middleware that produces these answers
//! is one piece of code, so its documentation is too. `tests/api/openapi.rs` compares the
//! statuses the suites observe per operation with what this document lists.

use serde_json::{Map, Value, json};

/// Operations an API key cannot call (they need a signed-in person: `require_user`).
pub const USER_ONLY: &[&str] = &[
    "create_api_key",
    "delete_api_key",
    "create_export",
    "create_invitation",
    "create_invitations",
    "accept_invitation",
    "create_role",
    "update_role",
    "delete_role",
    "create_workflow_version",
    "get_me",
    "delete_me",
    "create_organization",
    "list_organizations",
    "list_sessions",
    "delete_session",
    "sign_out",
];

/// Writes that take `If-Match` (412 on a stale tag) and `If-None-Match`.
const CONDITIONAL_WRITES: &[&str] = &[
    "update_organization",
    "delete_organization",
    "update_workspace",
    "delete_workspace",
    "update_role",
    "delete_role",
    "update_member",
    "remove_member",
    "update_member_workspaces",
    "delete_api_key",
    "delete_invitation",
    "delete_provider_grant",
    "update_workflow",
    "archive_workflow",
    "create_workflow_version",
    "put_provider_key",
    "delete_provider_key",
    "put_subscription",
    "delete_subscription",
    "put_flag_config",
    "delete_flag_config",
    "cancel_run",
    "update_webhook_endpoint",
    "delete_webhook_endpoint",
    "rotate_webhook_secret",
];

/// Writes that must name the version they replace in some states (428 without `If-Match`).
const PRECONDITION_REQUIRED: &[&str] = &["create_workflow_version"];

/// Reads that answer with an `ETag` and honour `If-None-Match` (304).
const TAGGED_READS: &[&str] = &[
    "get_organization",
    "get_workspace",
    "get_role",
    "get_member",
    "get_member_workspaces",
    "get_api_key",
    "get_invitation",
    "get_provider_grant",
    "get_workflow",
    "get_workflow_version",
    "get_run",
    "get_provider_key",
    "get_subscription",
    "get_invoice",
    "get_event",
    "get_webhook_endpoint",
];

/// Responses that also carry an ETag: the representation a write produced.
fn tags_its_response(operation_id: &str) -> bool {
    CONDITIONAL_WRITES.contains(&operation_id)
        || matches!(
            operation_id,
            "create_organization"
                | "create_workspace"
                | "create_role"
                | "add_member"
                | "create_api_key"
                | "create_invitation"
                | "create_provider_grant"
                | "create_workflow"
                | "start_run"
                | "create_webhook_endpoint"
        )
}

/// The payment providers' receivers: called by Stripe and Razorpay, not by customers.
const RECEIVERS: &[&str] = &["receive_stripe_webhook", "receive_razorpay_webhook"];

fn header(description: &str, schema: Value) -> Value {
    json!({"description": description, "schema": schema})
}

fn components_headers() -> Value {
    json!({
        "X-Request-Id": header("This request's id, also in problem documents and the server's logs.", json!({"type": "string"})),
        "RateLimit": header(
            "The caller's remaining budget (IETF draft-ietf-httpapi-ratelimit-headers), e.g. `limit=600, remaining=599, reset=60`.",
            json!({"type": "string"})),
        "RateLimit-Policy": header("The limit that applies, e.g. `600;w=60`.", json!({"type": "string"})),
        "Retry-After": header("Seconds to wait before retrying.", json!({"type": "integer", "minimum": 0})),
        "Location": header("The URL of the resource created, or of the job that reports progress.", json!({"type": "string"})),
        "ETag": header("The strong entity tag of the representation: the resource's row version, e.g. `\"42\"`. Send it back as `If-Match` to update only that version.", json!({"type": "string"})),
        "Idempotent-Replayed": header("`true` when this is the stored answer to an earlier request with the same Idempotency-Key.", json!({"type": "string", "enum": ["true"]})),
    })
}

fn header_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/headers/{name}")})
}

fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    })
}

/// Adds `status` with `response` unless the handler documented it already.
fn ensure(responses: &mut Map<String, Value>, status: &str, response: Value) {
    responses.entry(status.to_owned()).or_insert(response);
}

/// Completes the document in place (see the module comment).
pub fn complete(doc: &mut Value) {
    let components = doc["components"].as_object_mut().expect("components");
    components.insert("headers".into(), components_headers());
    let schemas = components.get("schemas").cloned().unwrap_or_default();
    components["securitySchemes"]["api_key"] = json!({
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "tnty_…",
        "description": "An organization API key (`POST /orgs/{org_id}/api-keys`), sent as `Authorization: Bearer tnty_…`. It acts within its scopes and workspaces in its own organization only, and cannot call operations that need a signed-in person."
    });
    reference_page_items(components, &schemas);

    let paths = doc["paths"].as_object_mut().expect("paths");
    for (path, item) in paths.iter_mut() {
        for (method, operation) in item.as_object_mut().expect("path item").iter_mut() {
            complete_operation(path, method, operation);
        }
    }

    let customer: Vec<Value> = doc["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .filter(|name| !["admin", "payment_webhooks"].contains(name))
        .map(Value::from)
        .collect();
    doc["tags"].as_array_mut().expect("tags").push(json!({
        "name": "payment_webhooks",
        "description": "Receivers for the payment providers (Stripe, Razorpay): signed by them, not called by customers"
    }));
    doc["x-tagGroups"] = json!([
        {"name": "Customer API", "tags": customer},
        {"name": "Platform administration", "tags": ["admin"]},
        {"name": "Payment provider receivers", "tags": ["payment_webhooks"]},
    ]);
}

/// `Page_X.items` refers to `X` instead of inlining it, so generated clients get one type.
fn reference_page_items(components: &mut Map<String, Value>, schemas: &Value) {
    let Some(all) = components.get_mut("schemas").and_then(Value::as_object_mut) else { return };
    for (name, schema) in all.iter_mut() {
        let Some(item) = name.strip_prefix("Page_") else { continue };
        if schemas.get(item).is_some() {
            schema["properties"]["items"]["items"] = json!({"$ref": format!("#/components/schemas/{item}")});
        }
    }
}

fn complete_operation(path: &str, method: &str, operation: &mut Value) {
    let id = operation["operationId"].as_str().unwrap_or_default().to_owned();
    let in_org = path.contains("/orgs/{org_id}");
    let secured =
        operation["security"].as_array().is_some_and(|a| a.iter().any(|s| s.get("bearer").is_some()));
    let has_body = operation.get("requestBody").is_some();
    let is_write = matches!(method, "post" | "put" | "patch" | "delete");
    // A query, or a free-text path segment (a value the database cannot take, such as a NUL
    // character, is a 422 too).
    let has_query = operation["parameters"].as_array().is_some_and(|ps| {
        ps.iter().any(|p| {
            p["in"] == "query"
                || (p["in"] == "path" && p["schema"]["type"] == "string" && p["schema"]["format"].is_null())
        })
    });

    if RECEIVERS.contains(&id.as_str()) {
        operation["tags"] = json!(["payment_webhooks"]);
    }
    if secured && in_org && !USER_ONLY.contains(&id.as_str()) {
        operation["security"] = json!([{"bearer": []}, {"api_key": []}]);
    }

    let mut notes = Vec::new();
    let params =
        operation.as_object_mut().expect("operation").entry("parameters").or_insert_with(|| json!([]));
    let params = params.as_array_mut().expect("parameters");
    if is_write && in_org {
        params.push(json!({
            "name": "Idempotency-Key", "in": "header", "required": false,
            "description": "Makes a retry safe: a second request with the same key (within 24 hours, by the same caller) gets the first one's stored answer, marked `Idempotent-Replayed: true`, instead of acting twice. 1 to 255 visible ASCII characters.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255}
        }));
        notes.push("Send an `Idempotency-Key` to retry it safely.");
    }
    if CONDITIONAL_WRITES.contains(&id.as_str()) {
        params.push(json!({
            "name": "If-Match", "in": "header", "required": false,
            "description": "Act only if the resource is still at one of these versions (its `ETag`); otherwise 412 and nothing changes. `*` matches any current version.",
            "schema": {"type": "string"}, "example": "\"42\""
        }));
        notes.push("Send the `ETag` you read as `If-Match` so that a change made meanwhile is not overwritten (412).");
        if method == "put" {
            params.push(json!({
                "name": "If-None-Match", "in": "header", "required": false,
                "description": "`*`: create only; 412 if it exists already.",
                "schema": {"type": "string", "enum": ["*"]}
            }));
        }
    }
    if TAGGED_READS.contains(&id.as_str()) {
        params.push(json!({
            "name": "If-None-Match", "in": "header", "required": false,
            "description": "The `ETag` of the copy you hold: 304 without a body if it is still current.",
            "schema": {"type": "string"}, "example": "\"42\""
        }));
        notes.push("Answers 304 to an `If-None-Match` naming the current `ETag`.");
    }
    if params.is_empty() {
        operation.as_object_mut().expect("operation").remove("parameters");
    }

    let responses = operation["responses"].as_object_mut().expect("responses");
    if CONDITIONAL_WRITES.contains(&id.as_str()) || has_body {
        ensure(
            responses,
            "400",
            problem("Malformed request: the body is not JSON, or `If-Match` is not a list of entity tags"),
        );
    }
    if secured {
        ensure(responses, "401", problem("Not authenticated"));
    }
    if in_org {
        ensure(responses, "403", problem("Missing permission, or the organization is suspended"));
        ensure(responses, "404", problem("No such resource, or not yours: the same answer for both"));
        ensure(responses, "421", problem("The organization lives in another region; `region` names it"));
    }
    if TAGGED_READS.contains(&id.as_str()) {
        ensure(
            responses,
            "304",
            json!({"description": "Not modified: the copy named by If-None-Match is current", "headers": {"ETag": header_ref("ETag")}}),
        );
    }
    if is_write && in_org {
        ensure(
            responses,
            "409",
            problem(
                "A conflict with the current state, or a request with the same Idempotency-Key is still in progress",
            ),
        );
    }
    if CONDITIONAL_WRITES.contains(&id.as_str()) {
        ensure(
            responses,
            "412",
            problem(
                "If-Match named a version the resource is no longer at (or If-None-Match: * and it exists)",
            ),
        );
    }
    if PRECONDITION_REQUIRED.contains(&id.as_str()) {
        ensure(
            responses,
            "428",
            problem("The draft was edited since it was created or last published: send If-Match"),
        );
    }
    if has_body {
        ensure(responses, "413", problem("The body is larger than the server accepts"));
        ensure(responses, "422", problem("A field is invalid; `errors` names each"));
    }
    if has_query {
        ensure(responses, "422", problem("A query parameter is invalid; `errors` names it"));
    }
    if USER_ONLY.contains(&id.as_str()) {
        ensure(
            responses,
            "403",
            problem("Needs a signed-in person: API keys cannot call this (`user_required`)"),
        );
    }
    ensure(
        responses,
        "429",
        json!({
            "description": "Over a rate limit (the caller's, the organization's or the address's)",
            "headers": {"Retry-After": header_ref("Retry-After"), "RateLimit": header_ref("RateLimit"), "RateLimit-Policy": header_ref("RateLimit-Policy")},
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        }),
    );
    ensure(
        responses,
        "503",
        json!({
            "description": "Temporarily unavailable (database unreachable, or the request timed out and was rolled back)",
            "headers": {"Retry-After": header_ref("Retry-After")},
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        }),
    );

    for (status, response) in responses.iter_mut() {
        let headers =
            response.as_object_mut().expect("response").entry("headers").or_insert_with(|| json!({}));
        let headers = headers.as_object_mut().expect("headers");
        headers.insert("X-Request-Id".into(), header_ref("X-Request-Id"));
        if secured || in_org {
            headers.entry("RateLimit").or_insert_with(|| header_ref("RateLimit"));
            headers.entry("RateLimit-Policy").or_insert_with(|| header_ref("RateLimit-Policy"));
        }
        if matches!(status.as_str(), "201" | "202") {
            headers.insert("Location".into(), header_ref("Location"));
        }
        let success = status.starts_with('2');
        if success && (TAGGED_READS.contains(&id.as_str()) || tags_its_response(&id)) && status != "204" {
            headers.insert("ETag".into(), header_ref("ETag"));
        }
        if success && is_write && in_org {
            headers.insert("Idempotent-Replayed".into(), header_ref("Idempotent-Replayed"));
        }
    }

    let summary = operation["summary"].as_str().unwrap_or_default().to_owned();
    if operation.get("description").and_then(Value::as_str).is_none_or(str::is_empty) {
        let mut text = summary.clone();
        if !notes.is_empty() {
            text.push_str("\n\n");
            text.push_str(&notes.join(" "));
        }
        text.push_str(if in_org {
            "\n\nAnother organization's resources answer 404, exactly like ids that do not exist. Errors are RFC 9457 problem documents."
        } else {
            "\n\nErrors are RFC 9457 problem documents."
        });
        operation["description"] = Value::from(text);
    }
}
