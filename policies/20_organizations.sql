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
grant update (role, custom_role_id) on public.memberships to tenantry_app;
grant select on public.permissions, public.builtin_role_permissions to tenantry_app;

grant select, insert on public.organizations, public.memberships to tenantry_definer;
grant update (role), delete on public.memberships to tenantry_definer;
grant select on public.builtin_role_permissions to tenantry_definer;

-- The organization in context (a member's, or an API key's own), and every organization the
-- user belongs to (memberships_select shows users their own rows).
drop policy if exists organizations_select on public.organizations;
create policy organizations_select on public.organizations for select to tenantry_app
  using (id = (select app.current_org_id())
         or id in (select m.organization_id from public.memberships m
                   where m.user_id = (select app.current_user_id())));

drop policy if exists organizations_update on public.organizations;
create policy organizations_update on public.organizations for update to tenantry_app
  using (id = (select app.current_org_id()) and (select app.has_permission('org:update')))
  with check (id = (select app.current_org_id()) and (select app.has_permission('org:update')));

drop policy if exists organizations_delete on public.organizations;
create policy organizations_delete on public.organizations for delete to tenantry_app
  using (id = (select app.current_org_id()) and (select app.has_permission('org:delete')));

-- Members: your own memberships everywhere, and every membership of the organization in context.
drop policy if exists memberships_select on public.memberships;
create policy memberships_select on public.memberships for select to tenantry_app
  using (user_id = (select app.current_user_id())
         or organization_id = (select app.current_org_id()));

-- Managing members needs members:manage; touching an owner row (before or after) needs
-- owners:manage as well, so an admin can neither make an owner nor remove one.
drop policy if exists memberships_insert on public.memberships;
create policy memberships_insert on public.memberships for insert to tenantry_app
  with check (organization_id = (select app.current_org_id())
              and (select app.has_permission('members:manage'))
              and (role <> 'owner' or (select app.has_permission('owners:manage')))
              -- A custom role can be handed out only by someone holding all it grants.
              and not exists (select 1 from public.role_permissions rp
                              where rp.organization_id = memberships.organization_id
                                and rp.role_id = memberships.custom_role_id
                                and not app.has_permission(rp.permission)));

drop policy if exists memberships_update on public.memberships;
create policy memberships_update on public.memberships for update to tenantry_app
  using (organization_id = (select app.current_org_id())
         and (select app.has_permission('members:manage'))
         and (role <> 'owner' or (select app.has_permission('owners:manage'))))
  with check (organization_id = (select app.current_org_id())
              and (select app.has_permission('members:manage'))
              and (role <> 'owner' or (select app.has_permission('owners:manage')))
              -- A custom role can be handed out only by someone holding all it grants.
              and not exists (select 1 from public.role_permissions rp
                              where rp.organization_id = memberships.organization_id
                                and rp.role_id = memberships.custom_role_id
                                and not app.has_permission(rp.permission)));

drop policy if exists memberships_delete on public.memberships;
create policy memberships_delete on public.memberships for delete to tenantry_app
  using (organization_id = (select app.current_org_id())
         and (select app.has_permission('members:manage'))
         and (role <> 'owner' or (select app.has_permission('owners:manage'))));

commit;
