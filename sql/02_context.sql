-- Schema `app`: the request context helpers the policies read. Apply as (or SET ROLE to) the owner
-- after 01_roles.sql. Idempotent. The app role may USE this schema, never create in it.
set role tenantry_owner;

create schema if not exists app authorization tenantry_owner;
revoke all on schema app from public;
grant usage on schema app to tenantry_app;
-- The definer owns the SECURITY DEFINER functions below, and an owner needs CREATE on their schema.
grant usage, create on schema app to tenantry_definer;

-- The caller's user id, set by the server transaction-locally with
--   select set_config('app.current_user_id', $1, true)
-- NULL when missing or empty: a setting that was ever used on a connection reads back as ''.
create or replace function app.current_user_id() returns uuid
language sql stable parallel safe
as $$ select nullif(pg_catalog.current_setting('app.current_user_id', true), '')::uuid $$;

-- Do the row checks bind this write? They are triggers standing in for a policy that would need
-- another row (a policy reads only the sealed context, so that a Citus shard can evaluate it),
-- and bind exactly whom the policies bind: a caller subject to row-level security on the table,
-- other than the definer (whose functions decide for themselves), in a statement of its own
-- rather than a foreign key's cascade (which policies do not see either).
create or replace function app.row_checks_apply(p_table oid) returns boolean
language sql stable
as $$ select pg_catalog.pg_trigger_depth() = 1 and pg_catalog.row_security_active(p_table)
             and current_user <> 'tenantry_definer' $$;
revoke all on function app.row_checks_apply(oid) from public;
grant execute on function app.row_checks_apply(oid) to tenantry_app, tenantry_definer;

