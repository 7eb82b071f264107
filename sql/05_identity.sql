-- Identity: users, sign-in attempts, sessions and refresh tokens, identity-provider role
-- mappings, platform security events, erasure. These run before (or while establishing) a
-- tenant context, so each is keyed by what only its legitimate caller holds: the browser's
-- `state` and cookie, the single-use completion a callback receives, the refresh token's secret;
-- or acts on the user the verified context names. None reads or writes tenant rows, except the
-- mapped memberships, which an organization must have consented to (provider_grants).
-- Apply after 04_principal.sql.
set role tenantry_owner;
set check_function_bodies = off;

-- Shapes that took their subject from an argument (replaced below).
drop function if exists app.start_session(uuid, uuid, text, timestamptz, timestamptz, timestamptz, uuid, bytea, text, inet);
drop function if exists app.refresh_token_state(uuid);
drop function if exists app.rotate_refresh_token(uuid, uuid, bytea, timestamptz, timestamptz);
drop function if exists app.end_session(uuid, text, timestamptz);
drop function if exists app.create_login_attempt(bytea, text, text, text, text, timestamptz, timestamptz);
drop function if exists app.take_login_attempt(bytea, timestamptz);
drop function if exists app.sync_provider_memberships(uuid, text, uuid[], text[]);

-- Map a verified identity (issuer + subject, never email) to a user, creating it on first sight
-- with the email and name the identity provider verified. It never changes an existing user:
-- refreshing a profile is app.refresh_profile(), which acts on the user in context only.
create or replace function app.provision_user(p_issuer text, p_subject text, p_email text, p_display_name text)
returns uuid
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_id uuid;
begin
  if coalesce(char_length(p_issuer), 0) not between 1 and 500 or coalesce(char_length(p_subject), 0) not between 1 and 500 then
    raise exception 'an identity needs an issuer and a subject' using errcode = '22023';
  end if;
  select u.id into v_id from public.users u where u.issuer = p_issuer and u.subject = p_subject;
  if v_id is null then
    insert into public.users (issuer, subject, email, display_name)
    values (p_issuer, p_subject, left(p_email, 320), left(p_display_name, 200))
    on conflict (issuer, subject) do nothing
    returning id into v_id;
    if v_id is null then  -- lost a race with a concurrent first request
      select u.id into v_id from public.users u where u.issuer = p_issuer and u.subject = p_subject;
    end if;
  end if;
  return v_id;
end
$$;

-- The signed-in user's own email and name, as their identity provider now reports them (NULL:
-- keep). Only the user in context; a repeat sign-in with nothing new writes nothing.
create or replace function app.refresh_profile(p_email text, p_display_name text) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  update public.users u
  set email = coalesce(left(p_email, 320), u.email), display_name = coalesce(left(p_display_name, 200), u.display_name)
  where u.id = app.current_user_id()
    and (u.email is distinct from coalesce(left(p_email, 320), u.email)
         or u.display_name is distinct from coalesce(left(p_display_name, 200), u.display_name));
  -- And every copy the user's organizations show (a statement here, not a trigger on users: on
  -- Citus a trigger runs on each node's copy of users and may not write other nodes' shards).
  if found and to_regclass('public.member_profiles') is not null then -- (before V37: none yet)
    update public.member_profiles p
    set email = u.email, display_name = u.display_name, row_version = u.row_version
    from public.users u
    where u.id = app.current_user_id() and p.user_id = u.id;
  end if;
end
$$;

-- The profiles an organization shows of its members (public.member_profiles, V37) are copies,
-- one per membership: made when the membership is, refreshed here when the user's own changes.
-- A profile read beside a membership is then a read of that organization's rows alone, which on
-- Citus stays on its shard (a view joining users as its owner does not: Citus reads a view's tables
-- on the workers as the caller). Its row_version is the user's, so a member's ETag still moves
-- with the profile.
create or replace function app.copy_member_profile() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  insert into public.member_profiles (organization_id, user_id, email, display_name, issuer, subject, created_at,
                                      row_version)
  select new.organization_id, u.id, u.email, u.display_name, u.issuer, u.subject, u.created_at, u.row_version
    from public.users u
   where u.id = new.user_id
  on conflict (organization_id, user_id) do nothing;
  return null;
