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

-- The organization in context (a member's, or an API key's own), and every organization the
-- user belongs to (memberships_select shows users their own rows).
drop policy if exists organizations_select on public.organizations;
create policy organizations_select on public.organizations for select to tenantry_app
  using (id = app.current_org_id()
         or id in (select m.organization_id from public.memberships m
                   where m.user_id = app.current_user_id()));

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
-- own (app.member_within_restriction).
drop policy if exists memberships_insert on public.memberships;
create policy memberships_insert on public.memberships for insert to tenantry_app
  with check (organization_id = app.current_org_id()
              and app.has_permission('members:manage')
              and app.can_grant_role(role, custom_role_id)
              and (not app.workspace_restricted() or restricted));

drop policy if exists memberships_update on public.memberships;
create policy memberships_update on public.memberships for update to tenantry_app
  using (organization_id = app.current_org_id()
         and app.has_permission('members:manage')
         and app.can_grant_role(role, custom_role_id)
         and app.member_within_restriction(user_id))
  with check (organization_id = app.current_org_id()
              and app.has_permission('members:manage')
              and app.can_grant_role(role, custom_role_id)
              and (not app.workspace_restricted() or restricted));

drop policy if exists memberships_delete on public.memberships;
create policy memberships_delete on public.memberships for delete to tenantry_app
  using (organization_id = app.current_org_id()
         and app.has_permission('members:manage')
         and app.can_grant_role(role, custom_role_id)
         and app.member_within_restriction(user_id));

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
              and not app.workspace_restricted()
              and app.can_grant_role(role, null));

drop policy if exists provider_grants_delete on public.provider_grants;
create policy provider_grants_delete on public.provider_grants for delete to tenantry_app
  using (organization_id = app.current_org_id()
         and app.has_permission('members:manage')
         and app.can_grant_role(role, null));

-- Tombstones of deleted organizations: written by their delete trigger, read by the definer.
revoke all on public.organization_tombstones from tenantry_app;
grant select, insert, update on public.organization_tombstones to tenantry_definer;

commit;
