-- Who is calling, and what may it do here? The helpers every policy reads, and the checks that
-- keep any grant within what the granting principal holds. Apply after 03_audit.sql.
set role tenantry_owner;
set check_function_bodies = off;

-- The requested organization, only if the current user is a member of it; else NULL.
-- Every tenant policy compares against this, wrapped as (select app.current_org_id()) so it is
-- evaluated once per statement. Membership is therefore re-verified by the database on every
-- statement: setting the organization id alone grants nothing.
--
-- These helpers are plpgsql rather than SQL on purpose: a SECURITY DEFINER SQL function is never
-- inlined, and PostgreSQL re-plans a non-inlined SQL function on every call (measured: 0.67 ms
-- per statement), while plpgsql caches its plans for the life of the connection.
--
-- A service principal (an API key) gets its own organization, only while the key is active.
create or replace function app.current_org_id() returns uuid
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  -- Only organizations homed in this instance's region exist here.
  if not exists (select 1 from public.organizations o
                 where o.id = app.requested_org_id() and o.region = app.current_region()
                   and o.suspended_at is null) then
    return null;
  end if;
  -- A payment webhook: the organization of the event being processed in this transaction.
  if app.current_webhook_token() is not null then
    return (select e.organization_ref
            from public.webhook_events e
            where e.processing_token = app.current_webhook_token()
              and e.organization_ref = app.requested_org_id()
              and e.status = 'processing');
  end if;
  -- A dispatcher: the organization of the delivery it holds the claim on, while it delivers it.
  if app.current_delivery_claim() is not null then
    return (select d.organization_id
            from public.webhook_deliveries d
            where d.claim_token = app.current_delivery_claim()
              and d.organization_id = app.requested_org_id()
              and d.status = 'delivering');
  end if;
  -- A worker: the organization of the run it holds the claim on, while that run is running.
  if app.current_run_claim() is not null then
    return (select r.organization_id
            from public.workflow_runs r
            where r.claim_token = app.current_run_claim()
              and r.organization_id = app.requested_org_id()
              and r.status = 'running');
  end if;
  if app.current_api_key_id() is not null then
    return (select k.organization_id
            from public.api_keys k
            where k.id = app.current_api_key_id()
              and k.organization_id = app.requested_org_id()
              and k.revoked_at is null
              and (k.expires_at is null or k.expires_at > now()));
  end if;
  return (select m.organization_id
          from public.memberships m
          where m.organization_id = app.requested_org_id()
            and m.user_id = app.current_user_id());
end
$$;

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
create or replace function app.current_principal(
  out active boolean, out role text, out permissions text[], out home_region text, out suspended boolean)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_key uuid := app.current_api_key_id();
  v_session uuid := app.current_session_id();
  v_org uuid := app.requested_org_id();
  v_region text;
  v_suspended timestamptz;
begin
  active := true;
  suspended := false;
  select o.region, o.suspended_at into v_region, v_suspended from public.organizations o where o.id = v_org;
  -- A payment webhook: billing permissions in the event's organization, while it is processed.
  if app.current_webhook_token() is not null then
    if v_org is not null and v_region is not distinct from app.current_region() and v_suspended is null
       and exists (select 1 from public.webhook_events e
                   where e.processing_token = app.current_webhook_token() and e.organization_ref = v_org
                     and e.status = 'processing') then
      permissions := array['billing:manage', 'billing:read'];
    end if;
    return;
  end if;
  -- A dispatcher holding a delivery's claim: active while it delivers under that claim, with no
  -- permission at all (what it reads, the dispatch policies name; what it writes goes through
  -- app.finish_delivery()).
  if app.current_delivery_claim() is not null then
    select d.organization_id = v_org into active
    from public.webhook_deliveries d
    where d.claim_token = app.current_delivery_claim() and d.status = 'delivering';
    active := coalesce(active, false);
    if active and v_region is not distinct from app.current_region() and v_suspended is null then
      permissions := '{}';
    end if;
    return;
  end if;
  -- A worker holding a run's claim: active while the run is running under that claim (a cancel
  -- or a re-claim ends it), with the two permissions running a workflow needs.
  if app.current_run_claim() is not null then
    select r.organization_id = v_org into active
    from public.workflow_runs r
    where r.claim_token = app.current_run_claim() and r.status = 'running';
    active := coalesce(active, false);
    if active and v_region is not distinct from app.current_region() and v_suspended is null then
      permissions := array['runs:execute', 'workflows:read'];
    end if;
    return;
  end if;
  if v_session is not null then
    active := exists (select 1 from public.sessions s
                      where s.id = v_session and s.user_id = app.current_user_id()
                        and s.revoked_at is null and s.absolute_expires_at > now());
  end if;
  if v_key is not null then
    select k.revoked_at is null and (k.expires_at is null or k.expires_at > now()),
           case when k.organization_id = v_org then k.scopes end
      into active, permissions
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
    return;
  end if;
  if v_org is not null then
    select m.role,
           case when m.role = 'custom' then
             coalesce((select array_agg(cp.permission order by cp.permission)
                       from public.role_permissions cp
                       where cp.organization_id = m.organization_id and cp.role_id = m.custom_role_id), '{}')
           else
             coalesce((select array_agg(rp.permission order by rp.permission)
                       from public.builtin_role_permissions rp
                       where rp.role = m.role), '{}')
           end
      into role, permissions
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
    end if;
  end if;
