//! `tenantry check`: reads a database's catalog and lists every way tenant isolation could
//! silently fail. Used by the CLI (admin connection), by readiness (app connection; the catalog
//! is readable by every role) and at start-up (the server refuses to run as a role that would
//! bypass RLS).

use deadpool_postgres::Pool;
use tokio_postgres::GenericClient;

use super::DbError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Stable rule name, e.g. `rls_not_forced`.
    pub rule: &'static str,
    pub object: String,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:<28} {:<40} {}", self.rule, self.object, self.message)
    }
}

/// Schemas that belong to PostgreSQL, spliced into queries at compile time.
macro_rules! system_schemas {
    () => {
        "('pg_catalog', 'information_schema', 'pg_toast')"
    };
}

/// Everything about the app role itself: attributes, memberships, ownership, CREATE rights.
pub async fn role_violations(
    client: &impl GenericClient,
    app_role: &str,
) -> Result<Vec<Violation>, tokio_postgres::Error> {
    let mut out = Vec::new();
    let Some(role) = client
        .query_opt(
            "select rolsuper, rolbypassrls, rolcreatedb, rolcreaterole, rolreplication \
             from pg_roles where rolname = $1",
            &[&app_role],
        )
        .await?
    else {
        out.push(Violation {
            rule: "app_role_missing",
            object: app_role.into(),
            message: "the app role does not exist".into(),
        });
        return Ok(out);
    };
    for (i, (attr, rule)) in [
        ("SUPERUSER", "app_role_superuser"),
        ("BYPASSRLS", "app_role_bypassrls"),
        ("CREATEDB", "app_role_createdb"),
        ("CREATEROLE", "app_role_createrole"),
        ("REPLICATION", "app_role_replication"),
    ]
    .into_iter()
    .enumerate()
    {
        if role.get::<_, bool>(i) {
            out.push(Violation {
                rule,
                object: app_role.into(),
                message: format!("the app role has {attr}"),
            });
        }
    }
    for row in client
        .query(
            "select r.rolname from pg_roles r \
             where (r.rolsuper or r.rolbypassrls) and r.rolname <> $1 and pg_has_role($1, r.oid, 'MEMBER')",
            &[&app_role],
        )
        .await?
    {
        out.push(Violation {
            rule: "app_role_privileged_member",
            object: app_role.into(),
            message: format!("the app role can become {}, which bypasses RLS", row.get::<_, String>(0)),
        });
    }
    for row in client
        .query(
            "with me as (select oid from pg_roles where rolname = $1) \
             select 'table ' || c.oid::regclass::text from pg_class c, me where c.relowner = me.oid \
             union all select 'function ' || p.oid::regprocedure::text from pg_proc p, me where p.proowner = me.oid \
             union all select 'schema ' || n.nspname from pg_namespace n, me where n.nspowner = me.oid \
             union all select 'database ' || d.datname from pg_database d, me \
               where d.datdba = me.oid and d.datname = current_database()",
            &[&app_role],
        )
        .await?
    {
        out.push(Violation {
            rule: "app_role_owns_object",
            object: row.get(0),
            message: "the app role owns this; owners can disable RLS and bypass it unless FORCEd".into(),
        });
    }
    let sql = concat!(
        "select n.nspname from pg_namespace n where n.nspname not in ",
        system_schemas!(),
        " \
         and n.nspname not like 'pg_temp%' and n.nspname not like 'pg_toast%' \
         and has_schema_privilege($1, n.oid, 'CREATE')"
    );
    for row in client.query(sql, &[&app_role]).await? {
        out.push(Violation {
            rule: "app_role_can_create",
            object: format!("schema {}", row.get::<_, String>(0)),
            message: "the app role may create objects here (and would own them)".into(),
        });
    }
    Ok(out)
}

/// The functions a policy may call: each reads only the request's settings and the sealed
/// context, never a table. A policy that looked a row up (a subquery, or a function that queries)
/// could not be evaluated on a Citus shard, where a policy runs inside the shard's query and may
/// read nothing else; a rule that needs another row is a row check (a trigger) instead. Adding a
/// function here is a claim that it reads no table: review it as such.
const POLICY_HELPERS: &[&str] = &[
    "app.current_org_id()",
    "app.current_user_id()",
    "app.current_api_key_id()",
    "app.current_run_claim()",
    "app.without_run_claim()",
    "app.holds_verified_claim()",
    "app.current_run_id()",
    "app.current_claim(text,text)",
    "app.has_permission(text)",
    "app.current_permissions()",
    "app.workspace_visible(uuid)",
    "app.workspace_allowed(uuid)",
    "app.workspace_restricted()",
    "app.within_restriction(uuid[])",
];

