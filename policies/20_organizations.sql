-- Organizations, memberships and the permission catalogue. Apply as the owner, after migrations.
-- Organizations are created only through app.create_organization(); the app role has no INSERT.
-- Region is not updatable by the app role (moving a tenant between regions is a platform job).
begin;
set local role tenantry_owner;

revoke all on public.organizations, public.memberships, public.permissions,
  public.builtin_role_permissions from tenantry_app;
grant select, delete on public.organizations to tenantry_app;
grant update (name, slug, data_mode) on public.organizations to tenantry_app;
grant select, insert, delete on public.memberships to tenantry_app;
grant update (role, custom_role_id, restricted) on public.memberships to tenantry_app;
grant select on public.permissions, public.builtin_role_permissions to tenantry_app;

grant select, insert on public.organizations, public.memberships to tenantry_definer;
grant update (role), delete on public.memberships to tenantry_definer;
grant select, insert on public.member_workspaces to tenantry_definer;
grant select on public.workspaces, public.role_permissions to tenantry_definer;
grant select on public.builtin_role_permissions to tenantry_definer;

-- The organization in context (a member's, or an API key's own). The user's other organizations
-- are listed through user_organizations below: a policy saying "one of mine" would read
-- memberships, which a Citus shard may not do inside a policy.
drop policy if exists organizations_select on public.organizations;
create policy organizations_select on public.organizations for select to tenantry_app
  using (id = app.current_org_id());

-- Every organization the user in context belongs to, with their role there. Read as the view's
-- owner, the definer, limited by the view to the user's own memberships; security_barrier, so
-- no condition of the caller's runs on another organization's row.
create or replace view app.user_organizations with (security_barrier = true) as
  select o.id, o.name, o.slug, o.region, o.data_mode, o.created_at, o.updated_at, o.row_version, m.role
    from public.memberships m
    join public.organizations o on o.id = m.organization_id
   where m.user_id = app.current_user_id();
alter view app.user_organizations owner to tenantry_definer;
revoke all on app.user_organizations from public;
grant select on app.user_organizations to tenantry_app;

drop policy if exists organizations_update on public.organizations;
create policy organizations_update on public.organizations for update to tenantry_app
  using (id = app.current_org_id() and app.has_permission('org:update'))
  with check (id = app.current_org_id() and app.has_permission('org:update'));

drop policy if exists organizations_delete on public.organizations;
create policy organizations_delete on public.organizations for delete to tenantry_app
  using (id = app.current_org_id() and app.has_permission('org:delete'));

-- Members: your own memberships everywhere, and every membership of the organization in context.
drop policy if exists memberships_select on public.memberships;
create policy memberships_select on public.memberships for select to tenantry_app
  using (user_id = app.current_user_id()
         or organization_id = app.current_org_id());

-- Managing members needs members:manage, and every membership touched (before and after) must
-- be one the principal could grant: it holds every permission of that role (app.can_grant_role),
-- so an admin can neither make, change nor remove an owner, and a custom role holding more than
-- the caller is out of reach too. A principal restricted to some workspaces only adds restricted
-- members, never lifts a restriction, and touches only members whose workspaces lie within its
-- own (app.member_within_restriction). The policies decide from the sealed context; the role's
-- permissions and the member's workspaces are other rows, so memberships_check_grant (below)
-- checks those.
drop policy if exists memberships_insert on public.memberships;
create policy memberships_insert on public.memberships for insert to tenantry_app
  with check (organization_id = app.current_org_id()
              and app.has_permission('members:manage')
              and (not app.workspace_restricted() or restricted));

drop policy if exists memberships_update on public.memberships;
create policy memberships_update on public.memberships for update to tenantry_app
  using (organization_id = app.current_org_id()
         and app.has_permission('members:manage'))
  with check (organization_id = app.current_org_id()
              and app.has_permission('members:manage')
              and (not app.workspace_restricted() or restricted));

drop policy if exists memberships_delete on public.memberships;
create policy memberships_delete on public.memberships for delete to tenantry_app
  using (organization_id = app.current_org_id()
         and app.has_permission('members:manage'));

create or replace function app.memberships_check_grant() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if not app.row_checks_apply(tg_relid) then
    return case when tg_op = 'DELETE' then old else new end;
  end if;
  if tg_op in ('UPDATE', 'DELETE')
     and not (app.can_grant_role(old.role, old.custom_role_id) and app.member_within_restriction(old.user_id)) then
    raise exception 'row-level security check: this member is beyond the principal''s reach'
      using errcode = '42501';
  end if;
  if tg_op in ('INSERT', 'UPDATE') and not app.can_grant_role(new.role, new.custom_role_id) then
    raise exception 'row-level security check: this role is beyond the principal''s own'
      using errcode = '42501';
  end if;
  return case when tg_op = 'DELETE' then old else new end;
end
$$;
drop trigger if exists memberships_check_grant on public.memberships;
create trigger memberships_check_grant before insert or update or delete on public.memberships
  for each row execute function app.memberships_check_grant();

-- An organization's consent to sign-in role mappings (app.sync_provider_memberships): read with
-- members:read; given or withdrawn with members:manage, for a role the principal could grant
-- itself, and never by a restricted principal (provider-granted members are unrestricted).
revoke all on public.provider_grants from tenantry_app;
grant select, insert, delete on public.provider_grants to tenantry_app;
grant select on public.provider_grants to tenantry_definer;

drop policy if exists provider_grants_select on public.provider_grants;
create policy provider_grants_select on public.provider_grants for select to tenantry_app
  using (organization_id = app.current_org_id() and app.has_permission('members:read'));

drop policy if exists provider_grants_insert on public.provider_grants;
create policy provider_grants_insert on public.provider_grants for insert to tenantry_app
  with check (organization_id = app.current_org_id()
              and app.has_permission('members:manage')
              and not app.workspace_restricted());

drop policy if exists provider_grants_delete on public.provider_grants;
create policy provider_grants_delete on public.provider_grants for delete to tenantry_app
  using (organization_id = app.current_org_id()
         and app.has_permission('members:manage'));

create or replace function app.provider_grants_check_grant() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if app.row_checks_apply(tg_relid)
     and not app.can_grant_role(case when tg_op = 'DELETE' then old.role else new.role end, null) then
    raise exception 'row-level security check: this role is beyond the principal''s own'
      using errcode = '42501';
  end if;
  return case when tg_op = 'DELETE' then old else new end;
end
$$;
drop trigger if exists provider_grants_check_grant on public.provider_grants;
create trigger provider_grants_check_grant before insert or delete on public.provider_grants
  for each row execute function app.provider_grants_check_grant();

-- Tombstones of deleted organizations: written by their delete trigger, read by the definer.
revoke all on public.organization_tombstones from tenantry_app;
grant select, insert, update on public.organization_tombstones to tenantry_definer;

commit;
