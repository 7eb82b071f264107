-- The SECURITY DEFINER functions: the only code that sees across tenants. Each is owned by
-- tenantry_definer (BYPASSRLS, NOLOGIN), has a fixed search_path and does one narrow thing.
-- Apply as (or SET ROLE to) the owner after 02_context.sql. Idempotent. The tables they read are
-- created by migrations/, so bodies are not checked here (as pg_dump does).
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

-- Map a verified identity (issuer + subject, never email) to a user, creating it on first sight.
-- Email and display name are refreshed only when they changed, so a repeat sign-in writes nothing.
create or replace function app.provision_user(p_issuer text, p_subject text, p_email text, p_display_name text)
returns uuid
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_id uuid;
begin
  select u.id into v_id from public.users u where u.issuer = p_issuer and u.subject = p_subject;
  if v_id is null then
    insert into public.users (issuer, subject, email, display_name)
    values (p_issuer, p_subject, p_email, p_display_name)
    on conflict (issuer, subject) do nothing
    returning id into v_id;
    if v_id is null then  -- lost a race with a concurrent first request
      select u.id into v_id from public.users u where u.issuer = p_issuer and u.subject = p_subject;
    end if;
  else
    update public.users u
    set email = coalesce(p_email, u.email), display_name = coalesce(p_display_name, u.display_name)
    where u.id = v_id
      and (u.email is distinct from coalesce(p_email, u.email)
           or u.display_name is distinct from coalesce(p_display_name, u.display_name));
  end if;
  return v_id;
end
$$;

-- Create an organization with the current user as its first owner. The app role has no INSERT
-- on organizations: a new tenant has no member yet who could pass a policy, so this is the door.
create or replace function app.create_organization(p_id uuid, p_name text, p_slug text, p_region text, p_data_mode text)
returns uuid
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_user uuid := app.current_user_id();
begin
  if v_user is null then
    raise exception 'no current user' using errcode = '42501';
  end if;
  insert into public.organizations (id, name, slug, region, data_mode)
  values (p_id, p_name, p_slug, coalesce(p_region, 'us'), coalesce(p_data_mode, 'metadata_only'));
  insert into public.memberships (organization_id, user_id, role) values (p_id, v_user, 'owner');
  return p_id;
end
$$;