end
$$;

-- Login attempts for the authorization-code flow. /login stores one, bound to the browser
-- (`p_browser_hash`: SHA-256 of a cookie only that browser holds) and to the provider's issuer.
-- Expired attempts are swept here, a bounded batch at a time.
create or replace function app.create_login_attempt(
  p_state_hash bytea, p_browser_hash bytea, p_provider text, p_issuer text, p_pkce_verifier text, p_nonce text,
  p_redirect_to text, p_now timestamptz, p_expires timestamptz)
returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  delete from public.login_attempts a
  where a.state_hash in (select x.state_hash from public.login_attempts x
                         where x.expires_at < now() - interval '5 minutes' limit 1000);
  insert into public.login_attempts (state_hash, browser_hash, provider, issuer, pkce_verifier, nonce, redirect_to,
                                     created_at, expires_at)
  values (p_state_hash, p_browser_hash, p_provider, p_issuer, p_pkce_verifier, p_nonce, p_redirect_to, p_now,
          least(p_expires, p_now + interval '15 minutes'));
end
$$;

-- The callback takes the attempt for its `state`, from the same browser, once. It leaves the
-- attempt as taken with `p_completion_hash`: the session is started with the secret behind it
-- (app.start_session), so only a callback that took a real attempt can start one.
create or replace function app.take_login_attempt(
  p_state_hash bytea, p_browser_hash bytea, p_completion_hash bytea, p_now timestamptz)
returns table (provider text, issuer text, pkce_verifier text, nonce text, redirect_to text)
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
  update public.login_attempts a
  set taken_at = p_now, completion_hash = p_completion_hash
  where a.state_hash = p_state_hash and a.browser_hash = p_browser_hash and a.taken_at is null
    and a.expires_at > p_now and octet_length(p_completion_hash) = 32
  returning a.provider, a.issuer, a.pkce_verifier, a.nonce, a.redirect_to
$$;

-- Apply an identity provider's role mappings for the user in context: grant or change the
-- mapped memberships, and drop the ones this provider granted earlier that no longer match.
-- Only where the organization consented to this provider granting that role (provider_grants,
-- managed by members who hold the role's permissions themselves). Memberships granted by people
-- are never touched. Each change is recorded in that organization's audit log.
create or replace function app.sync_provider_memberships(p_provider text, p_orgs uuid[], p_roles text[])
returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_user uuid := app.require_user();
  v record;
begin
  for v in
    insert into public.memberships (organization_id, user_id, role, granted_by_provider)
    select o.org, v_user, o.role, p_provider
    from unnest(p_orgs, p_roles) as o(org, role)
    where exists (select 1 from public.provider_grants g
                  where g.organization_id = o.org and g.provider = p_provider and g.role = o.role)
    on conflict (organization_id, user_id) do update
      set role = excluded.role
      where memberships.granted_by_provider = p_provider and memberships.role <> excluded.role
    returning organization_id, role, (xmax = 0) as inserted
  loop
    perform app.audit_append(v.organization_id, 'system', v_user,
                             case when v.inserted then 'member.add' else 'member.update' end, 'user', v_user::text,
                             'allowed', jsonb_build_object('role', v.role, 'granted_by_provider', p_provider));
  end loop;
  for v in
    delete from public.memberships m
    where m.user_id = v_user and m.granted_by_provider = p_provider
      and not exists (select 1 from unnest(p_orgs, p_roles) as o(org, role)
                      where o.org = m.organization_id
                        and exists (select 1 from public.provider_grants g
                                    where g.organization_id = o.org and g.provider = p_provider and g.role = o.role))
    returning m.organization_id, m.role
  loop
    perform app.audit_append(v.organization_id, 'system', v_user, 'member.remove', 'user', v_user::text, 'allowed',
                             jsonb_build_object('role', v.role, 'granted_by_provider', p_provider));
  end loop;
end
$$;

-- Sessions. Started for the user in context, by the callback that took a login attempt: the
-- completion secret is consumed here (single use, within 5 minutes), and the session records the
-- attempt's provider. Times come from the caller (the server's clock, injectable in tests); the
-- absolute lifetime is capped at 366 days whatever it says.
create or replace function app.open_session(
  p_completion text, p_session uuid, p_now timestamptz, p_idle_expires timestamptz, p_absolute_expires timestamptz,
  p_user_agent text, p_ip inet, p_console_hash bytea)
returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_user uuid := app.current_user_id();
  v_provider text;
  v_absolute timestamptz := least(p_absolute_expires, p_now + interval '366 days');
begin
  delete from public.login_attempts a
  where a.completion_hash = sha256(convert_to(coalesce(p_completion, ''), 'UTF8'))
    and a.taken_at > now() - interval '5 minutes'
  returning a.provider into v_provider;
  if v_user is null or v_provider is null then
    raise exception 'a session starts only from a completed sign-in' using errcode = '42501';
  end if;
  insert into public.sessions (id, user_id, provider, created_at, last_refreshed_at, idle_expires_at,
                               absolute_expires_at, user_agent, ip, console_secret_hash)
  values (p_session, v_user, v_provider, p_now, p_now, least(p_idle_expires, v_absolute), v_absolute,
          left(p_user_agent, 500), p_ip, p_console_hash);
end
$$;

create or replace function app.start_session(
  p_completion text, p_session uuid, p_now timestamptz, p_idle_expires timestamptz, p_absolute_expires timestamptz,
  p_token uuid, p_token_hash bytea, p_user_agent text, p_ip inet)
returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform app.open_session(p_completion, p_session, p_now, p_idle_expires, p_absolute_expires, p_user_agent, p_ip,
                           null);
  insert into public.refresh_tokens (id, session_id, secret_hash, created_at)
  values (p_token, p_session, p_token_hash, p_now);
end
$$;

-- A console session (issue 17): started the same way, from a completed sign-in, with the
-- SHA-256 of the browser cookie's secret instead of a refresh token.
create or replace function app.start_console_session(
  p_completion text, p_session uuid, p_now timestamptz, p_idle_expires timestamptz, p_absolute_expires timestamptz,
  p_secret_hash bytea, p_user_agent text, p_ip inet)
returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if octet_length(p_secret_hash) is distinct from 32 then
    raise exception 'a console session needs the hash of its secret' using errcode = '22023';
  end if;
  perform app.open_session(p_completion, p_session, p_now, p_idle_expires, p_absolute_expires, p_user_agent, p_ip,
                           p_secret_hash);
end
$$;

-- A console cookie presented: its session's user, if the secret matches and the session is
-- neither revoked nor expired (idle or absolute); the use extends the idle timeout. A session
-- id without its secret learns and changes nothing.
create or replace function app.use_console_session(
  p_session uuid, p_secret_hash bytea, p_now timestamptz, p_idle_expires timestamptz)
returns table (user_id uuid, absolute_expires_at timestamptz)
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
  update public.sessions s
  set last_refreshed_at = p_now, idle_expires_at = least(p_idle_expires, s.absolute_expires_at)
  where s.id = p_session and s.console_secret_hash = p_secret_hash and s.revoked_at is null
    and s.idle_expires_at > p_now and s.absolute_expires_at > p_now
  returning s.user_id, s.absolute_expires_at
$$;

-- What the server needs to judge a presented refresh token: nothing unless its secret matches.
create or replace function app.refresh_token_state(p_token uuid, p_hash bytea)
returns table (session_id uuid, user_id uuid, spent boolean, revoked boolean,
               idle_expires_at timestamptz, absolute_expires_at timestamptz)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select s.id, s.user_id, t.spent_at is not null, s.revoked_at is not null,
         s.idle_expires_at, s.absolute_expires_at
  from public.refresh_tokens t join public.sessions s on s.id = t.session_id
  where t.id = p_token and t.secret_hash = p_hash
$$;

