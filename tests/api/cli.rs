//! The `tenantry` command as other tools use it.

use std::process::{Command, Output};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestApp, admin_url, fresh_database};

fn tenantry(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantry"));
    cmd.args(args).env("TENANTRY_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running tenantry")
}

#[tokio::test]
async fn token_prints_only_a_token_that_the_server_accepts() {
    let app = TestApp::spawn().await;
    let key = app.key_file.to_str().unwrap();
    let out = tenantry(
        &["token", "--email", "Dev@Example.test", "--ttl", "10m"],
        &[("TENANTRY_AUTH__SIGNING_KEY_FILE", key)],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "only the token on stdout");
    let token = stdout.trim();
    assert_eq!(token.split('.').count(), 3);

    let res = app.get("/api/v1/me", token).await;
    assert_eq!(res.status(), StatusCode::OK);
    let me: Value = res.json().await.unwrap();
    assert_eq!(me["subject"], "dev@example.test");
}

#[test]
fn token_is_refused_in_production() {
    let dir = std::env::temp_dir().join(format!("tenantry-test-{}", uuid::Uuid::new_v4().simple()));
    let key = dir.join("key.pem");
    let out = tenantry(
        &["token", "--email", "dev@example.test"],
        &[("TENANTRY_ENVIRONMENT", "production"), ("TENANTRY_AUTH__SIGNING_KEY_FILE", key.to_str().unwrap())],
    );
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("development only"));
    assert!(!key.exists(), "no key is generated in production");
}

#[test]
fn config_redacts_secrets_and_warns_about_misspelt_variables() {
    let out = tenantry(
        &["config"],
        &[("TENANTRY_DATABASE_URL", "postgres://app:hunter2@db/x"), ("TENANTRY_LISTN", "0.0.0.0:1")],
    );
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(stdout.contains("[redacted]"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TENANTRY_LISTN"));
}

#[tokio::test]
async fn check_exits_non_zero_and_lists_violations() {
    let db = fresh_database().await;
    let url = admin_url(&db);
    let ok = tenantry(&["check"], &[("TENANTRY_ADMIN_DATABASE_URL", &url)]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("tenantry check: OK"));

    let client = crate::helpers::connect(&url).await;
    client.batch_execute("alter table workspaces no force row level security").await.unwrap();
    let bad = tenantry(&["check"], &[("TENANTRY_ADMIN_DATABASE_URL", &url)]);
    assert_eq!(bad.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert!(stdout.contains("rls_not_forced") && stdout.contains("workspaces"), "{stdout}");
}
