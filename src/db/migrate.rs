//! `tenantry migrate`: apply sql/, the refinery migrations and policies/ in that order, as the
//! owner, under a PostgreSQL advisory lock so two instances starting together cannot race.
//! Every step is idempotent; running it twice changes nothing.

use anyhow::Context as _;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_sql.rs"));
}
pub use embedded::{POLICY_FILES, SQL_FILES};

const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}
const _: () = assert!(
    same(embedded::EMBEDDED_FROM, env!("CARGO_MANIFEST_DIR")),
    "the embedded SQL comes from another checkout sharing this target dir: `touch src/build.rs` and build again"
);

refinery::embed_migrations!("migrations");

/// Arbitrary but fixed: the advisory lock key every `tenantry migrate` takes.
const MIGRATE_LOCK: i64 = 0x7465_6e61_6e74;

/// The newest migration version compiled into this binary.
pub fn latest_version() -> i64 {
    migrations::runner().get_migrations().iter().map(|m| i64::from(m.version())).max().unwrap_or(0)
}

pub async fn run(admin: &super::Connector) -> anyhow::Result<()> {
    let mut client = super::admin_client(admin).await?;
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
    // A superuser, or the NOSUPERUSER CREATEROLE admin of a managed database, applies the roles
    // file itself; an admin without CREATEROLE needs a DBA to have applied it.
    let row = client
        .query_one("select rolsuper or rolcreaterole from pg_roles where rolname = current_user", &[])
        .await?;
    let manages_roles: bool = row.get(0);
    for (name, sql) in SQL_FILES {
        if name.ends_with("01_roles.sql") && !manages_roles {
            let row = client
                .query_one(
                    "select count(*) from pg_roles where rolname in ('tenantry_owner','tenantry_app','tenantry_definer')",
                    &[],
                )
                .await?;
            let count: i64 = row.get(0);
            anyhow::ensure!(
                count == 3,
                "the tenantry roles do not exist: apply sql/01_roles.sql as a role with CREATEROLE first"
            );
            tracing::info!(file = name, "no CREATEROLE: skipping role creation (roles exist)");
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
    // An install from before the definer's policies: drop the BYPASSRLS it needed then, now that
    // policies/zz_definer.sql gives it its view (only a superuser can, and only one gave it).
    client.batch_execute("reset role").await?;
    let row = client
        .query_one(
            "select r.rolbypassrls and me.rolsuper from pg_roles r, pg_roles me \
             where r.rolname = 'tenantry_definer' and me.rolname = current_user",
            &[],
        )
        .await?;
    if row.get::<_, bool>(0) {
        client.batch_execute("alter role tenantry_definer nobypassrls").await?;
        tracing::info!("tenantry_definer no longer bypasses RLS (its policies give it its view)");
    }
    Ok(())
}
