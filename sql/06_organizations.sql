-- Organizations: creating one (its first owner is the user in context), joining one through an
-- invitation, API keys as principals, and what happens to the audit log when an organization is
-- deleted. Apply after 05_identity.sql.
set role tenantry_owner;
set check_function_bodies = off;

-- Create an organization with the current user as its first owner. The app role has no INSERT
-- on organizations: a new tenant has no member yet who could pass a policy, so this is the door.
-- The nil id is the platform's audit chain and is refused (also by a check on the table).
create or replace function app.create_organization(p_id uuid, p_name text, p_slug text, p_region text, p_data_mode text)
returns uuid
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_user uuid := app.require_user();
begin
  if p_id is null or p_id = app.platform_org() then
    raise exception 'not an organization id' using errcode = '22023';
  end if;
  insert into public.organizations (id, name, slug, region, data_mode)
  values (p_id, p_name, p_slug, coalesce(p_region, 'us'), coalesce(p_data_mode, 'metadata_only'));
  insert into public.memberships (organization_id, user_id, role) values (p_id, v_user, 'owner');
  return p_id;
end
$$;

-- What the server calls: app.create_organization(), the creation recorded in the new
-- organization's audit log with the request's metadata, and the organization as created, all in
-- this statement. On Citus, once the definer has written an organization's rows in a transaction,
-- the app role may touch none of that organization's tables in it (their placements are on the
-- definer's connections; a view of the definer's does not help, the connection is the caller's),
-- so the definer writes the entry and reads the row back too.
drop function if exists app.create_organization(uuid, text, text, text, text, inet, text, text);
create or replace function app.create_organization_recorded(
  p_id uuid, p_name text, p_slug text, p_region text, p_data_mode text, p_ip inet, p_user_agent text,
  p_request_id text)
returns table (id uuid, name text, slug text, region text, data_mode text, created_at timestamptz,
               updated_at timestamptz, row_version bigint)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform app.create_organization(p_id, p_name, p_slug, p_region, p_data_mode);
  perform app.audit_append(p_id, 'user', app.current_user_id(), 'organization.create', 'organization', p_id::text,
                           'allowed',
                           jsonb_build_object('name', p_name, 'slug', p_slug, 'region', coalesce(p_region, 'us'),
                                              'data_mode', coalesce(p_data_mode, 'metadata_only')),
                           p_ip, p_user_agent, p_request_id);
  return query
    select o.id, o.name, o.slug, o.region, o.data_mode, o.created_at, o.updated_at, o.row_version
      from public.organizations o where o.id = p_id;
end
$$;

