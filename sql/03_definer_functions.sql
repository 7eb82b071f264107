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
create or replace function app.current_org_id() returns uuid
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return (select m.organization_id
          from public.memberships m
          where m.organization_id = app.requested_org_id()
            and m.user_id = app.current_user_id());
end
$$;

-- The current user's role and permissions in the requested organization (no row: not a member).
create or replace function app.current_membership(out role text, out permissions text[])
returns setof record
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return query
    select m.role,
           coalesce((select array_agg(rp.permission order by rp.permission)
                     from public.builtin_role_permissions rp
                     where rp.role = m.role), '{}')
    from public.memberships m
    where m.organization_id = app.requested_org_id()
      and m.user_id = app.current_user_id();
end
$$;

-- Does the current user hold `permission` in the requested organization? Write policies call it.
create or replace function app.has_permission(permission text) returns boolean
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return exists (
    select 1
    from public.memberships m
    join public.builtin_role_permissions rp on rp.role = m.role
    where m.organization_id = app.requested_org_id()
      and m.user_id = app.current_user_id()
      and rp.permission = has_permission.permission
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

alter function app.current_org_id() owner to tenantry_definer;
alter function app.current_membership() owner to tenantry_definer;
alter function app.has_permission(text) owner to tenantry_definer;
alter function app.provision_user(text, text, text, text) owner to tenantry_definer;
alter function app.create_organization(uuid, text, text, text, text) owner to tenantry_definer;

revoke all on function app.current_org_id(), app.current_membership(), app.has_permission(text),
  app.provision_user(text, text, text, text), app.create_organization(uuid, text, text, text, text)
  from public;
grant execute on function app.current_org_id(), app.current_membership(), app.has_permission(text),
  app.provision_user(text, text, text, text), app.create_organization(uuid, text, text, text, text)
  to tenantry_app;
