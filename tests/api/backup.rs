//! Backups: the read-only backup role dumps every tenant's rows; a restore into a fresh database
//! has the same rows (counts and checksums, table by table) and passes `tenantry check`.

use std::process::Command;

use tokio_postgres::Client;
use uuid::Uuid;

use crate::helpers::{TestApp, admin_url, connect};

/// Row count and checksum of every table in schema public, by name.
async fn fingerprint(db: &Client) -> Vec<(String, i64, String)> {
    let tables = db
        .query(
            "select c.relname::text from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where n.nspname = 'public' and c.relkind = 'r' order by 1",
            &[],
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    for row in tables {
        let table: String = row.get(0);
        let sql = format!(
            "select count(*), coalesce(md5(string_agg(t::text, '|' order by t::text)), '') from public.{table} t"
        );
        let sums = db.query_one(&sql, &[]).await.unwrap();
        out.push((table, sums.get(0), sums.get(1)));
    }
    out
}

#[tokio::test]
async fn a_backup_restores_every_row_and_the_restored_database_passes_the_check() {
    let app = TestApp::spawn().await;
    for slug in ["org-a", "org-b"] {
        let org = app.org_with_owner(slug).await;
        let ws = app.workspace(&org, "Production").await;
        let workflow = app.workflow(&org, ws).await;
        app.run(&org, ws, workflow).await;
        app.subscription(&org).await;
        app.provider_key(&org, ws).await;
    }
    let admin = connect(&admin_url(&app.database)).await;
    let before = fingerprint(&admin).await;
    assert!(before.iter().any(|(t, n, _)| t == "journal_entries" && *n > 0));

    // The backup role reads everything and can change nothing.
    let backup_url = admin_url(&app.database).replace("postgres@", "tenantry_backup@");
    let backup = connect(&backup_url).await;
    let rows: i64 = backup.query_one("select count(*) from workspaces", &[]).await.unwrap().get(0);
    assert_eq!(rows, 2, "it sees every tenant's rows");
    let refused = backup.execute("insert into plans (id, name, price_minor, currency, interval) values ('x', 'x', 0, 'USD', 'month')", &[]).await;
    assert!(refused.is_err(), "it cannot write");

    let dir = std::env::temp_dir().join(format!("tenantry-backup-{}", Uuid::new_v4().simple()));
    let out = Command::new(".dev/backup.sh").args(["backup", &backup_url]).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let file = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    let restored = format!("restored_{}", Uuid::new_v4().simple());
    let base = admin_url("postgres").trim_end_matches("/postgres").to_owned();
    let out = Command::new(".dev/backup.sh")
        .args(["restore", &file, &base, &restored])
        .env("TENANTRY_BIN", env!("CARGO_BIN_EXE_tenantry"))
        .output()
        .unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{report}");
    assert!(report.contains("tenantry check: OK"), "{report}");

    let copy = connect(&admin_url(&restored)).await;
    assert_eq!(fingerprint(&copy).await, before, "every table, row for row");
    drop(copy);
    admin.execute(&format!("drop database {restored} with (force)"), &[]).await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
