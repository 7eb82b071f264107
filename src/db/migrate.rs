//! `tenantry migrate`: apply sql/, the refinery migrations and policies/ in that order, as the
//! owner, under a PostgreSQL advisory lock so two instances starting together cannot race.
//! Every step is idempotent; running it twice changes nothing.

use anyhow::Context as _;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_sql.rs"));
}
pub use embedded::{POLICY_FILES, SQL_FILES};

refinery::embed_migrations!("migrations");

/// Arbitrary but fixed: the advisory lock key every `tenantry migrate` takes.
const MIGRATE_LOCK: i64 = 0x7465_6e61_6e74;

/// The newest migration version compiled into this binary.
pub fn latest_version() -> i64 {
    migrations::runner().get_migrations().iter().map(|m| i64::from(m.version())).max().unwrap_or(0)
}

pub async fn run(admin_url: &str) -> anyhow::Result<()> {
    let mut client = super::admin_client(admin_url).await?;
    client
        .query("select pg_advisory_lock($1)", &[&MIGRATE_LOCK])
        .await
        .context("taking the migration advisory lock")?;
    let result = apply_all(&mut client).await;
    // Unlock even after a failure; the lock also ends with the connection.
    let _ = client.batch_execute("reset role").await;
    let _ = client.query("select pg_advisory_unlock($1)", &[&MIGRATE_LOCK]).await;
    result
}

async fn apply_all(client: &mut tokio_postgres::Client) -> anyhow::Result<()> {
    let row = client.query_one("select rolsuper from pg_roles where rolname = current_user", &[]).await?;
    let is_superuser: bool = row.get(0);
    for (name, sql) in SQL_FILES {
        if name.ends_with("01_roles.sql") && !is_superuser {
            let row = client
                .query_one(
                    "select count(*) from pg_roles where rolname in ('tenantry_owner','tenantry_app','tenantry_definer')",
                    &[],
                )
                .await?;
            let count: i64 = row.get(0);
            anyhow::ensure!(
                count == 3,
                "the tenantry roles do not exist: apply sql/01_roles.sql as a superuser first"
            );
            tracing::info!(file = name, "not a superuser: skipping role creation (roles exist)");
            continue;
        }
        client.batch_execute(sql).await.with_context(|| format!("applying {name}"))?;
        tracing::info!(file = name, "applied");
    }
    client.batch_execute("set role tenantry_owner").await?;
    let report = migrations::runner()
        .set_abort_divergent(true)
        .set_abort_missing(true)
        .run_async(client)
        .await
        .context("running migrations")?;
    for m in report.applied_migrations() {
        tracing::info!(version = m.version(), name = m.name(), "migration applied");
    }
    for (name, sql) in POLICY_FILES {
        client.batch_execute(sql).await.with_context(|| format!("applying {name}"))?;
        tracing::info!(file = name, "applied");
    }
    Ok(())
}