/// Policies that call a function outside [`POLICY_HELPERS`] (any schema but the system's).
async fn policy_helper_violations(
    client: &impl GenericClient,
) -> Result<Vec<Violation>, tokio_postgres::Error> {
    let sql = concat!(
        "select distinct p.polrelid::regclass::text || '.' || p.polname as policy, \
                replace(f.oid::regprocedure::text, ', ', ',') as function \
         from pg_policy p \
         cross join lateral regexp_matches(coalesce(p.polqual::text, '') || ' ' || coalesce(p.polwithcheck::text, ''), \
                                           ':funcid (\\d+)', 'g') m \
         join pg_proc f on f.oid = m[1]::oid \
         join pg_namespace n on n.oid = f.pronamespace \
         where n.nspname not in ",
        system_schemas!(),
        " and not (replace(f.oid::regprocedure::text, ', ', ',') = any($1)) order by 1, 2"
    );
    Ok(client
        .query(sql, &[&POLICY_HELPERS])
        .await?
        .into_iter()
        .map(|row| Violation {
            rule: "policy_calls_unlisted_function",
            object: row.get("policy"),
            message: format!(
                "the policy calls {}, which is not one of the context helpers (check.rs POLICY_HELPERS); \
                 a policy may read only the sealed context, and a rule needing another row is a trigger",
                row.get::<_, String>("function")
            ),
        })
        .collect())
}

