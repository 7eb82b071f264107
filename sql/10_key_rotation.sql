-- Keys at rest. Apply after 09_billing.sql.
set role tenantry_owner;
set check_function_bodies = off;

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

call app.install_definer(array['app.data_keys_to_rewrap(integer, integer)',
                               'app.rewrap_data_key(uuid, uuid, integer, bytea, integer)'], '{tenantry_owner}');