end
$$;

-- Does the current user hold `permission` in the requested organization? Write policies call it.
create or replace function app.has_permission(permission text) returns boolean
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if app.current_org_id() is null then
    return false; -- not a member, another region, or no context
  end if;
  if app.current_delivery_claim() is not null then
    return false;
  end if;
  if app.current_run_claim() is not null then
    return permission in ('runs:execute', 'workflows:read');
  end if;
  if app.current_webhook_token() is not null then
    return permission in ('billing:manage', 'billing:read');
  end if;
  if app.current_api_key_id() is not null then
    return exists (
      select 1 from public.api_keys k
      where k.id = app.current_api_key_id()
        and k.organization_id = app.requested_org_id()
        and k.revoked_at is null
        and (k.expires_at is null or k.expires_at > now())
        and has_permission.permission = any (k.scopes));
  end if;
  return exists (
    select 1
    from public.memberships m
    join public.builtin_role_permissions rp on rp.role = m.role
    where m.organization_id = app.requested_org_id()
      and m.user_id = app.current_user_id()
      and rp.permission = has_permission.permission
  ) or exists (
    select 1
    from public.memberships m
    join public.role_permissions cp on cp.organization_id = m.organization_id and cp.role_id = m.custom_role_id
    where m.organization_id = app.requested_org_id()
      and m.user_id = app.current_user_id()
      and m.role = 'custom'
      and cp.permission = has_permission.permission
  );
end
$$;

-- Workspace restrictions of the principal in context. A member is restricted when their
-- membership says so (`memberships.restricted`), to the workspaces listed in member_workspaces
-- (none left: no workspace at all). An API key is restricted when it carries `workspace_ids`
-- (a restricted member's keys always do). A worker and a payment webhook act for the whole
-- organization. A principal with no standing in the organization is never admitted by
-- app.current_org_id(), which every policy also requires, so the answer for it does not matter.
-- Policies use both through (select ...), so each is evaluated once per statement; the member
-- case comes first and reads a partial index of restricted memberships (usually empty).
create or replace function app.workspace_restricted() returns boolean
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_user uuid := app.current_user_id();
begin
  if v_user is not null then
    return exists (select 1 from public.memberships m
                   where m.organization_id = app.requested_org_id() and m.user_id = v_user and m.restricted);
  end if;
  if app.current_api_key_id() is not null then
    return exists (select 1 from public.api_keys k
                   where k.id = app.current_api_key_id() and k.organization_id = app.requested_org_id()
                     and k.workspace_ids is not null);
  end if;
  return false;
end
$$;

create or replace function app.allowed_workspace_ids() returns setof uuid
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if app.current_api_key_id() is not null then
    return query select unnest(k.workspace_ids) from public.api_keys k
                 where k.id = app.current_api_key_id() and k.organization_id = app.requested_org_id();
    return;
  end if;
  return query select mw.workspace_id from public.member_workspaces mw
               where mw.organization_id = app.requested_org_id() and mw.user_id = app.current_user_id();
end
$$;

-- The principal's permissions in the organization in context (NULL: none there).
create or replace function app.current_permissions() returns text[]
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return (select p.permissions from app.current_principal() p where p.active);
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
    'app.current_org_id()', 'app.current_principal()', 'app.has_permission(text)',
    'app.workspace_restricted()', 'app.allowed_workspace_ids()', 'app.current_permissions()',
    'app.role_grants(text, uuid)', 'app.can_grant_role(text, uuid)', 'app.within_restriction(uuid[])',
    'app.member_within_restriction(uuid)'
], '{tenantry_app}');
call app.install_definer(array['app.require_user()', 'app.role_grants_in(uuid, text, uuid)',
                               'app.member_permissions(uuid, uuid)'], '{}');
