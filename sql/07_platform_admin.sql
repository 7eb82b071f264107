-- Platform administration. Each function checks that the user in context is a platform admin
-- (platform_admins, granted with `tenantry admin` on the admin connection), does one thing, and
-- records it on the platform chain (and the organization's chain when it concerns one). The
-- organization or flag an argument names is the admin's to choose: they act platform-wide.
-- Apply after 06_organizations.sql.
set role tenantry_owner;
set check_function_bodies = off;

create or replace function app.is_platform_admin() returns boolean
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return exists (select 1 from public.platform_admins a where a.user_id = app.current_user_id());
end
$$;

create or replace function app.require_platform_admin() returns uuid
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if not app.is_platform_admin() then
    raise exception 'not a platform admin' using errcode = '42501';
  end if;
  return app.current_user_id();
end
$$;

-- One change, on the platform chain and (for an organization) on its own.
create or replace function app.admin_audit(
  p_org uuid, p_action text, p_target_type text, p_target_id text, p_details jsonb, p_ip inet, p_user_agent text,
  p_request_id text)
returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if p_org is not null then
    perform app.audit_append(p_org, 'platform_admin', app.current_user_id(), p_action, p_target_type, p_target_id,
                             'allowed', p_details, p_ip, p_user_agent, p_request_id);
  end if;
  perform app.audit_append(app.platform_org(), 'platform_admin', app.current_user_id(), p_action, p_target_type,
                           p_target_id, 'allowed', p_details, p_ip, p_user_agent, p_request_id);
end
$$;

create or replace function app.admin_list_organizations(p_after uuid, p_limit int)
returns table (id uuid, name text, slug text, region text, data_mode text, suspended_at timestamptz,
               created_at timestamptz, members bigint)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform app.require_platform_admin();
  return query
    select o.id, o.name, o.slug, o.region, o.data_mode, o.suspended_at, o.created_at,
           (select count(*) from public.memberships m where m.organization_id = o.id)
    from public.organizations o where o.id > coalesce(p_after, app.platform_org()) order by o.id
    limit least(greatest(p_limit, 1), 500);
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
  v_changed int;
begin
  perform app.require_platform_admin();
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
  perform app.admin_audit(p_org, 'organization.' || p_action, 'organization', p_org::text,
                          jsonb_build_object('action', p_action, 'region', p_region), p_ip, p_user_agent, p_request_id);
  return true;
end
$$;

-- Platform feature flags: create or change a flag, and target one organization.
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
  perform app.require_platform_admin();
  insert into public.feature_flags (key, description, default_enabled, kill_switch)
  values (p_key, coalesce(p_description, ''), coalesce(p_default, false), coalesce(p_kill_switch, false))
  on conflict (key) do update
    set description = coalesce(p_description, feature_flags.description),
        default_enabled = coalesce(p_default, feature_flags.default_enabled),
        kill_switch = coalesce(p_kill_switch, feature_flags.kill_switch)
  returning (xmax = 0) into v_created;
  perform app.admin_audit(null, case when v_created then 'flag.create' else 'flag.update' end, 'feature_flag', p_key,
                          jsonb_build_object('default_enabled', p_default, 'kill_switch', p_kill_switch,
                                             'description_changed', p_description is not null),
                          p_ip, p_user_agent, p_request_id);
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
begin
  perform app.require_platform_admin();
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
  perform app.admin_audit(p_org, 'flag.target', 'feature_flag', p_key,
                          jsonb_build_object('flag', p_key, 'enabled', p_enabled), p_ip, p_user_agent, p_request_id);
  return true;
end
$$;

-- Payment events received, newest first (by default those nobody could route).
create or replace function app.admin_list_webhook_events(p_status text, p_limit int)
returns table (provider text, event_id text, event_type text, organization_ref uuid, event_created_at timestamptz,
               received_at timestamptz, status text, detail text)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform app.require_platform_admin();
  return query
    select e.provider, e.event_id, e.event_type, e.organization_ref, e.event_created_at, e.received_at, e.status,
           e.detail
    from public.webhook_events e
    where p_status is null or e.status = p_status
    order by e.received_at desc
    limit least(greatest(p_limit, 1), 500);
end
$$;

-- Every organization, one page under a sort, for the admin list (src/api/admin.rs): p_sort is
-- created_at, -created_at, name or -name; p_backwards pages towards the start from the key
-- (p_key_text, p_key_id), returning the nearest rows first. Each branch is a fixed statement on
-- the primary key or organizations_by_name.
create or replace function app.admin_list_organizations(
  p_sort text, p_backwards boolean, p_key_text text, p_key_id uuid, p_limit int, p_suspended boolean, p_region text)
returns table (id uuid, name text, slug text, region text, data_mode text, suspended_at timestamptz,
               created_at timestamptz, members bigint)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
-- Planned for the values of each call: a cached generic plan cannot see which filters are absent.
set plan_cache_mode = force_custom_plan
as $$
declare
  v_limit int := least(greatest(p_limit, 1), 501);
  v_ascending boolean := (p_sort in ('created_at', 'name')) <> coalesce(p_backwards, false);
begin
  perform app.require_platform_admin();
  if p_sort not in ('created_at', '-created_at', 'name', '-name') then
    raise exception 'unknown sort' using errcode = '22023';
  end if;
  if p_sort in ('created_at', '-created_at') and v_ascending then
    return query
      select o.id, o.name, o.slug, o.region, o.data_mode, o.suspended_at, o.created_at,
             (select count(*) from public.memberships m where m.organization_id = o.id)
      from public.organizations o
      where o.id <> app.platform_org() and (p_key_id is null or o.id > p_key_id)
        and (p_suspended is null or (o.suspended_at is not null) = p_suspended)
        and (p_region is null or o.region = p_region)
      order by o.id limit v_limit;
  elsif p_sort in ('created_at', '-created_at') then
    return query
      select o.id, o.name, o.slug, o.region, o.data_mode, o.suspended_at, o.created_at,
             (select count(*) from public.memberships m where m.organization_id = o.id)
      from public.organizations o
      where o.id <> app.platform_org() and (p_key_id is null or o.id < p_key_id)
        and (p_suspended is null or (o.suspended_at is not null) = p_suspended)
        and (p_region is null or o.region = p_region)
      order by o.id desc limit v_limit;
  elsif v_ascending then
    return query
      select o.id, o.name, o.slug, o.region, o.data_mode, o.suspended_at, o.created_at,
             (select count(*) from public.memberships m where m.organization_id = o.id)
      from public.organizations o
      where o.id <> app.platform_org() and (p_key_id is null or (o.name, o.id) > (p_key_text, p_key_id))
        and (p_suspended is null or (o.suspended_at is not null) = p_suspended)
        and (p_region is null or o.region = p_region)
      order by o.name, o.id limit v_limit;
  else
    return query
      select o.id, o.name, o.slug, o.region, o.data_mode, o.suspended_at, o.created_at,
             (select count(*) from public.memberships m where m.organization_id = o.id)
      from public.organizations o
      where o.id <> app.platform_org() and (p_key_id is null or (o.name, o.id) < (p_key_text, p_key_id))
        and (p_suspended is null or (o.suspended_at is not null) = p_suspended)
        and (p_region is null or o.region = p_region)
      order by o.name desc, o.id desc limit v_limit;
  end if;
end
$$;

-- Payment events, one page: newest first (p_newest_first) or oldest first, from the key
-- (p_key_at, p_key_provider, p_key_event), nearest rows first. Index webhook_events_by_received.
create or replace function app.admin_list_webhook_events(
  p_status text, p_newest_first boolean, p_backwards boolean, p_key_at timestamptz, p_key_provider text,
  p_key_event text, p_limit int)
returns table (provider text, event_id text, event_type text, organization_ref uuid, event_created_at timestamptz,
               received_at timestamptz, status text, detail text)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_custom_plan
as $$
declare
  v_limit int := least(greatest(p_limit, 1), 501);
begin
  perform app.require_platform_admin();
  if coalesce(p_newest_first, true) <> coalesce(p_backwards, false) then
    return query
      select e.provider, e.event_id, e.event_type, e.organization_ref, e.event_created_at, e.received_at, e.status,
             e.detail
      from public.webhook_events e
      where (p_status is null or e.status = p_status)
        and (p_key_at is null or (e.received_at, e.provider, e.event_id) < (p_key_at, p_key_provider, p_key_event))
      order by e.received_at desc, e.provider desc, e.event_id desc limit v_limit;
  else
    return query
      select e.provider, e.event_id, e.event_type, e.organization_ref, e.event_created_at, e.received_at, e.status,
             e.detail
      from public.webhook_events e
      where (p_status is null or e.status = p_status)
        and (p_key_at is null or (e.received_at, e.provider, e.event_id) > (p_key_at, p_key_provider, p_key_event))
      order by e.received_at, e.provider, e.event_id limit v_limit;
  end if;
end
$$;

call app.install_definer(array[
    'app.is_platform_admin()',
    'app.admin_list_organizations(uuid, int)',
    'app.admin_change_organization(uuid, text, text, inet, text, text)',
    'app.admin_put_flag(text, text, boolean, boolean, inet, text, text)',
    'app.admin_target_flag(text, uuid, boolean, inet, text, text)',
    'app.admin_list_webhook_events(text, int)',
    'app.admin_list_organizations(text, boolean, text, uuid, int, boolean, text)',
    'app.admin_list_webhook_events(text, boolean, boolean, timestamptz, text, text, int)'
], '{tenantry_app}');
call app.install_definer(array['app.require_platform_admin()',
                               'app.admin_audit(uuid, text, text, text, jsonb, inet, text, text)'], '{}');
