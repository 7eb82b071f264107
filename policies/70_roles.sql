-- Custom roles. Apply as the owner, after migrations. Members may see their organization's
-- roles; creating, changing and deleting them needs roles:manage. A permission can be put into
-- a role only by someone who holds it (so a role can never be a way to gain one).
begin;
set local role tenantry_owner;

revoke all on public.roles, public.role_permissions from tenantry_app;
grant select, insert, delete on public.roles to tenantry_app;
grant update (name, description) on public.roles to tenantry_app;
grant select, insert, delete on public.role_permissions to tenantry_app;
grant select on public.roles, public.role_permissions to tenantry_definer;

drop policy if exists roles_select on public.roles;
create policy roles_select on public.roles for select to tenantry_app
  using (organization_id = app.current_org_id());

drop policy if exists roles_insert on public.roles;
create policy roles_insert on public.roles for insert to tenantry_app
  with check (organization_id = app.current_org_id() and app.has_permission('roles:manage'));

drop policy if exists roles_update on public.roles;
create policy roles_update on public.roles for update to tenantry_app
  using (organization_id = app.current_org_id() and app.has_permission('roles:manage'))
  with check (organization_id = app.current_org_id() and app.has_permission('roles:manage'));

drop policy if exists roles_delete on public.roles;
create policy roles_delete on public.roles for delete to tenantry_app
  using (organization_id = app.current_org_id() and app.has_permission('roles:manage'));

drop policy if exists role_permissions_select on public.role_permissions;
create policy role_permissions_select on public.role_permissions for select to tenantry_app
  using (organization_id = app.current_org_id());

drop policy if exists role_permissions_insert on public.role_permissions;
create policy role_permissions_insert on public.role_permissions for insert to tenantry_app
  with check (organization_id = app.current_org_id()
              and app.has_permission('roles:manage')
              and app.has_permission(permission));

drop policy if exists role_permissions_delete on public.role_permissions;
create policy role_permissions_delete on public.role_permissions for delete to tenantry_app
  using (organization_id = app.current_org_id() and app.has_permission('roles:manage'));

commit;
