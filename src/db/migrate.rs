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
    // On a Citus coordinator, DDL on distributed objects runs over one connection per worker, so a
    // transaction that changed a distributed table may still change a distributed function.
    let citus =
        client.query_one("select exists (select 1 from pg_extension where extname = 'citus')", &[]).await?;
    if citus.get::<_, bool>(0) {
        client.batch_execute("set citus.multi_shard_modify_mode = 'sequential'").await?;
    }
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
        // One transaction, as a multi-statement query would have been.
        client.batch_execute("begin").await?;
        apply_script(client, name, sql).await?;
        client.batch_execute("commit").await?;
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
        // Each opens and commits its own transaction.
        apply_script(client, name, sql).await?;
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

/// Runs a script one statement at a time. A Citus coordinator propagates some DDL to the shards
/// as the text of the whole query it arrived in (`DROP POLICY`, `ALTER TABLE ... ROW LEVEL
/// SECURITY`), which a worker refuses when that text holds several statements; one statement
/// per query also lets a failure name its line. On an error, the transaction is rolled back.
async fn apply_script(client: &tokio_postgres::Client, name: &str, script: &str) -> anyhow::Result<()> {
    for (line, statement) in statements(script) {
        if let Err(e) = client.batch_execute(statement).await {
            let _ = client.batch_execute("rollback").await;
            return Err(
                anyhow::Error::new(e).context(format!("applying {name}, the statement at line {line}"))
            );
        }
    }
    Ok(())
}

/// The statements of a SQL script, each with the line it starts on (1-based), split at the
/// semicolons outside comments, quoted strings, quoted identifiers and dollar-quoted bodies.
/// Only for our own embedded files; comments between statements are left out.
fn statements(script: &str) -> Vec<(usize, &str)> {
    let bytes = script.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut i, mut line, mut start_line) = (0, 0, 1, 1);
    let mut has_code = false;
    let newlines = |from: usize, to: usize| bytes[from..to].iter().filter(|&&b| b == b'\n').count();
    while i < bytes.len() {
        let rest = &script[i..];
        let skip_to = if rest.starts_with("--") {
            rest.find('\n').map_or(bytes.len(), |n| i + n)
        } else if rest.starts_with("/*") {
            let mut depth = 0usize;
            let mut j = i;
            while j < bytes.len() {
                if script[j..].starts_with("/*") {
                    depth += 1;
                    j += 2;
                } else if script[j..].starts_with("*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            j
        } else {
            if !has_code && !bytes[i].is_ascii_whitespace() && bytes[i] != b';' {
                (has_code, start, start_line) = (true, i, line);
            }
            match bytes[i] {
                quote @ (b'\'' | b'"') => {
                    // E'...' strings escape with a backslash; others double the quote.
                    let escapes = quote == b'\'' && i > 0 && bytes[i - 1].eq_ignore_ascii_case(&b'e');
                    let mut j = i + 1;
                    while j < bytes.len() {
                        if escapes && bytes[j] == b'\\' {
                            j += 2;
                        } else if bytes[j] == quote {
                            if bytes.get(j + 1) == Some(&quote) {
                                j += 2;
                            } else {
                                break;
                            }
                        } else {
                            j += 1;
                        }
                    }
                    (j + 1).min(bytes.len())
                }
                b'$' => match dollar_tag(rest) {
                    Some(tag) => {
                        rest[tag.len()..].find(tag).map_or(bytes.len(), |n| i + tag.len() + n + tag.len())
                    }
                    None => i + 1,
                },
                b';' => {
                    if has_code {
                        out.push((start_line, script[start..=i].trim()));
                    }
                    has_code = false;
                    i + 1
                }
                _ => i + 1,
            }
        };
        line += newlines(i, skip_to);
        i = skip_to;
    }
    if has_code {
        out.push((start_line, script[start..].trim()));
    }
    out
}

/// `$tag$` or `$$` at the start of `s` (a dollar quote's opening), or None (a parameter, `$1`).
fn dollar_tag(s: &str) -> Option<&str> {
    let end = s[1..].find('$')? + 1;
    let tag = &s[1..end];
    let valid = tag.chars().next().is_none_or(|c| c.is_alphabetic() || c == '_')
        && tag.chars().all(|c| c.is_alphanumeric() || c == '_');
    valid.then(|| &s[..=end])
}

#[cfg(test)]
mod tests {
    use super::statements;

    #[test]
    fn a_script_splits_at_the_semicolons_outside_quotes_comments_and_bodies() {
        let script = "-- a comment; not a statement\nbegin;\n\ncreate function f() returns text language sql as $$ select 'a;b' $$;\n\
                      select $body$ ; $$ ; $body$, 'it''s; quoted', \"odd;name\", E'\\'; still';\n\
                      /* a /* nested; */ comment; */ select $1::text;\n-- trailing; comment\n";
        let got = statements(script);
        assert_eq!(
            got,
            vec![
                (2, "begin;"),
                (4, "create function f() returns text language sql as $$ select 'a;b' $$;"),
                (5, "select $body$ ; $$ ; $body$, 'it''s; quoted', \"odd;name\", E'\\'; still';"),
                (6, "select $1::text;"),
            ]
        );
    }

    #[test]
    fn every_embedded_file_splits_into_statements_that_end_where_they_should() {
        for (name, sql) in super::SQL_FILES.iter().chain(super::POLICY_FILES) {
            let parts = statements(sql);
            assert!(!parts.is_empty(), "{name}: no statements");
            for (line, statement) in &parts {
                assert!(statement.ends_with(';'), "{name}:{line}: a statement that does not end with ';'");
            }
            let last = sql.lines().rev().find(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"));
            assert_eq!(
                parts.last().map(|p| p.1.lines().last().unwrap().trim()),
                last.map(str::trim),
                "{name}"
            );
        }
    }
}
