-- Who is calling, and what may it do here? The helpers every policy reads, and the checks that
-- keep any grant within what the granting principal holds. Apply after 03_audit.sql.
set role tenantry_owner;
set check_function_bodies = off;

-- The organization app.enter_context() admitted this transaction to, while its seal verifies;
-- else NULL. Every tenant policy compares against this. It reads settings and the key, never
-- another table, so a policy is decided where its rows are (on a Citus worker too), and the app
-- role, which can set any setting but cannot read the key, cannot make it answer anything the
-- database did not verify in this transaction.
--
-- These helpers are plpgsql rather than SQL on purpose: a SECURITY DEFINER SQL function is never
-- inlined, and PostgreSQL re-plans a non-inlined SQL function on every call (measured: 0.67 ms
-- per statement), while plpgsql caches its plans for the life of the connection.
create or replace function app.current_org_id() returns uuid
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return case when app.context_verified() then nullif(current_setting('app.verified_org', true), '')::uuid end;
end
$$;

-- Internal (the definer's only): this database's context key, the inner half then the outer one.
-- IMMUTABLE on purpose, though it reads a table: a helper's plan folds it into a constant when
-- it is first planned on a connection, so verifying a seal afterwards reads no table (measured:
-- 5 us a call). Rotating the key is app.rotate_context_key(), which also invalidates every plan
-- that folded the old key.
create or replace function app.context_key() returns bytea
language sql immutable
as $$ select k.inner_key || k.outer_key from app.context_keys k $$;

-- Internal: the seal (hex) of this transaction's context with these verified values: a nested
-- SHA-256 MAC of app.context_message() under the key. Plain SQL, so it is inlined into the
-- helpers that call it.
drop function if exists app.context_seal();
drop function if exists app.context_seal(text, text, text, text);
create or replace function app.context_seal(p_org text, p_permissions text, p_workspaces text, p_claim text)
returns text
language sql stable
as $$ select encode(sha256(substr(app.context_key(), 65)
                          || sha256(substr(app.context_key(), 1, 64)
                                    || convert_to(app.context_message(p_org, p_permissions, p_workspaces, p_claim), 'UTF8'))),
                   'hex') $$;

-- Internal: does `app.context_seal` seal this transaction's context as it stands? Compared as
-- digests, so the time the comparison takes says nothing about the seal expected.
create or replace function app.context_verified() returns boolean
language sql stable
as $$ select sha256(convert_to(coalesce(current_setting('app.context_seal', true), ''), 'UTF8'))
             = sha256(convert_to(app.context_seal(current_setting('app.verified_org', true),
                                                  current_setting('app.verified_permissions', true),
                                                  current_setting('app.verified_workspaces', true),
                                                  current_setting('app.verified_claim', true)), 'UTF8')) $$;

revoke all on function app.context_key(), app.context_seal(text, text, text, text), app.context_verified() from public;
grant execute on function app.context_key(), app.context_seal(text, text, text, text), app.context_verified()
  to tenantry_definer;
drop function if exists app.context_seal_of(text);

-- Internal: part `p_part` (2, 3, ...) of the claim app.enter_context() verified, when it is a
-- claim of kind `p_kind` ('run <id> <workspace>', 'delivery <id> <endpoint> <event>') and the
-- seal verifies; else NULL.
create or replace function app.verified_claim_part(p_kind text, p_part int) returns uuid
language sql stable
as $$ select case when app.context_verified()
                   and split_part(current_setting('app.verified_claim', true), ' ', 1) = p_kind
                  then nullif(split_part(current_setting('app.verified_claim', true), ' ', p_part), '')::uuid end $$;
revoke all on function app.verified_claim_part(text, int) from public;
grant execute on function app.verified_claim_part(text, int) to tenantry_definer;

-- The run or delivery app.enter_context() verified for this transaction, by name: ('run', 'id'),
-- ('run', 'workspace'), ('delivery', 'id'), ('delivery', 'endpoint'), ('delivery', 'event').
-- NULL for any other name, for a principal holding no such claim, or without a verified context.
-- The run and dispatch policies compare with it.
create or replace function app.current_claim(p_kind text, p_part text) returns uuid
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return app.verified_claim_part(p_kind, case p_kind || '.' || p_part
                                           when 'run.id' then 2 when 'run.workspace' then 3
                                           when 'delivery.id' then 2 when 'delivery.endpoint' then 3
                                           when 'delivery.event' then 4 end);
end
$$;

-- A new context key, for a DBA who wants one (a transaction in flight when it changes is then
-- admitted nowhere for the rest of it; its next one is sealed under the new key).
create or replace procedure app.rotate_context_key()
language plpgsql
as $$
begin
  update app.context_keys
     set inner_key = decode(replace(gen_random_uuid()::text || gen_random_uuid()::text
                                    || gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'),
         outer_key = decode(replace(gen_random_uuid()::text || gen_random_uuid()::text
                                    || gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'),
         created_at = now();
  -- A plan that folded the old key recorded no dependency on app.context_key() (PostgreSQL
  -- records one only for the functions it inlines), but it did on app.context_seal(), inlined
  -- around it: touching that invalidates every such plan, on every connection.
  alter function app.context_seal(text, text, text, text) stable;
  if exists (select 1 from pg_extension where extname = 'citus') then
    call app.share_context_key();
  end if;
end
$$;
revoke all on procedure app.rotate_context_key() from public;

-- On Citus: the context settings named, as the coordinator holds them, re-set with SET LOCAL so
-- that Citus passes them to every worker this transaction uses (a set_config() stays on the
-- coordinator). The names are ours, never a caller's; the values go as literals.
create or replace function app.share_context_with_workers(p_names text[]) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  v_name text;
begin
  perform set_config('citus.propagate_set_commands', 'local', true);
  foreach v_name in array p_names loop
    execute format('set local %s = %L', v_name, coalesce(current_setting(v_name, true), ''));
  end loop;
end
$$;
revoke all on function app.share_context_with_workers(text[]) from public, tenantry_app;
grant execute on function app.share_context_with_workers(text[]) to tenantry_definer;

-- The principal of this request, checked in the same round trip as BEGIN:
--   active       false when its session is revoked or its API key revoked or expired (-> 401);
--   role         the user's role in the requested organization (NULL for an API key);
--   permissions  what it may do there (NULL: not a member, or the key is for another org);
--   home_region  set when the principal belongs to the organization but it lives in another
--                region than this instance's: the server answers 421 naming it, with no data.
drop function if exists app.current_membership();
-- (Replaced only when its shape is outdated, so re-applying this file never drops it under a
-- running server.)
do $drop$
begin
  if to_regprocedure('app.current_principal()') is not null
     and not exists (select 1 from pg_proc p where p.oid = to_regprocedure('app.current_principal()')
                     and 'suspended' = any (p.proargnames)) then
    drop function app.current_principal();
  end if;
end
$drop$;
-- The server's first call in every transaction, right after it sets the context: checks the
-- principal and, when it is admitted to the requested
-- organization, records and seals what the policy helpers may read for the rest of this
-- transaction: the organization, the permissions held there and the workspace restriction (see
-- sql/02_context.sql). Call it again after changing any context setting (the server does, when a
-- transaction moves into an organization it has just created): a changed setting breaks the seal,
-- so the transaction is admitted nowhere until then.
create or replace function app.enter_context(
  out active boolean, out role text, out permissions text[], out home_region text, out suspended boolean)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_key uuid := app.current_api_key_id();
  v_session uuid := app.current_session_id();
  v_org uuid := app.requested_org_id();
  v_region text;
  v_suspended timestamptz;
  v_restricted boolean;
  v_workspaces uuid[];
  v_verified_org text := '';
  v_verified_permissions text := '';
  v_verified_workspaces text := '';
  v_claim text := '';
  v_verified_claim text := '';
begin
  active := true;
  suspended := false;
  -- Citus (its settings exist): the inputs reach the workers as they are here, before the seal
  -- covers them.
  if current_setting('citus.propagate_set_commands', true) is not null then
    perform app.share_context_with_workers(array['app.current_user_id', 'app.current_session_id',
      'app.current_api_key_id', 'app.current_organization_id', 'app.current_region',
      'app.current_run_claim', 'app.current_webhook_token', 'app.current_delivery_claim']);
  end if;
  <<principal>>
  begin
  select o.region, o.suspended_at into v_region, v_suspended from public.organizations o where o.id = v_org;
  -- A payment webhook: billing permissions in the event's organization, while it is processed.
  if app.current_webhook_token() is not null then
    if v_org is not null and v_region is not distinct from app.current_region() and v_suspended is null
       and exists (select 1 from public.webhook_events e
                   where e.processing_token = app.current_webhook_token() and e.organization_ref = v_org
                     and e.status = 'processing') then
      permissions := array['billing:manage', 'billing:read'];
    end if;
    exit principal;
  end if;
  -- A dispatcher holding a delivery's claim: active while it delivers under that claim, with no
  -- permission at all (what it reads, the dispatch policies name; what it writes goes through
  -- app.finish_delivery()).
  if app.current_delivery_claim() is not null then
    select d.organization_id = v_org, format('delivery %s %s %s', d.id, d.endpoint_id, d.event_id)
      into active, v_claim
    from public.webhook_deliveries d
    where d.claim_token = app.current_delivery_claim() and d.status = 'delivering';
    active := coalesce(active, false);
    if active and v_region is not distinct from app.current_region() and v_suspended is null then
      permissions := '{}';
    end if;
    exit principal;
  end if;
  -- A worker holding a run's claim: active while the run is running under that claim (a cancel
  -- or a re-claim ends it), with the two permissions running a workflow needs.
  if app.current_run_claim() is not null then
    select r.organization_id = v_org, format('run %s %s', r.id, r.workspace_id)
      into active, v_claim
    from public.workflow_runs r
    where r.claim_token = app.current_run_claim() and r.status = 'running';
    active := coalesce(active, false);
    if active and v_region is not distinct from app.current_region() and v_suspended is null then
      permissions := array['runs:execute', 'workflows:read'];
    end if;
    exit principal;
  end if;
  if v_session is not null then
    active := exists (select 1 from public.sessions s
                      where s.id = v_session and s.user_id = app.current_user_id()
                        and s.revoked_at is null and s.absolute_expires_at > now());
  end if;
  if v_key is not null then
    select k.revoked_at is null and (k.expires_at is null or k.expires_at > now()),
           case when k.organization_id = v_org then k.scopes end,
           case when k.organization_id = v_org then k.workspace_ids end
      into active, permissions, v_workspaces
    from public.api_keys k
    where k.id = v_key;
    active := coalesce(active, false);
    if not active then
      permissions := null;
    elsif permissions is not null and v_region is distinct from app.current_region() then
      home_region := v_region;
      permissions := null;
    elsif permissions is not null and v_suspended is not null then
      suspended := true;
      permissions := null;
    end if;
    exit principal;
  end if;
  if v_org is not null then
    select m.role, m.restricted,
           case when m.role = 'custom' then
             coalesce((select array_agg(cp.permission order by cp.permission)
                       from public.role_permissions cp
                       where cp.organization_id = m.organization_id and cp.role_id = m.custom_role_id), '{}')
           else
             coalesce((select array_agg(rp.permission order by rp.permission)
                       from public.builtin_role_permissions rp
                       where rp.role = m.role), '{}')
           end
      into role, v_restricted, permissions
    from public.memberships m
    where m.organization_id = v_org and m.user_id = app.current_user_id();
    if permissions is not null and v_region is distinct from app.current_region() then
      home_region := v_region;
      role := null;
      permissions := null;
    elsif permissions is not null and v_suspended is not null then
      suspended := true;
      role := null;
      permissions := null;
    elsif v_restricted then
      v_workspaces := array(select mw.workspace_id from public.member_workspaces mw
                            where mw.organization_id = v_org and mw.user_id = app.current_user_id()
                            order by mw.workspace_id);
    end if;
  end if;
  end;
  -- What the policies may read for the rest of the transaction, and its seal.
  if active and permissions is not null and v_org is not null then
    v_verified_org := v_org::text;
    v_verified_permissions := permissions::text;
    v_verified_workspaces := coalesce(v_workspaces::text, '');
    v_verified_claim := coalesce(v_claim, '');
    -- On Citus, reading organizations above gave the transaction its distributed id; a seal
    -- bound to nothing could be replayed, so there is none without it.
    if app.context_binding() is null then
      raise exception 'no distributed transaction id to bind the context to' using errcode = 'XX000';
    end if;
  end if;
  perform set_config('app.verified_org', v_verified_org, true),
          set_config('app.verified_permissions', v_verified_permissions, true),
          set_config('app.verified_workspaces', v_verified_workspaces, true),
          set_config('app.verified_claim', v_verified_claim, true),
          set_config('app.context_seal',
                     app.context_seal(v_verified_org, v_verified_permissions, v_verified_workspaces,
                                      v_verified_claim), true);
  if current_setting('citus.propagate_set_commands', true) is not null then
    perform app.share_context_with_workers(array['app.verified_org', 'app.verified_permissions',
      'app.verified_workspaces', 'app.verified_claim', 'app.context_seal']);
  end if;
end
$$;

-- The principal check under its former name, for servers of the previous release while a rolling
-- deploy replaces them (they call it where the server now calls app.enter_context(), and the
-- policies admit only a sealed context). Drop it once no such server runs.
create or replace function app.current_principal(
  out active boolean, out role text, out permissions text[], out home_region text, out suspended boolean)
language sql volatile security invoker
set search_path = pg_catalog, pg_temp
as $$ select e.active, e.role, e.permissions, e.home_region, e.suspended from app.enter_context() e $$;
alter function app.current_principal() owner to tenantry_owner;
revoke all on function app.current_principal() from public;
grant execute on function app.current_principal() to tenantry_app;


-- Does the principal hold `permission` in the organization in context? Write policies call it.
create or replace function app.has_permission(permission text) returns boolean
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  -- Not admitted (not a member, another region, no context, or a forged one): no permissions.
  return app.context_verified()
         and coalesce(has_permission.permission
                      = any (nullif(current_setting('app.verified_permissions', true), '')::text[]), false);
end
$$;

-- Workspace restrictions of the principal in context, as app.enter_context() found them. A
-- member is restricted when their membership says so (`memberships.restricted`), to the
-- workspaces listed in member_workspaces (none left: no workspace at all). An API key is
-- restricted when it carries `workspace_ids` (a restricted member's keys always do). A worker and
-- a payment webhook act for the whole organization. Without a verified context a principal is
-- restricted to nothing at all (and app.current_org_id(), which every policy also requires,
-- admits it nowhere anyway).
create or replace function app.workspace_restricted() returns boolean
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return not app.context_verified()
         or coalesce(current_setting('app.verified_org', true), '') = ''
         or coalesce(current_setting('app.verified_workspaces', true), '') <> '';
end
$$;

create or replace function app.allowed_workspace_ids() returns setof uuid
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if app.context_verified() then
    return query select unnest(nullif(current_setting('app.verified_workspaces', true), '')::uuid[]);
  end if;
end
$$;

-- May a read policy show a row of workspace `p_id`? Every workspace when the principal is not
-- restricted; else the ones app.enter_context() recorded. Plain SQL over the sealed setting, so
-- it is inlined and costs a setting read per row (a list of 20 rows pays 20 calls; a definer
-- function costs 10 us a call). It does not check the seal itself: every policy that calls it
-- also compares organization_id with app.current_org_id(), which does, at the start of the scan
-- (as an index condition) or on every row; a setting changed between statements breaks the seal
-- and the policy admits nothing. What it cannot see is a statement that changes the setting
-- halfway through its own rows: only SQL run as the app role can do that, and that SQL can name
-- any unrestricted member of the organization anyway (the database trusts the server for who the
-- caller is, and checks what that caller may reach). Write policies use app.workspace_allowed().
-- (Written so that no part of it fails on its own: Citus evaluates a write's stable expressions
-- on the coordinator piece by piece, and casting the unrestricted '' to uuid[] failed there.)
create or replace function app.workspace_visible(p_id uuid) returns boolean
language sql stable
as $$ select case when coalesce(pg_catalog.current_setting('app.verified_workspaces', true), '') = '' then true
               else p_id = any (nullif(pg_catalog.current_setting('app.verified_workspaces', true), '')::uuid[]) end $$;
revoke all on function app.workspace_visible(uuid) from public;
grant execute on function app.workspace_visible(uuid) to tenantry_app, tenantry_definer;

-- May a write policy touch a row of workspace `p_id`? The same answer, from a verified context
-- only, checked on every row (writes touch few rows; the seal's check costs microseconds).
create or replace function app.workspace_allowed(p_id uuid) returns boolean
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return app.context_verified() and coalesce(current_setting('app.verified_org', true), '') <> ''
         and app.workspace_visible(p_id);
end
$$;

-- The principal's permissions in the organization in context (NULL: none there).
create or replace function app.current_permissions() returns text[]
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return case when app.context_verified() then nullif(current_setting('app.verified_permissions', true), '')::text[] end;
end
$$;

-- What a role grants in the organization in context: a built-in role's permissions, or those of
-- one of this organization's custom roles (another organization's role grants nothing here).
create or replace function app.role_grants(p_role text, p_custom_role uuid) returns text[]
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return app.role_grants_in(app.current_org_id(), p_role, p_custom_role);
end
$$;

-- Internal (definer functions only): the user in context, or an error when there is none.
create or replace function app.require_user() returns uuid
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if app.current_user_id() is null then
    raise exception 'no current user' using errcode = '42501';
  end if;
  return app.current_user_id();
end
$$;

-- Internal (definer functions only): what a role grants in `p_org`, and what a member holds there.
create or replace function app.role_grants_in(p_org uuid, p_role text, p_custom_role uuid) returns text[]
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if p_role = 'custom' then
    return coalesce((select array_agg(cp.permission order by cp.permission)
                     from public.role_permissions cp
                     where cp.organization_id = p_org and cp.role_id = p_custom_role), '{}');
  end if;
  return coalesce((select array_agg(rp.permission order by rp.permission)
                   from public.builtin_role_permissions rp where rp.role = p_role), '{}');
end
$$;

create or replace function app.member_permissions(p_org uuid, p_user uuid) returns text[]
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return (select app.role_grants_in(m.organization_id, m.role, m.custom_role_id)
          from public.memberships m where m.organization_id = p_org and m.user_id = p_user);
end
$$;

-- May the principal in context give `p_role` (a custom one: `p_custom_role`) to someone, or act on
-- someone who holds it? Only if it holds every permission the role grants, so no grant can ever
-- exceed the granter (an admin cannot make an owner: owners hold org:delete and owners:manage).
-- The membership, invitation and provider-grant policies call it for the row before and after.
create or replace function app.can_grant_role(p_role text, p_custom_role uuid) returns boolean
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_held text[] := app.current_permissions();
begin
  if v_held is null or p_role is null then
    return false;
  end if;
  return app.role_grants(p_role, p_custom_role) <@ v_held;
end
$$;

-- Is `p_workspaces` (a key's or an invitation's restriction; NULL: unrestricted) within the
-- principal's own? An unrestricted principal may hand out anything; a restricted one only a
-- non-empty subset of its own workspaces, so a restriction always travels with what it creates.
create or replace function app.within_restriction(p_workspaces uuid[]) returns boolean
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if not app.workspace_restricted() then
    return true;
  end if;
  return p_workspaces is not null and cardinality(p_workspaces) > 0
         and p_workspaces <@ array(select app.allowed_workspace_ids());
end
$$;

-- Does every workspace `p_user` may work in (in the organization in context) lie within the
-- principal's own? True for an unrestricted principal. A restricted principal may act only on
-- members who are restricted themselves, to its own workspaces or fewer: it can never touch, and
-- so never widen or remove, anyone whose reach is broader than its own.
create or replace function app.member_within_restriction(p_user uuid) returns boolean
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if not app.workspace_restricted() then
    return true;
  end if;
  return exists (select 1 from public.memberships m
                 where m.organization_id = app.requested_org_id() and m.user_id = p_user and m.restricted)
     and not exists (select 1 from public.member_workspaces mw
                     where mw.organization_id = app.requested_org_id() and mw.user_id = p_user
                       and mw.workspace_id not in (select app.allowed_workspace_ids()));
end
$$;

call app.install_definer(array[
    'app.current_org_id()', 'app.enter_context()', 'app.current_claim(text, text)', 'app.has_permission(text)',
    'app.workspace_restricted()', 'app.allowed_workspace_ids()', 'app.workspace_allowed(uuid)', 'app.current_permissions()',
    'app.role_grants(text, uuid)', 'app.can_grant_role(text, uuid)', 'app.within_restriction(uuid[])',
    'app.member_within_restriction(uuid)'
], '{tenantry_app}');
call app.install_definer(array['app.require_user()', 'app.role_grants_in(uuid, text, uuid)',
                               'app.member_permissions(uuid, uuid)'], '{}');