/// Tables: RLS enabled and forced, a policy per granted command, no `USING (true)`, no subquery in
/// a policy, keys that lead with / include organization_id.
async fn table_violations(
    client: &impl GenericClient,
    app_role: &str,
) -> Result<Vec<Violation>, tokio_postgres::Error> {
    let mut out = Vec::new();
    // Tenant tables hold organization_id; tenant roots are what organization_id references.
    let sql = concat!(
        "with t as ( \
           select c.oid, c.oid::regclass::text as name, c.relrowsecurity, c.relforcerowsecurity, \
                  (select a.attnum from pg_attribute a where a.attrelid = c.oid \
                     and a.attname = 'organization_id' and not a.attisdropped) as org_att, \
                  exists (select 1 from pg_constraint f join pg_attribute a \
                            on a.attrelid = f.conrelid and a.attnum = f.conkey[1] \
                          where f.contype = 'f' and f.confrelid = c.oid and a.attname = 'organization_id' \
                            and array_length(f.conkey, 1) = 1) as is_root, \
                  has_any_column_privilege($1, c.oid, 'SELECT') as can_select, \
                  has_any_column_privilege($1, c.oid, 'INSERT') as can_insert, \
                  has_any_column_privilege($1, c.oid, 'UPDATE') as can_update, \
                  has_table_privilege($1, c.oid, 'DELETE') as can_delete \
           from pg_class c join pg_namespace n on n.oid = c.relnamespace \
           where c.relkind in ('r', 'p') and n.nspname not in ",
        system_schemas!(),
        " \
             and n.nspname not like 'pg_temp%') \
         select * from t"
    );
    for t in client.query(sql, &[&app_role]).await? {
        let oid: u32 = t.get("oid");
        let name: String = t.get("name");
        let org_att: Option<i16> = t.get("org_att");
        let is_tenant = org_att.is_some();
        let is_root: bool = t.get("is_root");
        // A Citus shard is `<table>_<shard id>`, and triggers tell the table by that name
        // (app.logical_table_name()): no table of ours may end the same way.
        let bare = name.rsplit('.').next().unwrap_or(&name);
        if bare
            .rsplit_once('_')
            .is_some_and(|(_, tail)| !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()))
        {
            out.push(Violation {
                rule: "table_named_like_a_shard",
                object: name.clone(),
                message: "a table name ending in _<digits> reads as a Citus shard's; rename it".into(),
            });
        }
        let can = |c: &str| t.get::<_, bool>(c);
        let writable = can("can_insert") || can("can_update") || can("can_delete");
        let needs_rls = is_tenant || is_root || writable;
        if !needs_rls {
            continue; // a read-only catalogue such as `permissions`
        }
        let what = if is_tenant {
            "tenant table"
        } else if is_root {
            "tenant root"
        } else {
            "table writable by the app role"
        };
        if !t.get::<_, bool>("relrowsecurity") {
            out.push(Violation {
                rule: "rls_disabled",
                object: name.clone(),
                message: format!("{what} without ENABLE ROW LEVEL SECURITY"),
            });
        }
        if !t.get::<_, bool>("relforcerowsecurity") {
            out.push(Violation {
                rule: "rls_not_forced",
                object: name.clone(),
                message: format!("{what} without FORCE ROW LEVEL SECURITY (its owner bypasses the policies)"),
            });
        }
        // Policies that apply to the app role.
        let policies = client
            .query(
                "select p.polname, p.polcmd::text as cmd, p.polpermissive, \
                        pg_get_expr(p.polqual, p.polrelid) as qual, \
                        pg_get_expr(p.polwithcheck, p.polrelid) as with_check, \
                        coalesce(p.polqual::text, '') || coalesce(p.polwithcheck::text, '') \
                          like '%{SUBLINK %' as has_subquery \
                 from pg_policy p \
                 where p.polrelid = $1 \
                   and exists (select 1 from unnest(p.polroles) r \
                               where r = 0 or pg_has_role($2, r, 'MEMBER'))",
                &[&oid, &app_role],
            )
            .await?;
        for (cmd, column, label) in [
            ("r", "can_select", "SELECT"),
            ("a", "can_insert", "INSERT"),
            ("w", "can_update", "UPDATE"),
            ("d", "can_delete", "DELETE"),
        ] {
            if !can(column) {
                continue;
            }
            let covered = policies.iter().any(|p| {
                let pc: String = p.get("cmd");
                p.get::<_, bool>("polpermissive") && (pc == cmd || pc == "*")
            });
            if !covered {
                out.push(Violation {
                    rule: "missing_policy",
                    object: name.clone(),
                    message: format!(
                        "the app role may {label} but no permissive {label} policy applies to it"
                    ),
                });
            }
        }
        for p in &policies {
            let polname: String = p.get("polname");
            let object = format!("{name}.{polname}");
            if p.get::<_, bool>("has_subquery") {
                out.push(Violation {
                    rule: "policy_subquery",
                    object: object.clone(),
                    message: "policy with a subquery: a sharded database (Citus) refuses it; compare with \
                              the context helpers instead (app.current_org_id(), app.has_permission(...), \
                              app.workspace_visible(...)), and check other rows in a trigger"
                        .into(),
                });
            }
            for column in ["qual", "with_check"] {
                let expr: Option<String> = p.get(column);
                if expr.as_deref().map(|e| e.trim_matches(|c| c == '(' || c == ')' || c == ' '))
                    == Some("true")
                {
                    out.push(Violation {
                        rule: "policy_always_true",
                        object: format!("{name}.{polname}"),
                        message: "policy is USING/WITH CHECK (true): it isolates nothing".into(),
                    });
                }
            }
        }
        let Some(org_att) = org_att else { continue };
        // Primary key leads with organization_id.
        let pk = client
            .query_opt(
                "select i.indkey[0] as first from pg_index i where i.indrelid = $1 and i.indisprimary",
                &[&oid],
            )
            .await?;
        match pk.map(|r| r.get::<_, i16>("first")) {
            Some(first) if first == org_att => {}
            Some(_) => out.push(Violation {
                rule: "pk_not_tenant_leading",
                object: name.clone(),
                message: "primary key does not lead with organization_id".into(),
            }),
            None => out.push(Violation {
                rule: "pk_missing",
                object: name.clone(),
                message: "tenant table without a primary key".into(),
            }),
        }
        // Unique keys include organization_id (else one tenant learns another's values).
        for row in client
            .query(
                "select i.indexrelid::regclass::text from pg_index i \
                 where i.indrelid = $1 and i.indisunique and not ($2 = any(i.indkey::int2[]))",
                &[&oid, &org_att],
            )
            .await?
        {
            out.push(Violation {
                rule: "unique_without_tenant",
                object: row.get(0),
                message: format!(
                    "unique index on {name} without organization_id: uniqueness leaks across tenants"
                ),
            });
        }
        // Foreign keys to other tenant tables carry organization_id on both sides.
        for row in client
            .query(
                "select f.conname, f.confrelid::regclass::text as target, \
                        exists (select 1 from pg_attribute a where a.attrelid = f.confrelid \
                                and a.attname = 'organization_id' and not a.attisdropped) as target_is_tenant, \
                        $2 = any(f.conkey) as has_org, \
                        (select a.attname from pg_attribute a where a.attrelid = f.conrelid and a.attnum = f.conkey[1]) as first_col, \
                        (select array_agg(a.attname::text order by k.ord) from unnest(f.confkey) with ordinality k(att, ord) \
                           join pg_attribute a on a.attrelid = f.confrelid and a.attnum = k.att) as target_cols, \
                        (select array_agg(a.attname::text order by k.ord) from unnest(f.conkey) with ordinality k(att, ord) \
                           join pg_attribute a on a.attrelid = f.conrelid and a.attnum = k.att) as source_cols \
                 from pg_constraint f where f.contype = 'f' and f.conrelid = $1",
                &[&oid, &org_att],
            )
            .await?
        {
            let target_is_tenant: bool = row.get("target_is_tenant");
            if !target_is_tenant {
                continue; // users, or the tenant root referenced by organization_id itself
            }
            let source: Vec<String> = row.get("source_cols");
            let target: Vec<String> = row.get("target_cols");
            let paired = source.iter().zip(&target).any(|(s, t)| s == "organization_id" && t == "organization_id");
            if !paired {
                out.push(Violation {
                    rule: "fk_without_tenant",
                    object: format!("{name}.{}", row.get::<_, String>("conname")),
                    message: format!(
                        "foreign key to tenant table {} does not pair organization_id: a row could reference another tenant's row",
                        row.get::<_, String>("target")
                    ),
                });
            }
        }
    }
    Ok(out)
}