-- Spend the presented token and issue `p_new` in its session. False when it was already spent (a
-- concurrent or replayed use; the caller then ends the session) or its secret does not match.
create or replace function app.rotate_refresh_token(
  p_old uuid, p_old_hash bytea, p_new uuid, p_new_hash bytea, p_now timestamptz, p_idle_expires timestamptz)
returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_session uuid;
begin
  update public.refresh_tokens set spent_at = p_now
  where id = p_old and secret_hash = p_old_hash and spent_at is null
  returning session_id into v_session;
  if v_session is null then
    return false;
  end if;
  insert into public.refresh_tokens (id, session_id, secret_hash, created_at)
  values (p_new, v_session, p_new_hash, p_now);
  update public.sessions
  set last_refreshed_at = p_now, idle_expires_at = least(p_idle_expires, absolute_expires_at)
  where id = v_session and revoked_at is null;
  return true;
end
$$;

-- End the session of a presented refresh token (its secret must match): reuse of a spent token
-- was detected, or the session timed out. A session id alone ends nothing.
create or replace function app.end_session(p_token uuid, p_hash bytea, p_reason text, p_now timestamptz)
returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if p_reason not in ('refresh_token_reuse', 'expired') then
    raise exception 'unknown reason to end a session' using errcode = '22023';
  end if;
  update public.sessions s set revoked_at = p_now, revoked_reason = p_reason
  where s.revoked_at is null
    and s.id = (select t.session_id from public.refresh_tokens t where t.id = p_token and t.secret_hash = p_hash);
end
$$;

-- Security events that belong to no organization (sign-in, refresh, logout, session
-- revocation) go to the platform chain. Callers run it in the transaction of the change it
-- describes. Only authentication, session and user events, and only about the user in context
-- when there is one: the app role cannot write other kinds of entries into the platform's log.
create or replace function app.record_security_event(
  p_actor_type text, p_actor_id uuid, p_action text, p_target_type text, p_target_id text,
  p_outcome text, p_ip inet, p_user_agent text, p_request_id text, p_details jsonb)
returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if p_actor_type not in ('user', 'system') or split_part(p_action, '.', 1) not in ('auth', 'session', 'user')
     or (app.current_user_id() is not null and p_actor_id is distinct from app.current_user_id()) then
    raise exception 'not a platform security event' using errcode = '42501';
  end if;
  perform app.audit_append(app.platform_org(), p_actor_type, p_actor_id, p_action, p_target_type, p_target_id,
                           p_outcome, p_details, p_ip, p_user_agent, p_request_id);
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
  v_user uuid := app.require_user();
  v_orgs text;
begin
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
  perform app.audit_append(app.platform_org(), 'user', v_user, 'user.erase', 'user', v_user::text, 'allowed', '{}',
                           p_ip, p_user_agent, p_request_id);
end
$$;

call app.install_definer(array[
    'app.provision_user(text, text, text, text)',
    'app.refresh_profile(text, text)',
    'app.create_login_attempt(bytea, bytea, text, text, text, text, text, timestamptz, timestamptz)',
    'app.take_login_attempt(bytea, bytea, bytea, timestamptz)',
    'app.sync_provider_memberships(text, uuid[], text[])',
    'app.start_session(text, uuid, timestamptz, timestamptz, timestamptz, uuid, bytea, text, inet)',
    'app.start_console_session(text, uuid, timestamptz, timestamptz, timestamptz, bytea, text, inet)',
    'app.use_console_session(uuid, bytea, timestamptz, timestamptz)',
    'app.refresh_token_state(uuid, bytea)',
    'app.rotate_refresh_token(uuid, bytea, uuid, bytea, timestamptz, timestamptz)',
    'app.end_session(uuid, bytea, text, timestamptz)',
    'app.record_security_event(text, uuid, text, text, text, text, inet, text, text, jsonb)',
    'app.erase_current_user(inet, text, text)'
], '{tenantry_app}');
-- A trigger's function; never called directly.
call app.install_definer(array['app.copy_member_profile()'], '{}');
-- Shared by the two ways to start a session; never called directly.
call app.install_definer(array[
    'app.open_session(text, uuid, timestamptz, timestamptz, timestamptz, text, inet, bytea)'
], '{}');
