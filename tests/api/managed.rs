//! A managed PostgreSQL (RDS/Aurora, Cloud SQL, Azure): no superuser for the install, TLS only.
//! These run in `make test`'s managed pass, against the cluster `.dev/managed.sh` starts (TLS
//! only, `hostssl` alone in pg_hba, a NOSUPERUSER CREATEROLE CREATEDB admin, the app role
//! authenticated by its client certificate); the isolation suite runs there too.

use std::process::Command;

use uuid::Uuid;

use crate::cli::tenantry;
use crate::helpers::{TestApp, admin_url, connect, fresh_database, installer_url};

fn managed_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: the managed::tests run in `make test`'s managed pass (make test-managed)")
    })
}

/// The installer's URL for `db` with `query` instead of the suite's TLS parameters.
fn installer_with(db: &str, host: &str, query: &str) -> String {
    let url = installer_url(db);
    let base = url.split_once('?').map_or(url.as_str(), |(base, _)| base).to_owned();
    let base = base.replacen("@localhost:", &format!("@{host}:"), 1);
    if query.is_empty() { base } else { format!("{base}?{query}") }
}

#[tokio::test]
async fn an_admin_without_superuser_installs_tenantry_and_no_role_bypasses_rls() {
    let installer = connect(&installer_url("postgres")).await;
    let me = installer
        .query_one("select rolsuper, rolcreaterole, rolcreatedb, rolbypassrls from pg_roles where rolname = current_user", &[])
        .await
        .unwrap();
    assert_eq!(
        (me.get::<_, bool>(0), me.get::<_, bool>(1), me.get::<_, bool>(2), me.get::<_, bool>(3)),
        (false, true, true, false),
        "the installer is shaped like a managed database's admin"
    );
    let db = format!("tt_{}", Uuid::new_v4().simple());
    installer.batch_execute(&format!("create database {db}")).await.unwrap();
    let url = installer_url(&db);
    for round in ["first", "second"] {
        let out = tenantry(&["migrate"], &[("TENANTRY_ADMIN_DATABASE_URL", &url)]);
        assert!(out.status.success(), "{round} migrate: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = tenantry(&["check"], &[("TENANTRY_ADMIN_DATABASE_URL", &url)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("tenantry check: OK"), "{stdout}");

    let raw = connect(&admin_url(&db)).await;
    let privileged: i64 = raw
        .query_one(
            "select count(*) from pg_roles where rolname like 'tenantry%' and (rolsuper or rolbypassrls)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(privileged, 0, "no tenantry role bypasses RLS");
    let backup: i64 = raw
        .query_one("select count(*) from pg_roles where rolname = 'tenantry_backup'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(backup, 0, "without a superuser there is no backup role");
    let definer_policies: i64 = raw
        .query_one("select count(*) from pg_policy where polname = 'definer_across_tenants'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(definer_policies > 10, "the definer sees across tenants through its policies");
}

#[tokio::test]
async fn tls_mistakes_are_refused_with_what_to_fix_and_never_the_password() {
    let db = fresh_database().await; // migrated: `tenantry check` passes once connected
    let tls_dir = managed_env("TEST_TLS_DIR");
    let password = managed_env("TEST_PG_INSTALLER").split_once(':').unwrap().1.to_owned();
    let ca = format!("{tls_dir}/ca.crt");
    let other_ca = format!("{tls_dir}/other-ca.crt");
    let cases = [
        (
            installer_with("postgres", "localhost", &format!("sslmode=verify-full&sslrootcert={other_ca}")),
            "not signed by a CA you trust: set sslrootcert",
        ),
        (
            installer_with("postgres", "127.0.0.1", &format!("sslmode=verify-full&sslrootcert={ca}")),
            "not issued for the host you connect to",
        ),
        (installer_with("postgres", "localhost", "sslmode=disable"), "accepts only TLS connections"),
    ];
    for (url, hint) in &cases {
        let out = tenantry(&["check"], &[("TENANTRY_ADMIN_DATABASE_URL", url)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url}");
        assert!(stderr.contains(hint), "expected {hint:?} in: {stderr}");
        assert!(!stderr.contains(&password) && !String::from_utf8_lossy(&out.stdout).contains(&password));
    }
    // verify-ca checks the chain only, so the IP address that verify-full refused is accepted.
    let url = installer_with(&db, "127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}"));
    let out = tenantry(&["check"], &[("TENANTRY_ADMIN_DATABASE_URL", &url)]);
    assert!(out.status.success(), "verify-ca: {out:?}");
    // The same settings work as settings, not URL parameters.
    let url = installer_with(&db, "localhost", "");
    let out = tenantry(
        &["check"],
        &[
            ("TENANTRY_ADMIN_DATABASE_URL", &url),
            ("TENANTRY_DATABASE_TLS__SSLMODE", "verify-full"),
            ("TENANTRY_DATABASE_TLS__SSLROOTCERT", &ca),
        ],
    );
    assert!(out.status.success(), "TLS as settings: {out:?}");
    // Production refuses a connection that may be plaintext before it is made.
    let out = tenantry(
        &["check"],
        &[("TENANTRY_ADMIN_DATABASE_URL", &url), ("TENANTRY_ENVIRONMENT", "production")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("sslmode=prefer may send every tenant's data in plaintext"), "{stderr}");
}

#[tokio::test]
async fn the_server_reaches_the_database_only_over_tls_with_its_client_certificate() {
    let app = TestApp::spawn().await;
    let org = app.org_with_owner("acme").await;
    assert_eq!(app.get(&format!("/api/v1/orgs/{}", org.id), &org.owner.token).await.status(), 200);
    let rows = app
        .rls_bypassing_admin
        .query(
            "select s.ssl, s.client_dn from pg_stat_activity a join pg_stat_ssl s using (pid) \
             where a.usename = 'tenantry_app' and a.datname = current_database()",
            &[],
        )
        .await
        .unwrap();
    assert!(rows.len() >= 2, "the pool and the LISTEN connection: {rows:?}");
    for row in rows {
        assert!(row.get::<_, bool>(0), "every app connection is TLS");
        assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("/CN=tenantry_app"));
    }
}

#[test]
fn a_backup_without_a_role_that_may_read_every_tenant_says_what_to_use_instead() {
    let url = installer_url("postgres");
    let dir = std::env::temp_dir().join(format!("tenantry-backup-{}", Uuid::new_v4().simple()));
    let out = Command::new(".dev/backup.sh").args(["backup", &url]).arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not bypass row-level security"), "{stderr}");
    assert!(stderr.contains("provider's snapshots"), "{stderr}");
    assert!(std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0) == 0, "no partial dump is left");
    let _ = std::fs::remove_dir_all(dir);
}