/// The views that read across a policy on purpose, as the definer: each shows what a policy would
/// need another table for (a Citus shard cannot query one inside a policy), limited by the view to
/// the verified context. Each must be owned by the definer and be a security barrier, so none of
/// the caller's conditions sees a row the view has not admitted; any other view over a table with
/// RLS must be security_invoker.
const DEFINER_VIEWS: &[&str] = &["app.member_profiles", "app.user_organizations"];

async fn function_and_view_violations(
    client: &impl GenericClient,
) -> Result<Vec<Violation>, tokio_postgres::Error> {
    let mut out = Vec::new();
    let sql = concat!(
        "select p.oid::regprocedure::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace \
         where p.prosecdef and n.nspname not in ",
        system_schemas!(),
        " \
           and not exists (select 1 from unnest(coalesce(p.proconfig, '{}')) c where c like 'search_path=%')"
    );
    for row in client.query(sql, &[]).await? {
        out.push(Violation {
            rule: "definer_without_search_path",
            object: row.get(0),
            message: "SECURITY DEFINER function without a fixed search_path can be hijacked".into(),
        });
    }
    let sql = concat!(
        "select distinct v.oid::regclass::text as view, v.relkind::text as kind \
         from pg_class v join pg_namespace n on n.oid = v.relnamespace \
         join pg_rewrite r on r.ev_class = v.oid \
         join pg_depend d on d.classid = 'pg_rewrite'::regclass and d.objid = r.oid \
                          and d.refclassid = 'pg_class'::regclass \
         join pg_class t on t.oid = d.refobjid and t.oid <> v.oid \
         where v.relkind in ('v', 'm') and n.nspname not in ",
        system_schemas!(),
        " and t.relrowsecurity \
           and not coalesce(lower(array_to_string(v.reloptions, ',')) ~ 'security_invoker=(true|on|1|yes)', false) \
           and not (v.oid::regclass::text = any($1) and v.relkind = 'v' \
                    and pg_get_userbyid(v.relowner) = 'tenantry_definer' \
                    and coalesce(lower(array_to_string(v.reloptions, ',')) ~ 'security_barrier=(true|on|1|yes)', false))"
    );
    for row in client.query(sql, &[&DEFINER_VIEWS]).await? {
        let kind: String = row.get("kind");
        out.push(Violation {
            rule: "view_not_security_invoker",
            object: row.get("view"),
            message: if kind == "m" {
                "materialized view over a table with RLS: it stores rows without any policy".into()
            } else {
                "view over a table with RLS runs as its owner; create it WITH (security_invoker = true)"
                    .into()
            },
        });
    }
    Ok(out)
}