-- The table a trigger fired on, as the schema names it: on a Citus worker a trigger fires on a
-- shard, `<table>_<shard id>` (tenantry check keeps every table's own name free of such a tail).
create or replace function app.logical_table_name(p_name name) returns text
language sql immutable parallel safe
as $$ select pg_catalog.regexp_replace(p_name, '_[0-9]+$', '') $$;
revoke all on function app.logical_table_name(name) from public;
grant execute on function app.logical_table_name(name) to tenantry_app, tenantry_definer;

-- Did the trigger fire on a Citus shard? A shard's trigger runs on a worker, inside a transaction
-- the coordinator may commit in two phases, which a NOTIFY would make fail; and no server listens
-- on a worker. The NOTIFY triggers stay quiet there, and the caches they would invalidate fall back
-- on their time-to-live (README, "Scaling out").
create or replace function app.fired_on_shard(p_name name) returns boolean
language sql immutable parallel safe
as $$ select p_name::text <> app.logical_table_name(p_name) $$;
revoke all on function app.fired_on_shard(name) from public;
grant execute on function app.fired_on_shard(name) to tenantry_app, tenantry_definer;

-- The organization named by the request's URL. NOT proof of membership: policies use
-- app.current_org_id(), which returns this value only when the current user is a member.
create or replace function app.requested_org_id() returns uuid
language sql stable parallel safe
as $$ select nullif(pg_catalog.current_setting('app.current_organization_id', true), '')::uuid $$;

revoke all on function app.current_user_id(), app.requested_org_id() from public;
grant execute on function app.current_user_id(), app.requested_org_id()
  to tenantry_app, tenantry_definer;

-- The session a user's access token belongs to (tokens from other issuers have none).
create or replace function app.current_session_id() returns uuid
language sql stable parallel safe
as $$ select nullif(pg_catalog.current_setting('app.current_session_id', true), '')::uuid $$;

-- The API key a service principal authenticated with (then there is no current user).
create or replace function app.current_api_key_id() returns uuid
language sql stable parallel safe
as $$ select nullif(pg_catalog.current_setting('app.current_api_key_id', true), '')::uuid $$;

revoke all on function app.current_session_id(), app.current_api_key_id() from public;
grant execute on function app.current_session_id(), app.current_api_key_id()
  to tenantry_app, tenantry_definer;

-- The region this server instance serves, set by the server in every transaction. Policies give
-- access only to organizations of this region; without it, none (fail closed).
create or replace function app.current_region() returns text
language sql stable parallel safe
as $$ select nullif(pg_catalog.current_setting('app.current_region', true), '') $$;

revoke all on function app.current_region() from public;
grant execute on function app.current_region() to tenantry_app, tenantry_definer;

-- A worker's claim on one workflow run (app.claim_next_run() issues it), set transaction-locally
-- like the other settings. Policies admit its run's organization while the claim holds.
create or replace function app.current_run_claim() returns uuid
language sql stable parallel safe
as $$ select nullif(pg_catalog.current_setting('app.current_run_claim', true), '')::uuid $$;
revoke all on function app.current_run_claim() from public;
grant execute on function app.current_run_claim() to tenantry_app, tenantry_definer;

-- A dispatcher's claim on one webhook delivery (app.claim_next_delivery() issues it), set
-- transaction-locally like the others. Policies admit that delivery's organization, and let it
-- read that delivery, its event and its endpoint, while the claim holds.
create or replace function app.current_delivery_claim() returns uuid
language sql stable parallel safe
as $$ select nullif(pg_catalog.current_setting('app.current_delivery_claim', true), '')::uuid $$;
revoke all on function app.current_delivery_claim() from public;
grant execute on function app.current_delivery_claim() to tenantry_app, tenantry_definer;

-- A payment webhook's processing token (random, per delivery), set transaction-locally while the
-- event is applied. Policies admit the event's organization only while that event is processing.
create or replace function app.current_webhook_token() returns uuid
language sql stable parallel safe
as $$ select nullif(pg_catalog.current_setting('app.current_webhook_token', true), '')::uuid $$;
revoke all on function app.current_webhook_token() from public;
grant execute on function app.current_webhook_token() to tenantry_app, tenantry_definer;

-- The verified context. app.enter_context() (sql/04_principal.sql) checks the principal once, at
-- the start of the transaction, and records what it found in three settings: the organization it
-- admitted (`app.verified_org`), the permissions held there (`app.verified_permissions`) and the
-- workspaces it is restricted to (`app.verified_workspaces`, '' when unrestricted). It then seals
-- them, with every input setting and this transaction's binding, under a key only the definer
-- reads (`app.context_seal`). The policy helpers read those settings only while the seal verifies,
-- so the app role can name an organization, or set any of them by hand, and be admitted nowhere:
-- without the key it cannot seal a context, and a seal from another transaction is worthless.
-- Policies therefore read settings, never other tables: a sharded database (Citus) evaluates a
-- policy on the worker that holds the shard, where a lookup in another distributed table is not
-- possible (README, "Scaling out").
--
-- The key: two random 64-byte halves for a nested SHA-256 MAC (HMAC's construction, with
-- independent halves), made by this database once and never leaving it. A transaction's seal
-- lives only as long as the transaction, so replacing the row (a rotation) costs nothing but the
-- transactions in flight.
create table if not exists app.context_keys (
  singleton boolean primary key default true check (singleton),
  inner_key bytea not null check (octet_length(inner_key) = 64),
  outer_key bytea not null check (octet_length(outer_key) = 64),
  created_at timestamptz not null default now()
);
revoke all on app.context_keys from public, tenantry_app;
grant select on app.context_keys to tenantry_definer;
-- gen_random_uuid() draws from the server's strong random source: four of them hold 488 random
-- bits, in 64 bytes.
insert into app.context_keys (inner_key, outer_key)
select pg_catalog.decode(pg_catalog.replace(r.a || r.b || r.c || r.d, '-', ''), 'hex'),
       pg_catalog.decode(pg_catalog.replace(r.e || r.f || r.g || r.h, '-', ''), 'hex')
  from (select gen_random_uuid()::text a, gen_random_uuid()::text b, gen_random_uuid()::text c,
               gen_random_uuid()::text d, gen_random_uuid()::text e, gen_random_uuid()::text f,
               gen_random_uuid()::text g, gen_random_uuid()::text h) r
on conflict (singleton) do nothing;

-- On Citus the key is needed where the policies run, on every worker, and must stay a plain table
-- there: a policy helper that read a distributed or reference table would be a distributed query
-- nested in a shard's, which Citus refuses. This copies the coordinator's key into each worker's
-- own app.context_keys, readable by the definer alone (the command travels over Citus's
-- connections to the workers: keep citus.log_remote_commands off while it runs). The admin runs
-- it after distributing and after every rotation (app.rotate_context_key() does it itself).
create or replace procedure app.share_context_key()
language plpgsql
set search_path = pg_catalog, pg_temp
as $share$
declare
  v_failed text;
begin
  select string_agg(r.nodename || ':' || r.nodeport || ' ' || r.result, '; ') into v_failed
    from run_command_on_workers(
           (select format($cmd$do $do$ begin
                  -- A worker's own table, not a schema change for Citus to pass on.
                  set local citus.enable_ddl_propagation = off;
                  create table if not exists app.context_keys (
                    singleton boolean primary key default true check (singleton),
                    inner_key bytea not null check (octet_length(inner_key) = 64),
                    outer_key bytea not null check (octet_length(outer_key) = 64),
                    created_at timestamptz not null default now());
                  revoke all on app.context_keys from public, tenantry_app;
                  grant select on app.context_keys to tenantry_definer;
                  insert into app.context_keys (inner_key, outer_key, created_at) values (%L, %L, %L)
                  on conflict (singleton) do update
                    set inner_key = excluded.inner_key, outer_key = excluded.outer_key,
                        created_at = excluded.created_at;
                  alter function app.context_seal(text, text, text, text) stable;
                  end $do$
                  $cmd$, k.inner_key, k.outer_key, k.created_at)
              from app.context_keys k)) r
   where not r.success;
  if v_failed is not null then
    raise exception 'sharing the context key failed on: %', v_failed;
  end if;
end
$share$;
revoke all on procedure app.share_context_key() from public;

-- The sealed message: what ties the seal to its transaction (this backend and the instant the
-- transaction began: constant within it, different in the next one), every context setting as
-- the app role set it, and the verified values (given, so app.enter_context() seals them in the
-- same statement that sets them). Each is quoted as a literal (NULL unquoted), so no two
-- contexts frame to the same text and a change to any setting breaks the seal. One format()
-- call: the helpers rebuild it on every call, so it must be cheap.
drop function if exists app.context_binding();
drop function if exists app.context_message();
drop function if exists app.context_message(text, text, text);
--
-- The transaction's binding: on PostgreSQL, this backend and the instant its transaction began.
-- On Citus, a policy is evaluated on the worker holding the shard, in a backend of its own that
-- began later; what the coordinator and every worker share there is the distributed transaction
-- id (the initiating node, a number from its counter, the instant it was assigned), which Citus
-- assigns at the transaction's first use of a distributed or reference table (app.enter_context()
-- makes one, reading organizations, before it seals) and hands to each worker it opens. Without
-- one there is no binding (NULL), and app.enter_context() refuses to seal.
do $binding$
begin
  if exists (select 1 from pg_catalog.pg_extension where extname = 'citus') then
    create or replace function app.context_binding() returns text
    language sql stable
    as $$ select 'citus ' || t.initiator_node_identifier || ':' || t.transaction_number || '@'
                 || extract(epoch from t.transaction_stamp)
            from pg_catalog.get_current_transaction_id() t where t.transaction_number <> 0 $$;
  else
    create or replace function app.context_binding() returns text
    language sql stable parallel safe
    as $$ select pg_catalog.pg_backend_pid() || '@' || extract(epoch from pg_catalog.now()) $$;
  end if;