-- Accept an invitation for the current user: it must exist with this secret, be neither
-- expired, revoked nor used, and still be within what its inviter may grant today (the inviter
-- is still a member with members:manage and every permission of the role, and the workspaces lie
-- within the inviter's restriction, if any). The membership carries the invitation's workspace
-- restriction. Recorded in the organization's audit log, in this transaction.
-- Errors: TY010 unknown, TY011 expired, TY012 revoked, TY013 used, TY014 beyond the inviter.
create or replace function app.accept_invitation(
  p_invitation uuid, p_token_hash bytea, p_ip inet, p_user_agent text, p_request_id text)
returns uuid
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_user uuid := app.require_user();
  v public.invitations;
  v_inviter public.memberships;
begin
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
  select * into v_inviter from public.memberships m
  where m.organization_id = v.organization_id and m.user_id = v.invited_by;
  if not found
     or not 'members:manage' = any (app.member_permissions(v.organization_id, v.invited_by))
     or not app.role_grants_in(v.organization_id, v.role, v.custom_role_id)
            <@ app.member_permissions(v.organization_id, v.invited_by)
     or (v_inviter.restricted and (v.workspace_ids is null or exists (
           select 1 from unnest(v.workspace_ids) w(id)
           where not exists (select 1 from public.member_workspaces mw
                             where mw.organization_id = v.organization_id and mw.user_id = v.invited_by
                               and mw.workspace_id = w.id)))) then
    raise exception 'the invitation grants more than its inviter may now give' using errcode = 'TY014';
  end if;
  insert into public.memberships (organization_id, user_id, role, custom_role_id, restricted)
  values (v.organization_id, v_user, v.role, v.custom_role_id, v.workspace_ids is not null);
  insert into public.member_workspaces (organization_id, user_id, workspace_id)
  select v.organization_id, v_user, w.id
  from public.workspaces w where w.organization_id = v.organization_id and w.id = any (v.workspace_ids);
  update public.invitations set accepted_at = now(), accepted_by = v_user
  where organization_id = v.organization_id and id = v.id;
  perform app.audit_append(v.organization_id, 'user', v_user, 'invitation.accept', 'invitation', v.id::text,
                           'allowed',
                           jsonb_build_object('role', v.role, 'custom_role_id', v.custom_role_id,
                                              'workspace_ids', v.workspace_ids),
                           p_ip, p_user_agent, p_request_id);
  return v.organization_id;
end
$$;

-- API keys: a presented key is looked up by id and found only when its secret matches (the
-- server compares again in constant time). Use is recorded at most once a minute per key, and
-- only for the key whose secret is presented.
drop function if exists app.find_api_key(uuid);
drop function if exists app.touch_api_key(uuid);

-- PL/pgSQL, not SQL: Citus cannot plan a distributed query inside a SQL function with parameters
-- ("could not create distributed plan"); PL/pgSQL hands it the query with the values bound.
create or replace function app.find_api_key(p_key uuid, p_hash bytea)
returns table (organization_id uuid, secret_hash bytea, active boolean)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
begin
  return query
  select k.organization_id, k.secret_hash,
         k.revoked_at is null and (k.expires_at is null or k.expires_at > now())
  from public.api_keys k
  where k.id = p_key and k.secret_hash = p_hash;
end
$$;

create or replace function app.touch_api_key(p_key uuid, p_hash bytea)
returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  update public.api_keys set last_used_at = now()
  where id = p_key and secret_hash = p_hash
    and (last_used_at is null or last_used_at < now() - interval '1 minute');
end
$$;

-- Every deleted organization leaves a tombstone naming the transaction that deleted it. (The
-- update takes the inserted row's values: Citus refuses a function in DO UPDATE SET.)
create or replace function app.organization_tombstone() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  insert into public.organization_tombstones (organization_id, deleted_at, deleted_xid)
  values (old.id, now(), pg_current_xact_id())
  on conflict (organization_id) do update set deleted_at = excluded.deleted_at, deleted_xid = excluded.deleted_xid;
  return old;
end
$$;

-- Anonymise the audit chain of the organization deleted in this very transaction (by a member
-- allowed to delete it): actors, addresses, user agents, request ids, people as targets and
-- details are removed; the chain is re-sealed and the rewrite itself is appended. Any other
-- organization, the platform chain included, is refused.
create or replace function app.anonymise_organization_audit(p_org uuid) returns bigint
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_prev bytea := '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea;
  v_row public.audit_events;
  v_count bigint := 0;
begin
  if p_org is null or p_org = app.platform_org()
     or exists (select 1 from public.organizations where id = p_org)
     or not exists (select 1 from public.organization_tombstones t
                    where t.organization_id = p_org and t.deleted_xid = pg_current_xact_id()) then
    raise exception 'only the organization deleted in this transaction can be anonymised' using errcode = '42501';
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
  perform app.audit_append(p_org, 'system', null, 'audit.anonymise', 'organization', p_org::text, 'allowed',
                           jsonb_build_object('entries', v_count));
  return v_count;
end
$$;

-- Every organization the user in context belongs to, with their role there: their memberships
-- (their own, by the verified user alone) and each organization, read as the definer. A function,
-- not a view: Citus reads a view's tables on the workers as the caller, whom the policy on
-- organizations shows only the organization in context (app.user_organizations, the view the
-- previous release reads, stays in policies/20_organizations.sql).
create or replace function app.caller_organizations()
returns table (id uuid, name text, slug text, region text, data_mode text, created_at timestamptz,
               updated_at timestamptz, row_version bigint, role text)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return query
  select o.id, o.name, o.slug, o.region, o.data_mode, o.created_at, o.updated_at, o.row_version, m.role
    from public.memberships m
    join public.organizations o on o.id = m.organization_id
   where m.user_id = app.current_user_id();
end
$$;

call app.install_definer(array[
    'app.caller_organizations()',
    'app.create_organization(uuid, text, text, text, text)',
    'app.create_organization_recorded(uuid, text, text, text, text, inet, text, text)',
    'app.accept_invitation(uuid, bytea, inet, text, text)',
    'app.find_api_key(uuid, bytea)',
    'app.touch_api_key(uuid, bytea)',
    'app.anonymise_organization_audit(uuid)'
], '{tenantry_app}');
call app.install_definer(array['app.organization_tombstone()'], '{}');
