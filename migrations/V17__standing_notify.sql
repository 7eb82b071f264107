-- A server may cache a principal's standing in an organization (role and permissions, as
-- app.current_principal() reports it) for feature flag evaluation only. Every change that could
-- alter a standing is announced on tenantry_standing: the organization's id, or '*' when it is not
-- tied to one organization (a session or a user ended, the built-in roles changed). The payload
-- carries no other data.

create or replace function app.standing_notify() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if tg_table_name in ('sessions', 'users', 'builtin_role_permissions') then
    perform pg_notify('tenantry_standing', '*');
  elsif tg_table_name = 'organizations' then
    perform pg_notify('tenantry_standing', coalesce(new.id, old.id)::text);
  else
    perform pg_notify('tenantry_standing', coalesce(new.organization_id, old.organization_id)::text);
  end if;
  return null;
end
$$;

create trigger memberships_standing_notify after insert or update or delete on public.memberships
  for each row execute function app.standing_notify();
create trigger role_permissions_standing_notify after insert or update or delete on public.role_permissions
  for each row execute function app.standing_notify();
create trigger api_keys_standing_notify after update of revoked_at, expires_at, scopes or delete on public.api_keys
  for each row execute function app.standing_notify();
create trigger organizations_standing_notify after update of suspended_at, region or delete on public.organizations
  for each row execute function app.standing_notify();
create trigger sessions_standing_notify after update of revoked_at or delete on public.sessions
  for each statement execute function app.standing_notify();
create trigger users_standing_notify after delete on public.users
  for each statement execute function app.standing_notify();
create trigger builtin_role_permissions_standing_notify after insert or update or delete on public.builtin_role_permissions
  for each statement execute function app.standing_notify();
