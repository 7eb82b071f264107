//! The `tenantry` command as other tools use it.

use std::process::{Command, Output};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestApp, admin_url, fresh_database};

/// `tenantry ARGS` with `env`, logging warnings only.
pub fn tenantry(args: &[&str], env: &[(&str, &str)]) -> Output {
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

#[test]
fn every_secret_file_variant_is_read_and_never_printed() {
    let dir = std::env::temp_dir().join(format!("tenantry-test-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut env = Vec::new();
    for (i, setting) in tenantry::config::SECRET_FILES.iter().enumerate() {
        let path = dir.join(format!("secret-{i}"));
        let value = match *setting {
            "rate_limits.redis_url" => format!("redis://:pw-{i}-hunter2@127.0.0.1:1/0"),
            s if s.ends_with("_url") => format!("postgres://app:pw-{i}-hunter2@db/x"),
            _ => format!("pw-{i}-hunter2"),
        };
        std::fs::write(&path, value).unwrap();
        env.push((tenantry::config::secret_file_variable(setting), path.to_str().unwrap().to_owned()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = tenantry(&["config"], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("hunter2") && !stderr.contains("hunter2"), "{stdout}{stderr}");
    // Each one was read: it shows as redacted, where unset secrets show as null / [].
    let shown: Value = serde_json::from_str(&stdout).unwrap();
    for pointer in [
        "/database_url",
        "/admin_database_url",
        "/listen_database_url",
        "/metrics_token",
        "/rate_limits/redis_url",
        "/billing/stripe_webhook_secrets/0",
        "/billing/razorpay_webhook_secrets/0",
    ] {
        assert_eq!(shown.pointer(pointer), Some(&Value::from("[redacted]")), "{pointer}: {stdout}");
    }
    assert!(!stderr.contains("unknown TENANTRY_"), "the _FILE variables are known: {stderr}");
    // An unreadable file: the variable and path are named, and the server does not start.
    let missing = dir.join("missing");
    let out = tenantry(&["config"], &[("TENANTRY_METRICS_TOKEN_FILE", missing.to_str().unwrap())]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read TENANTRY_METRICS_TOKEN_FILE="));
    std::fs::remove_dir_all(dir).unwrap();
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
