//! The catalog check on a Citus coordinator (README, "Scaling out"): every tenant table is
//! distributed by `organization_id` and all are co-located, so that a tenant's rows and the
//! row-check triggers that read them share a worker; every other table is a reference table; the
//! context key is not a Citus table (a policy helper may read none on a worker); every function of
//! ours exists on the workers; an organization's events are deleted with it; and each shard carries its table's policies with row-level security
//! forced. Nothing here runs on plain
//! PostgreSQL.

use tokio_postgres::GenericClient;

use super::check::Violation;

/// Tables of ours that stay plain tables on a coordinator: refinery's history (the coordinator's
/// alone) and the context key (each node's own copy, `app.share_context_key()`).
const LOCAL_TABLES: &[&str] = &["refinery_schema_history", "app.context_keys"];

/// Is this database a Citus coordinator's (the extension is there)?
pub async fn is_citus(client: &impl GenericClient) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_one("select exists (select 1 from pg_extension where extname = 'citus')", &[])
        .await?
        .get(0))
}

/// How each table is (or is not) distributed, from the coordinator's metadata: read only.
pub async fn distribution_violations(
    client: &impl GenericClient,
) -> Result<Vec<Violation>, tokio_postgres::Error> {
    let rows = client
        .query(
            "select c.oid::regclass::text as name, \
                    exists (select 1 from pg_attribute a where a.attrelid = c.oid \
                            and a.attname = 'organization_id' and not a.attisdropped) as tenant, \
                    p.partmethod::text as method, p.repmodel::text as replication, \
                    p.colocationid, \
                    case when p.partmethod = 'h' then column_to_column_name(c.oid, p.partkey)::text end as column \
               from pg_class c join pg_namespace n on n.oid = c.relnamespace \
               left join pg_dist_partition p on p.logicalrelid = c.oid \
              where c.relkind in ('r', 'p') and not c.relispartition and n.nspname in ('public', 'app') \
              order by 1",
            &[],
        )
        .await?;
    let mut out = Vec::new();
    // The co-location group most tenant tables are in: every tenant table belongs in it.
    let mut groups: Vec<(i32, usize)> = Vec::new();
    for r in rows.iter().filter(|r| r.get::<_, bool>("tenant")) {
        if let Some(id) = r.get::<_, Option<i32>>("colocationid") {
            match groups.iter_mut().find(|(g, _)| *g == id) {
                Some((_, n)) => *n += 1,
                None => groups.push((id, 1)),
            }
        }
    }
    let main_group = groups.iter().max_by_key(|(_, n)| *n).map(|(g, _)| *g);
    for r in &rows {
        let name: String = r.get("name");
        let method: Option<String> = r.get("method");
        if LOCAL_TABLES.contains(&name.as_str()) {
            if method.is_some() {
                out.push(violation(
                    "citus_local_table_distributed",
                    &name,
                    "must stay a plain table on each node (a policy helper on a worker reads it)",
                ));
            }
            continue;
        }
        let column: Option<String> = r.get("column");
        if r.get::<_, bool>("tenant") {
            if method.as_deref() != Some("h") || column.as_deref() != Some("organization_id") {
                out.push(violation(
                    "citus_tenant_table_not_distributed",
                    &name,
                    "tenant table not distributed by organization_id (create_distributed_table)",
                ));
            } else if r.get::<_, Option<i32>>("colocationid") != main_group {
                out.push(violation(
                    "citus_tenant_table_not_colocated",
                    &name,
                    "tenant table outside the other tenant tables' co-location group",
                ));
            }
        } else {
            let replication: Option<String> = r.get("replication");
            if method.as_deref() != Some("n") || replication.as_deref() != Some("t") {
                out.push(violation(
                    "citus_platform_table_not_reference",
                    &name,
                    "platform table that is not a reference table (create_reference_table)",
                ));
            }
        }
    }
    // Every function of ours on the workers too (a policy helper, a trigger's function): Citus
    // creates one there only once what its signature names is distributed.
    for r in client
        .query(
            "select p.oid::regprocedure::text from pg_proc p \
              where p.pronamespace = 'app'::regnamespace and p.prokind = 'f' \
                and not exists (select 1 from pg_dist_object d \
                                 where d.classid = 'pg_proc'::regclass and d.objid = p.oid) \
              order by 1",
            &[],
        )
        .await?
    {
        out.push(violation(
            "citus_function_not_on_workers",
            &r.get::<_, String>(0),
            "function not distributed to the workers (create_distributed_function)",
        ));
    }
    // An organization's events go with it. On PostgreSQL a statement trigger deletes them
    // (app.delete_organization_events(), V30); on Citus it runs on each node's copy of
    // organizations and may not write other nodes' shards, so events carry the cascading key.
    let cascades: bool = client
        .query_one(
            "select exists (select 1 from pg_constraint where conrelid = 'public.events'::regclass \
               and contype = 'f' and confrelid = 'public.organizations'::regclass and confdeltype = 'c')",
            &[],
        )
        .await?
        .get(0);
    if !cascades {
        out.push(violation(
            "citus_events_outlive_organization",
            "public.events",
            "no foreign key to organizations on delete cascade: a deleted organization's events would stay",
        ));
    }
    Ok(out)
}

/// Each shard's policies and row-level security against its table's on the coordinator, on every
/// placement (a reference table's on every node). Asks every worker (`run_command_on_placements`):
/// for the CLI, not for readiness.
pub async fn shard_policy_violations(
    client: &impl GenericClient,
) -> Result<Vec<Violation>, tokio_postgres::Error> {
    // Whether RLS is enabled and forced, and a digest of every policy's name, command, roles and
    // expressions: of the table named by `{table}`, which is `%1$s` (each shard's name, as
    // run_command_on_placements fills it in) on the workers and a parameter on the coordinator.
    const SHAPE: &str = "select (select relrowsecurity and relforcerowsecurity from pg_class where oid = {table}::regclass)::text \
                           || ' ' || coalesce((select md5(string_agg(p.polname || ' ' || p.polcmd::text || ' ' || p.polpermissive::text \
                                || ' ' || p.polroles::regrole[]::text || ' ' || coalesce(pg_get_expr(p.polqual, p.polrelid), '') \
                                || ' ' || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), ''), ';' order by p.polname)) \
                              from pg_policy p where p.polrelid = {table}::regclass), 'no policies')";
    let on_coordinator = SHAPE.replace("{table}", "$1::text");
    let on_shards = SHAPE.replace("{table}", "'%1$s'");
    let mut out = Vec::new();
    for table in
        client.query("select logicalrelid::regclass::text from pg_dist_partition order by 1", &[]).await?
    {
        let name: String = table.get(0);
        let expected: String = client.query_one(on_coordinator.as_str(), &[&name]).await?.get(0);
        for r in client
            .query(
                "select nodename || ':' || nodeport, shardid, success, result \
                   from run_command_on_placements($1::text::regclass, $2) order by 2, 1",
                &[&name, &on_shards],
            )
            .await?
        {
            let (node, shard, success, result): (String, i64, bool, String) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            if !success || result != expected {
                out.push(Violation {
                    rule: "citus_shard_policies_differ",
                    object: format!("{name} (shard {shard} on {node})"),
                    message: "the shard's policies or row-level security differ from its table's: re-run \
                              `tenantry migrate` on the coordinator"
                        .into(),
                });
            }
        }
    }
    Ok(out)
}

fn violation(rule: &'static str, object: &str, message: &str) -> Violation {
    Violation { rule, object: object.into(), message: message.into() }
}