end
$binding$;
revoke all on function app.context_binding() from public, tenantry_app;
grant execute on function app.context_binding() to tenantry_definer;

create or replace function app.context_message(p_org text, p_permissions text, p_workspaces text, p_claim text)
returns text
language sql stable parallel safe
as $$ select pg_catalog.format('%s %L %L %L %L %L %L %L %L %L %L %L %L',
    app.context_binding(),
    pg_catalog.current_setting('app.current_user_id', true),
    pg_catalog.current_setting('app.current_session_id', true),
    pg_catalog.current_setting('app.current_api_key_id', true),
    pg_catalog.current_setting('app.current_organization_id', true),
    pg_catalog.current_setting('app.current_region', true),
    pg_catalog.current_setting('app.current_run_claim', true),
    pg_catalog.current_setting('app.current_webhook_token', true),
    pg_catalog.current_setting('app.current_delivery_claim', true),
    p_org, p_permissions, p_workspaces, p_claim) $$;
revoke all on function app.context_message(text, text, text, text) from public, tenantry_app;
grant execute on function app.context_message(text, text, text, text) to tenantry_definer;

-- Every SECURITY DEFINER function in the files that follow is installed through this: owned by
-- tenantry_definer, callable by nobody by default, and by the roles named (the app role for the
-- doors it may use; nobody for the internal helpers). Each file ends with its list, so a reviewer
-- sees in one place which doors a file opens and for whom.
drop procedure if exists app.install_definer(text, text[]);
create or replace procedure app.install_definer(p_functions text[], p_callers text[])
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  v_function text;
  v_role text;
begin
  foreach v_function in array p_functions loop
    execute format('alter function %s owner to tenantry_definer', v_function);
    execute format('revoke all on function %s from public', v_function);
    foreach v_role in array p_callers loop
      execute format('grant execute on function %s to %I', v_function, v_role);
    end loop;
  end loop;
end
$$;
revoke all on procedure app.install_definer(text[], text[]) from public;