/// The tables whose changes can alter a principal's standing. Flag evaluation caches standings
/// (`crate::flags::StandingCache`), so each must announce its changes with app.standing_notify().
const STANDING_TABLES: &[&str] = &[
    "memberships",
    "role_permissions",
    "api_keys",
    "organizations",
    "sessions",
    "users",
    "builtin_role_permissions",
];

async fn standing_violations(client: &impl GenericClient) -> Result<Vec<Violation>, tokio_postgres::Error> {
    let mut out = Vec::new();
    for table in STANDING_TABLES {
        let announced: bool = client
            .query_one(
                "select exists (select 1 from pg_trigger t join pg_class c on c.oid = t.tgrelid \
                   join pg_namespace n on n.oid = c.relnamespace \
                   where n.nspname = 'public' and c.relname = $1 and not t.tgisinternal and t.tgenabled <> 'D' \
                     and t.tgfoid = 'app.standing_notify()'::regprocedure)",
                &[table],
            )
            .await?
            .get(0);
        if !announced {
            out.push(Violation {
                rule: "standing_change_unannounced",
                object: format!("public.{table}"),
                message:
                    "changes here can alter a principal's standing but send no NOTIFY tenantry_standing: \
                          cached flag evaluations would outlive them"
                        .into(),
            });
        }
    }
    Ok(out)
}

/// The definer (`tenantry_definer`) sees across tenants only through the one policy written for
/// it, on exactly the tables it is granted: it can neither log in nor bypass RLS, and the app
/// role cannot become it.
async fn definer_violations(
    client: &impl GenericClient,
    app_role: &str,
) -> Result<Vec<Violation>, tokio_postgres::Error> {
    const DEFINER: &str = "tenantry_definer";
    let mut out = Vec::new();
    let violation = |rule, object: String, message: &str| Violation { rule, object, message: message.into() };
    let Some(role) = client
        .query_opt(
            // On Citus the definer logs in to the workers (sql/01_roles.sql, README "Scaling out").
            "select rolcanlogin and not exists (select 1 from pg_extension where extname = 'citus'), \
                    rolsuper, rolbypassrls, pg_has_role($2, oid, 'MEMBER') \
             from pg_roles where rolname = $1",
            &[&DEFINER, &app_role],
        )
        .await?
    else {
        out.push(violation("definer_missing", DEFINER.into(), "the definer role does not exist"));
        return Ok(out);
    };
    if role.get::<_, bool>(0) {
        out.push(violation("definer_can_log_in", DEFINER.into(), "nobody may log in as the definer"));
    }
    if role.get::<_, bool>(1) || role.get::<_, bool>(2) {
        out.push(violation(
            "definer_bypasses_rls",
            DEFINER.into(),
            "the definer is SUPERUSER or BYPASSRLS; re-apply sql/01_roles.sql as a superuser \
             (it sees across tenants through its policies alone)",
        ));
    }
    if app_role != DEFINER && role.get::<_, bool>(3) {
        out.push(violation(
            "app_role_definer_member",
            app_role.into(),
            "the app role can become the definer, which sees every tenant",
        ));
    }
    // Every policy that names the definer: only it, only as `definer_across_tenants`, and only
    // where it holds a privilege (the grants are the specification, policies/zz_definer.sql).
    let granted = "(has_table_privilege($1, c.oid, 'SELECT, INSERT, UPDATE, DELETE') \
                    or has_any_column_privilege($1, c.oid, 'SELECT, INSERT, UPDATE'))";
    let sql = format!(
        "select c.oid::regclass::text as name, p.polname, \
                p.polroles = array[(select oid from pg_roles where rolname = $1)] as only_definer, \
                {granted} as granted \
           from pg_policy p join pg_class c on c.oid = p.polrelid \
          where (select oid from pg_roles where rolname = $1) = any(p.polroles)"
    );
    for row in client.query(&sql, &[&DEFINER]).await? {
        let name: String = row.get("name");
        let polname: String = row.get("polname");
        let object = format!("{name}.{polname}");
        if !row.get::<_, bool>("only_definer") {
            out.push(violation(
                "definer_policy_shared",
                object,
                "a policy names the definer together with other roles",
            ));
        } else if polname != "definer_across_tenants" {
            out.push(violation(
                "definer_policy_unexpected",
                object,
                "the definer's only policy is definer_across_tenants (policies/zz_definer.sql)",
            ));
        } else if !row.get::<_, bool>("granted") {
            out.push(violation(
                "definer_policy_ungranted",
                object,
                "the definer holds no privilege here, so it needs no view across tenants",
            ));
        }
    }
    let sql = format!(
        "select c.oid::regclass::text from pg_class c join pg_namespace n on n.oid = c.relnamespace \
          where n.nspname = 'public' and c.relkind in ('r', 'p') and c.relrowsecurity and {granted} \
            and not exists (select 1 from pg_policy p where p.polrelid = c.oid \
                              and p.polname = 'definer_across_tenants')"
    );
    for row in client.query(&sql, &[&DEFINER]).await? {
        out.push(violation(
            "definer_policy_missing",
            row.get(0),
            "the definer is granted this table but has no policy on it: its functions see no rows",
        ));
    }
    Ok(out)
}