-- Sessions. Times come from the caller (the server's clock, injectable in tests), so idle and
-- absolute timeouts are decided in one place.
create or replace function app.start_session(
  p_session uuid, p_user uuid, p_provider text, p_now timestamptz, p_idle_expires timestamptz,
  p_absolute_expires timestamptz, p_token uuid, p_token_hash bytea, p_user_agent text, p_ip inet)
returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  insert into public.sessions (id, user_id, provider, created_at, last_refreshed_at, idle_expires_at,
                               absolute_expires_at, user_agent, ip)
  values (p_session, p_user, p_provider, p_now, p_now, p_idle_expires, p_absolute_expires,
          left(p_user_agent, 500), p_ip);
  insert into public.refresh_tokens (id, session_id, secret_hash, created_at)
  values (p_token, p_session, p_token_hash, p_now);
end
$$;

-- What the server needs to judge a presented refresh token (it compares the hash itself, in
-- constant time).
create or replace function app.refresh_token_state(p_token uuid)
returns table (session_id uuid, user_id uuid, secret_hash bytea, spent boolean, revoked boolean,
               idle_expires_at timestamptz, absolute_expires_at timestamptz)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select s.id, s.user_id, t.secret_hash, t.spent_at is not null, s.revoked_at is not null,
         s.idle_expires_at, s.absolute_expires_at
  from public.refresh_tokens t join public.sessions s on s.id = t.session_id
  where t.id = p_token
$$;

-- Spend `p_old` and issue `p_new` in its session. False when `p_old` was already spent (a
-- concurrent or replayed use): the caller then revokes the session.
create or replace function app.rotate_refresh_token(
  p_old uuid, p_new uuid, p_new_hash bytea, p_now timestamptz, p_idle_expires timestamptz)
returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_session uuid;
begin
  update public.refresh_tokens set spent_at = p_now
  where id = p_old and spent_at is null
  returning session_id into v_session;
  if v_session is null then
    return false;
  end if;
  insert into public.refresh_tokens (id, session_id, secret_hash, created_at)
  values (p_new, v_session, p_new_hash, p_now);
  update public.sessions
  set last_refreshed_at = p_now, idle_expires_at = least(p_idle_expires, absolute_expires_at)
  where id = v_session;
  return true;
end
$$;

-- End a session found through one of its refresh tokens (reuse detected, or timed out).
create or replace function app.end_session(p_session uuid, p_reason text, p_now timestamptz)
returns void
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
  update public.sessions set revoked_at = p_now, revoked_reason = p_reason
  where id = p_session and revoked_at is null
$$;

-- API keys: the server looks a presented key up by id and compares the hash in constant time.
create or replace function app.find_api_key(p_key uuid)
returns table (organization_id uuid, secret_hash bytea, active boolean)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select k.organization_id, k.secret_hash,
         k.revoked_at is null and (k.expires_at is null or k.expires_at > now())
  from public.api_keys k
  where k.id = p_key
$$;

-- Record use, at most once a minute per key (the server also throttles before calling).
create or replace function app.touch_api_key(p_key uuid)
returns void
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
  update public.api_keys set last_used_at = now()
  where id = p_key and (last_used_at is null or last_used_at < now() - interval '1 minute')
$$;

-- Login attempts for the authorization-code flow: stored by /login, taken exactly once by
-- /callback (a replayed or forged `state` finds nothing). Expired attempts are swept here.
create or replace function app.create_login_attempt(
  p_state_hash bytea, p_provider text, p_pkce_verifier text, p_nonce text, p_redirect_to text,
  p_now timestamptz, p_expires timestamptz)
returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  delete from public.login_attempts where expires_at < p_now;
  insert into public.login_attempts (state_hash, provider, pkce_verifier, nonce, redirect_to, created_at, expires_at)
  values (p_state_hash, p_provider, p_pkce_verifier, p_nonce, p_redirect_to, p_now, p_expires);
end
$$;

create or replace function app.take_login_attempt(p_state_hash bytea, p_now timestamptz)
returns table (provider text, pkce_verifier text, nonce text, redirect_to text)
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
  delete from public.login_attempts a
  where a.state_hash = p_state_hash and a.expires_at > p_now
  returning a.provider, a.pkce_verifier, a.nonce, a.redirect_to
$$;

-- Apply a provider's role-mapping result for one user: grant or change the mapped memberships,
-- and drop the ones this provider granted earlier that no longer match. Memberships granted by
-- people are left alone.
create or replace function app.sync_provider_memberships(
  p_user uuid, p_provider text, p_orgs uuid[], p_roles text[])
returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  -- Each change is recorded in the organization's audit log, in this transaction.
  with changed as (
    insert into public.memberships (organization_id, user_id, role, granted_by_provider)
    select o.org, p_user, o.role, p_provider
    from unnest(p_orgs, p_roles) as o(org, role)
    where exists (select 1 from public.organizations where id = o.org)
    on conflict (organization_id, user_id) do update
      set role = excluded.role
      where memberships.granted_by_provider = p_provider and memberships.role <> excluded.role
    returning organization_id, role, (xmax = 0) as inserted
  )
  insert into public.audit_events (organization_id, id, actor_type, actor_id, action, target_type, target_id,
                                   outcome, details, prev_hash, hash)
  select c.organization_id, gen_random_uuid(), 'system', p_user,
         case when c.inserted then 'member.add' else 'member.update' end, 'user', p_user::text, 'allowed',
         jsonb_build_object('role', c.role, 'granted_by_provider', p_provider), '\x', '\x'
  from changed c;

  with gone as (
    delete from public.memberships m
    where m.user_id = p_user and m.granted_by_provider = p_provider
      and not (m.organization_id = any (p_orgs))
    returning m.organization_id, m.role
  )
  insert into public.audit_events (organization_id, id, actor_type, actor_id, action, target_type, target_id,
                                   outcome, details, prev_hash, hash)
  select g.organization_id, gen_random_uuid(), 'system', p_user, 'member.remove', 'user', p_user::text, 'allowed',
         jsonb_build_object('role', g.role, 'granted_by_provider', p_provider), '\x', '\x'
  from gone g;
end
$$;

-- Security events that belong to no organization (sign-in, refresh, logout, session
-- revocation) go to the platform chain: the audit log of the nil organization id, which no
-- tenant context can name. Callers run it in the transaction of the change it describes.
create or replace function app.record_security_event(
  p_actor_type text, p_actor_id uuid, p_action text, p_target_type text, p_target_id text,
  p_outcome text, p_ip inet, p_user_agent text, p_request_id text, p_details jsonb)
returns void
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
  insert into public.audit_events (organization_id, id, actor_type, actor_id, action, target_type, target_id,
                                   outcome, ip, user_agent, request_id, details, prev_hash, hash)
  values ('00000000-0000-0000-0000-000000000000', gen_random_uuid(), p_actor_type, p_actor_id, p_action,
          p_target_type, p_target_id, p_outcome, p_ip, left(p_user_agent, 500), left(p_request_id, 100),
          coalesce(p_details, '{}'), '\x', '\x')
$$;

-- Accept an invitation for the current user: it must exist with this secret, be neither
-- expired, revoked nor used. Adds the membership and records it in the organization's audit
-- log, in this transaction. Errors: TY010 unknown, TY011 expired, TY012 revoked, TY013 used.
create or replace function app.accept_invitation(
  p_invitation uuid, p_token_hash bytea, p_ip inet, p_user_agent text, p_request_id text)
returns uuid
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_user uuid := app.current_user_id();
  v public.invitations;
begin
  if v_user is null then
    raise exception 'no current user' using errcode = '42501';
  end if;
  select * into v from public.invitations i
  where i.id = p_invitation and i.token_hash = p_token_hash
  for update;
  if not found then
    raise exception 'unknown invitation' using errcode = 'TY010';
  elsif v.revoked_at is not null then
    raise exception 'invitation revoked' using errcode = 'TY012';
  elsif v.accepted_at is not null then
    raise exception 'invitation already used' using errcode = 'TY013';
  elsif v.expires_at <= now() then
    raise exception 'invitation expired' using errcode = 'TY011';
  end if;
  insert into public.memberships (organization_id, user_id, role, custom_role_id)
  values (v.organization_id, v_user, v.role, v.custom_role_id);
  update public.invitations set accepted_at = now(), accepted_by = v_user
  where organization_id = v.organization_id and id = v.id;
  insert into public.audit_events (organization_id, id, actor_type, actor_id, action, target_type, target_id,
                                   outcome, ip, user_agent, request_id, details, prev_hash, hash)
  values (v.organization_id, gen_random_uuid(), 'user', v_user, 'invitation.accept', 'invitation', v.id::text,
          'allowed', p_ip, left(p_user_agent, 500), left(p_request_id, 100),
          jsonb_build_object('role', v.role, 'custom_role_id', v.custom_role_id), '\x', '\x');
  return v.organization_id;
end
$$;

-- Platform administration: each function checks that the current user is a platform admin,
-- does one thing, and records it on the platform chain (and the organization's chain).
create or replace function app.is_platform_admin() returns boolean
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$ select exists (select 1 from public.platform_admins a where a.user_id = app.current_user_id()) $$;

create or replace function app.admin_list_organizations(p_after uuid, p_limit int)
returns table (id uuid, name text, slug text, region text, data_mode text, suspended_at timestamptz,
               created_at timestamptz, members bigint)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if not app.is_platform_admin() then
    raise exception 'not a platform admin' using errcode = '42501';
  end if;
  return query
    select o.id, o.name, o.slug, o.region, o.data_mode, o.suspended_at, o.created_at,
           (select count(*) from public.memberships m where m.organization_id = o.id)
    from public.organizations o where o.id > p_after order by o.id limit p_limit;
end
$$;

-- p_action: 'suspend', 'reactivate' or 'move_region' (with p_region).
create or replace function app.admin_change_organization(
  p_org uuid, p_action text, p_region text, p_ip inet, p_user_agent text, p_request_id text)
returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_admin uuid := app.current_user_id();
  v_changed int;
  v_details jsonb;
begin
  if not app.is_platform_admin() then
    raise exception 'not a platform admin' using errcode = '42501';
  end if;
  if p_action = 'suspend' then
    update public.organizations set suspended_at = coalesce(suspended_at, now()) where id = p_org;
  elsif p_action = 'reactivate' then
    update public.organizations set suspended_at = null where id = p_org;
  elsif p_action = 'move_region' and p_region in ('us', 'eu') then
    update public.organizations set region = p_region where id = p_org;
  else
    raise exception 'unknown admin action %', p_action using errcode = '22023';
  end if;
  get diagnostics v_changed = row_count;
  if v_changed = 0 then
    return false;
  end if;
  v_details := jsonb_build_object('action', p_action, 'region', p_region);
  insert into public.audit_events (organization_id, id, actor_type, actor_id, action, target_type, target_id,
                                   outcome, ip, user_agent, request_id, details, prev_hash, hash)
  values (p_org, gen_random_uuid(), 'platform_admin', v_admin, 'organization.' || p_action, 'organization',
          p_org::text, 'allowed', p_ip, left(p_user_agent, 500), left(p_request_id, 100), v_details, '\x', '\x'),
         ('00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'platform_admin', v_admin,
          'organization.' || p_action, 'organization', p_org::text, 'allowed', p_ip, left(p_user_agent, 500),
          left(p_request_id, 100), v_details, '\x', '\x');
  return true;
end
$$;

-- GDPR erasure of the current user: their user row (and with it memberships, sessions and
-- refresh tokens; invitations and API keys keep no link to them). Refused while they are the
-- last owner of an organization (TY001, with the organizations in the detail). Audit entries keep
-- only the now-dangling user id. Recorded on the platform chain.
create or replace function app.erase_current_user(p_ip inet, p_user_agent text, p_request_id text)
returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_user uuid := app.current_user_id();
  v_orgs text;
begin
  if v_user is null then
    raise exception 'no current user' using errcode = '42501';
  end if;
  select string_agg(m.organization_id::text, ',') into v_orgs
  from public.memberships m
  where m.user_id = v_user and m.role = 'owner'
    and not exists (select 1 from public.memberships o
                    where o.organization_id = m.organization_id and o.role = 'owner' and o.user_id <> v_user);
  if v_orgs is not null then
    raise exception 'the last owner of an organization cannot be erased'
      using errcode = 'TY001', detail = v_orgs;
  end if;
  delete from public.users where id = v_user;
  perform app.record_security_event('user', v_user, 'user.erase', 'user', v_user::text, 'allowed',
                                    p_ip, p_user_agent, p_request_id, '{}');
end
$$;

-- Workspace restrictions: is the current user restricted to specific workspaces of the
-- organization in context, and to which? Policies use both through (select ...), so each is
-- evaluated once per statement (plpgsql, for cached plans); later workspace-scoped resources
-- use the same pair.
create or replace function app.workspace_restricted() returns boolean
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return exists (select 1 from public.member_workspaces mw
                 where mw.organization_id = app.requested_org_id() and mw.user_id = app.current_user_id());
end
$$;

create or replace function app.allowed_workspace_ids() returns setof uuid
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return query select mw.workspace_id from public.member_workspaces mw
               where mw.organization_id = app.requested_org_id() and mw.user_id = app.current_user_id();
end
$$;

-- Anonymise the audit chain of a deleted organization: actors, addresses, user agents, request
-- ids, people as targets and details are removed; the chain is re-sealed and the rewrite itself
-- is appended. Refused while the organization exists.
create or replace function app.anonymise_organization_audit(p_org uuid) returns bigint
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_prev bytea := '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
  v_row public.audit_events;
  v_count bigint := 0;
begin
  if exists (select 1 from public.organizations where id = p_org) then
    raise exception 'organization still exists' using errcode = '42501';
  end if;
  perform set_config('app.audit_rewrite', p_org::text, true);
  for v_row in select * from public.audit_events where organization_id = p_org order by seq loop
    v_row.actor_id := null;
    v_row.ip := null;
    v_row.user_agent := null;
    v_row.request_id := null;
    v_row.details := '{}';
    if v_row.target_type in ('user', 'invitation', 'session') then
      v_row.target_id := null;
    end if;
    v_row.prev_hash := v_prev;
    v_row.hash := app.audit_hash(v_prev, v_row);
    update public.audit_events a
    set actor_id = null, ip = null, user_agent = null, request_id = null, details = '{}',
        target_id = v_row.target_id, prev_hash = v_row.prev_hash, hash = v_row.hash
    where a.organization_id = p_org and a.seq = v_row.seq;
    v_prev := v_row.hash;
    v_count := v_count + 1;
  end loop;
  perform set_config('app.audit_rewrite', '', true);
  insert into public.audit_events (organization_id, id, actor_type, action, target_type, target_id, outcome,
                                   details, prev_hash, hash)
  values (p_org, gen_random_uuid(), 'system', 'audit.anonymise', 'organization', p_org::text, 'allowed',
          jsonb_build_object('entries', v_count), '\x', '\x');
  return v_count;
end
$$;


-- Publish a workflow's validated draft as its next version (workflows:publish). The row lock
-- on the workflow serializes concurrent publishes: versions are consecutive, never duplicated.
-- Returns the version, or NULL when there is no such (unarchived, visible) workflow.
create or replace function app.publish_workflow(p_workflow uuid, p_definition text, p_spec jsonb)
returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_org uuid := app.current_org_id();
  v_version integer;
begin
  if v_org is null or not app.has_permission('workflows:publish') then
    raise exception 'new row violates row-level security policy for table "workflow_versions"' using errcode = '42501';
  end if;
  update public.workflows w set latest_version = w.latest_version + 1
  where w.organization_id = v_org and w.id = p_workflow and w.archived_at is null
    and (not app.workspace_restricted() or w.workspace_id in (select app.allowed_workspace_ids()))
  returning w.latest_version into v_version;
  if v_version is null then
    return null;
  end if;
  insert into public.workflow_versions (organization_id, workflow_id, version, definition, spec, published_by)
  values (v_org, p_workflow, v_version, p_definition, p_spec, app.current_user_id());
  return v_version;
end
$$;

-- The run a worker holds the claim on (NULL for everyone else). The run policies compare with it.
create or replace function app.current_run_id() returns uuid
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if app.current_run_claim() is null then
    return null;
  end if;
  return (select r.id from public.workflow_runs r
          where r.claim_token = app.current_run_claim() and r.organization_id = app.current_org_id()
            and r.status = 'running');
end
$$;

-- The queue. Claims the oldest claimable run of this region: a running run whose lease ran out
-- (its worker died or stalled), else the oldest queued one. FOR UPDATE SKIP LOCKED makes claims
-- exclusive without blocking: concurrent workers each get a different run, or none. A run that
-- has used up its attempts fails instead. Returns ids and a fresh claim token only, never
-- content: the worker reads the run under the organization's RLS context, with the token.
create or replace function app.claim_next_run(
  p_region text, p_worker text, p_lease_seconds integer, p_max_attempts integer)
returns table (organization_id uuid, run_id uuid, claim_token uuid, attempt integer)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  v_org uuid;
  v_run uuid;
  v_attempts integer;
begin
  loop
    select r.organization_id, r.id, r.attempts into v_org, v_run, v_attempts
    from public.workflow_runs r
    where r.status = 'running' and r.lease_expires_at < now()
      and exists (select 1 from public.organizations o
                  where o.id = r.organization_id and o.region = p_region and o.suspended_at is null)
    order by r.lease_expires_at
    limit 1
    for update of r skip locked;
    if not found then
      select r.organization_id, r.id, r.attempts into v_org, v_run, v_attempts
      from public.workflow_runs r
      where r.status = 'queued'
        and exists (select 1 from public.organizations o
                    where o.id = r.organization_id and o.region = p_region and o.suspended_at is null)
      order by r.created_at
      limit 1
      for update of r skip locked;
    end if;
    if not found then
      return;
    end if;
    if v_attempts >= p_max_attempts then
      update public.workflow_runs r set status = 'failed', error_code = 'lease_expired'
      where r.organization_id = v_org and r.id = v_run;
      continue;
    end if;
    return query
      update public.workflow_runs r
      set status = 'running', claim_token = gen_random_uuid(), claimed_by = left(p_worker, 200),
          lease_expires_at = now() + make_interval(secs => p_lease_seconds),
          attempts = r.attempts + 1, started_at = coalesce(r.started_at, now())
      where r.organization_id = v_org and r.id = v_run
      returning r.organization_id, r.id, r.claim_token, r.attempts;
    return;
  end loop;
end
$$;

-- A worker renews its claim while a run executes. False when the claim is gone (the run was
-- cancelled, or re-claimed after the lease ran out): the worker then abandons the run.
create or replace function app.renew_run_claim(p_claim uuid, p_lease_seconds integer) returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  update public.workflow_runs r set lease_expires_at = now() + make_interval(secs => p_lease_seconds)
  where r.claim_token = p_claim and r.status = 'running';
  return found;
end
$$;

-- Platform feature flags (platform admins only): create or change a flag, and target one
-- organization. Each change is audited in the platform's chain (and a targeting also in the
-- organization's).
create or replace function app.admin_put_flag(
  p_key text, p_description text, p_default boolean, p_kill_switch boolean,
  p_ip inet, p_user_agent text, p_request_id text)
returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_created boolean;
begin
  if not app.is_platform_admin() then
    raise exception 'not a platform admin' using errcode = '42501';
  end if;
  insert into public.feature_flags (key, description, default_enabled, kill_switch)
  values (p_key, coalesce(p_description, ''), coalesce(p_default, false), coalesce(p_kill_switch, false))
  on conflict (key) do update
    set description = coalesce(p_description, feature_flags.description),
        default_enabled = coalesce(p_default, feature_flags.default_enabled),
        kill_switch = coalesce(p_kill_switch, feature_flags.kill_switch)
  returning (xmax = 0) into v_created;
  insert into public.audit_events (organization_id, id, actor_type, actor_id, action, target_type, target_id,
                                   outcome, ip, user_agent, request_id, details, prev_hash, hash)
  values ('00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'platform_admin', app.current_user_id(),
          case when v_created then 'flag.create' else 'flag.update' end, 'feature_flag', p_key, 'allowed', p_ip,
          left(p_user_agent, 500), left(p_request_id, 100),
          jsonb_build_object('default_enabled', p_default, 'kill_switch', p_kill_switch,
                             'description_changed', p_description is not null), '\x', '\x');
  return v_created;
end
$$;

-- p_enabled NULL removes the targeting. False when the flag or organization does not exist.
create or replace function app.admin_target_flag(
  p_key text, p_org uuid, p_enabled boolean, p_ip inet, p_user_agent text, p_request_id text)
returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_details jsonb := jsonb_build_object('flag', p_key, 'enabled', p_enabled);
begin
  if not app.is_platform_admin() then
    raise exception 'not a platform admin' using errcode = '42501';
  end if;
  if not exists (select 1 from public.feature_flags f where f.key = p_key)
     or not exists (select 1 from public.organizations o where o.id = p_org) then
    return false;
  end if;
  if p_enabled is null then
    delete from public.feature_flag_targets t where t.organization_id = p_org and t.flag_key = p_key;
  else
    insert into public.feature_flag_targets (organization_id, flag_key, enabled, created_by)
    values (p_org, p_key, p_enabled, app.current_user_id())
    on conflict (organization_id, flag_key) do update set enabled = excluded.enabled;
  end if;
  insert into public.audit_events (organization_id, id, actor_type, actor_id, action, target_type, target_id,
                                   outcome, ip, user_agent, request_id, details, prev_hash, hash)
  values (p_org, gen_random_uuid(), 'platform_admin', app.current_user_id(), 'flag.target', 'feature_flag', p_key,
          'allowed', p_ip, left(p_user_agent, 500), left(p_request_id, 100), v_details, '\x', '\x'),
         ('00000000-0000-0000-0000-000000000000', gen_random_uuid(), 'platform_admin', app.current_user_id(),
          'flag.target', 'organization', p_org::text, 'allowed', p_ip, left(p_user_agent, 500),
          left(p_request_id, 100), v_details, '\x', '\x');
  return true;
end
$$;

-- Payment webhooks. Begin: record the verified event as processing under the delivery's token,
-- unless it was recorded before (false: a redelivery, nothing to do; a concurrent delivery waits
-- here until the first one commits). Finish: its outcome, token cleared, in the same transaction.
create or replace function app.begin_webhook_event(
  p_provider text, p_event_id text, p_type text, p_org uuid, p_created timestamptz, p_payload jsonb, p_token uuid)
returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  insert into public.webhook_events (provider, event_id, event_type, organization_ref, event_created_at, status,
                                     payload, processing_token)
  values (p_provider, p_event_id, left(p_type, 255), p_org, p_created, 'processing', p_payload, p_token)
  on conflict (provider, event_id) do nothing;
  return found;
end
$$;

create or replace function app.finish_webhook_event(p_token uuid, p_status text, p_detail text) returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if p_status not in ('processed', 'ignored') then
    raise exception 'a webhook event finishes processed or ignored' using errcode = '22023';
  end if;
  update public.webhook_events e set status = p_status, detail = left(p_detail, 500), processing_token = null
  where e.processing_token = p_token and e.status = 'processing';
  return found;
end
$$;

-- An event that cannot be applied here (no or unknown organization, another region, suspended):
-- kept, once, for platform admins.
create or replace function app.record_unroutable_webhook_event(
  p_provider text, p_event_id text, p_type text, p_org uuid, p_created timestamptz, p_payload jsonb, p_detail text)
returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  insert into public.webhook_events (provider, event_id, event_type, organization_ref, event_created_at, status,
                                     detail, payload)
  values (p_provider, p_event_id, left(p_type, 255), p_org, p_created, 'unroutable', left(p_detail, 500), p_payload)
  on conflict (provider, event_id) do nothing;
  return found;
end
$$;

create or replace function app.admin_list_webhook_events(p_status text, p_limit int)
returns table (provider text, event_id text, event_type text, organization_ref uuid, event_created_at timestamptz,
               received_at timestamptz, status text, detail text)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if not app.is_platform_admin() then
    raise exception 'not a platform admin' using errcode = '42501';
  end if;
  return query
    select e.provider, e.event_id, e.event_type, e.organization_ref, e.event_created_at, e.received_at, e.status,
           e.detail
    from public.webhook_events e
    where p_status is null or e.status = p_status
    order by e.received_at desc
    limit least(greatest(p_limit, 1), 500);
end
$$;

-- Usage: a server adds the requests it counted since its last flush, for many organizations in
-- one statement (no request context exists then). Counts only ever grow.
create or replace function app.record_usage(p_orgs uuid[], p_days date[], p_keys uuid[], p_counts bigint[])
returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  insert into public.usage_counters as u (organization_id, day, api_key_id, requests)
  select o, d, k, c from unnest(p_orgs, p_days, p_keys, p_counts) as t(o, d, k, c)
  where c > 0 and exists (select 1 from public.organizations x where x.id = o)
  on conflict (organization_id, day, api_key_id) do update set requests = u.requests + excluded.requests;
end
$$;

-- The request rate an organization's plan allows (`limits.requests_per_minute`; the free plan's
-- without a live subscription). Rate limiting looks it up off the request path.
create or replace function app.organization_requests_per_minute(p_org uuid) returns integer
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return coalesce(
    (select (p.limits ->> 'requests_per_minute')::integer
     from public.subscriptions s join public.plans p on p.id = s.plan_id
     where s.organization_id = p_org and s.status <> 'canceled'),
    (select (p.limits ->> 'requests_per_minute')::integer from public.plans p where p.id = 'free'));
end
$$;

-- One list of every function above: owned by the definer, callable by nobody by default, and by
-- the app role explicitly.
do $grants$
declare
  v_function text;
begin
  foreach v_function in array array[
    'app.current_org_id()',
    'app.current_principal()',
    'app.has_permission(text)',
    'app.provision_user(text, text, text, text)',
    'app.create_organization(uuid, text, text, text, text)',
    'app.start_session(uuid, uuid, text, timestamptz, timestamptz, timestamptz, uuid, bytea, text, inet)',
    'app.refresh_token_state(uuid)',
    'app.rotate_refresh_token(uuid, uuid, bytea, timestamptz, timestamptz)',
    'app.end_session(uuid, text, timestamptz)',
    'app.find_api_key(uuid)',
    'app.touch_api_key(uuid)',
    'app.create_login_attempt(bytea, text, text, text, text, timestamptz, timestamptz)',
    'app.take_login_attempt(bytea, timestamptz)',
    'app.sync_provider_memberships(uuid, text, uuid[], text[])',
    'app.record_security_event(text, uuid, text, text, text, text, inet, text, text, jsonb)',
    'app.accept_invitation(uuid, bytea, inet, text, text)',
    'app.is_platform_admin()',
    'app.admin_list_organizations(uuid, int)',
    'app.admin_change_organization(uuid, text, text, inet, text, text)',
    'app.erase_current_user(inet, text, text)',
    'app.workspace_restricted()',
    'app.current_run_id()',
    'app.claim_next_run(text, text, integer, integer)',
    'app.renew_run_claim(uuid, integer)',
    'app.allowed_workspace_ids()',
    'app.anonymise_organization_audit(uuid)',
    'app.publish_workflow(uuid, text, jsonb)',
    'app.admin_put_flag(text, text, boolean, boolean, inet, text, text)',
    'app.admin_target_flag(text, uuid, boolean, inet, text, text)',
    'app.begin_webhook_event(text, text, text, uuid, timestamptz, jsonb, uuid)',
    'app.finish_webhook_event(uuid, text, text)',
    'app.record_unroutable_webhook_event(text, text, text, uuid, timestamptz, jsonb, text)',
    'app.admin_list_webhook_events(text, int)',
    'app.record_usage(uuid[], date[], uuid[], bigint[])',
    'app.organization_requests_per_minute(uuid)'
  ] loop
    execute format('alter function %s owner to tenantry_definer', v_function);
    execute format('revoke all on function %s from public', v_function);
    execute format('grant execute on function %s to tenantry_app', v_function);
  end loop;
end
$grants$;

-- Master key rotation (`tenantry keys rotate-master`, on the admin connection): list data keys
-- still wrapped by another master key version, and swap one wrapped key for its re-wrapped form
-- if nobody changed it meanwhile. Only wrapped (encrypted) keys pass through here. Executable by
-- the owner only, never by the app role.
create or replace function app.data_keys_to_rewrap(p_current integer, p_limit integer)
returns table (organization_id uuid, id uuid, wrapped_key bytea, master_key_version integer)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return query
    select k.organization_id, k.id, k.wrapped_key, k.master_key_version
    from public.organization_data_keys k
    where k.master_key_version <> p_current
    order by k.organization_id
    limit p_limit;
end
$$;

create or replace function app.rewrap_data_key(
  p_org uuid, p_id uuid, p_from integer, p_wrapped bytea, p_to integer) returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  update public.organization_data_keys k
  set wrapped_key = p_wrapped, master_key_version = p_to, rewrapped_at = now()
  where k.organization_id = p_org and k.id = p_id and k.master_key_version = p_from;
  return found;
end
$$;

do $owner_only$
declare
  v_function text;
begin
  foreach v_function in array array[
    'app.data_keys_to_rewrap(integer, integer)',
    'app.rewrap_data_key(uuid, uuid, integer, bytea, integer)'
  ] loop
    execute format('alter function %s owner to tenantry_definer', v_function);
    execute format('revoke all on function %s from public', v_function);
    execute format('grant execute on function %s to tenantry_owner', v_function);
  end loop;
end
$owner_only$;