/// The backup role (`tenantry_backup`, only where a superuser installed tenantry; the one login
/// role that bypasses RLS) must stay read-only and unprivileged.
async fn backup_role_violations(
    client: &impl GenericClient,
) -> Result<Vec<Violation>, tokio_postgres::Error> {
    let mut out = Vec::new();
    let exists =
        client.query_opt("select rolsuper from pg_roles where rolname = 'tenantry_backup'", &[]).await?;
    let Some(role) = exists else { return Ok(out) };
    if role.get::<_, bool>(0) {
        out.push(Violation {
            rule: "backup_role_privileged",
            object: "tenantry_backup".into(),
            message: "the backup role is a superuser; it must only read".into(),
        });
    }
    let writable = client
        .query(
            "select c.oid::regclass::text from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where n.nspname = 'public' and c.relkind in ('r', 'p') \
               and has_table_privilege('tenantry_backup', c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')",
            &[],
        )
        .await?;
    for row in writable {
        out.push(Violation {
            rule: "backup_role_writes",
            object: row.get(0),
            message: "the backup role bypasses RLS; it must not be able to write".into(),
        });
    }
    Ok(out)
}

/// Every violation in the database `client` is connected to, for `app_role`.
pub async fn run(
    client: &impl GenericClient,
    app_role: &str,
) -> Result<Vec<Violation>, tokio_postgres::Error> {
    let mut out = role_violations(client, app_role).await?;
    out.extend(table_violations(client, app_role).await?);
    out.extend(function_and_view_violations(client).await?);
    out.extend(policy_helper_violations(client).await?);
    out.extend(standing_violations(client).await?);
    out.extend(definer_violations(client, app_role).await?);
    out.extend(backup_role_violations(client).await?);
    if super::citus::is_citus(client).await? {
        out.extend(super::citus::distribution_violations(client).await?);
    }
    Ok(out)
}

pub struct Readiness {
    pub role: String,
    pub applied_version: i64,
    pub expected_version: i64,
    pub violations: Vec<Violation>,
}

/// Readiness as the app role itself: connect, read the migration version, run the check.
/// Everything in one transaction, so it also runs behind a transaction-pooling PgBouncer.
pub async fn readiness(pool: &Pool) -> Result<Readiness, DbError> {
    let mut client = pool.get().await?;
    let client = client.transaction().await?;
    let role: String = client.query_one("select current_user::text", &[]).await?.get(0);
    let applied_version: i64 = client
        .query_one("select coalesce(max(version), 0)::int8 from refinery_schema_history", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(0);
    let violations = run(&*client, &role).await?;
    client.commit().await?;
    Ok(Readiness { role, applied_version, expected_version: super::migrate::latest_version(), violations })
}

/// The start-up guard: the server's own role must not be able to bypass RLS.
pub async fn refuse_privileged_app_role(pool: &Pool) -> anyhow::Result<()> {
    let mut client =
        pool.get().await.map_err(|e| anyhow::anyhow!("connecting with TENANTRY_DATABASE_URL: {e}"))?;
    let client = client.transaction().await?;
    let role: String = client.query_one("select current_user::text", &[]).await?.get(0);
    let violations: Vec<Violation> = role_violations(&*client, &role)
        .await?
        .into_iter()
        .chain(
            table_violations(&*client, &role)
                .await?
                .into_iter()
                .filter(|v| v.rule == "rls_not_forced" || v.rule == "rls_disabled"),
        )
        .collect();
    if !violations.is_empty() {
        let list: Vec<String> = violations.iter().map(ToString::to_string).collect();
        anyhow::bail!(
            "refusing to start: the server's database role {role} could bypass row-level security:\n{}",
            list.join("\n")
        );
    }
    Ok(())
}
