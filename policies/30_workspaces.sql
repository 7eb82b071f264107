-- Workspaces. Apply as the owner, after migrations.
begin;
set local role tenantry_owner;

revoke all on public.workspaces from tenantry_app;
grant select, insert, delete on public.workspaces to tenantry_app;
grant update (name) on public.workspaces to tenantry_app;

drop policy if exists workspaces_select on public.workspaces;
create policy workspaces_select on public.workspaces for select to tenantry_app
  using (organization_id = app.current_org_id() and app.workspace_visible(id));

drop policy if exists workspaces_insert on public.workspaces;
create policy workspaces_insert on public.workspaces for insert to tenantry_app
  with check (organization_id = app.current_org_id()
              and app.has_permission('workspaces:write'));

drop policy if exists workspaces_update on public.workspaces;
create policy workspaces_update on public.workspaces for update to tenantry_app
  using (organization_id = app.current_org_id()
         and app.has_permission('workspaces:write') and app.workspace_allowed(id))
  with check (organization_id = app.current_org_id()
              and app.has_permission('workspaces:write'));

drop policy if exists workspaces_delete on public.workspaces;
create policy workspaces_delete on public.workspaces for delete to tenantry_app
  using (organization_id = app.current_org_id()
         and app.has_permission('workspaces:delete') and app.workspace_allowed(id));

-- Workspace restrictions of members: visible to the organization, managed with members:manage,
-- for members the principal could grant its role to (no one above it). A restricted principal
-- lists and unlists only its own workspaces; lifting a restriction is an update of
-- memberships.restricted, which it cannot make (policies/20_organizations.sql).
revoke all on public.member_workspaces from tenantry_app;
grant select, insert, delete on public.member_workspaces to tenantry_app;
grant select on public.member_workspaces to tenantry_definer;

drop policy if exists member_workspaces_select on public.member_workspaces;
create policy member_workspaces_select on public.member_workspaces for select to tenantry_app
  using (organization_id = app.current_org_id());

drop policy if exists member_workspaces_insert on public.member_workspaces;
create policy member_workspaces_insert on public.member_workspaces for insert to tenantry_app
  with check (organization_id = app.current_org_id() and app.has_permission('members:manage')
              and app.workspace_allowed(workspace_id)
              and exists (select 1 from public.memberships m
                          where m.organization_id = member_workspaces.organization_id
                            and m.user_id = member_workspaces.user_id
                            and app.can_grant_role(m.role, m.custom_role_id)));

drop policy if exists member_workspaces_delete on public.member_workspaces;
create policy member_workspaces_delete on public.member_workspaces for delete to tenantry_app
  using (organization_id = app.current_org_id() and app.has_permission('members:manage')
         and app.workspace_allowed(workspace_id)
         and exists (select 1 from public.memberships m
                     where m.organization_id = member_workspaces.organization_id
                       and m.user_id = member_workspaces.user_id
                       and app.can_grant_role(m.role, m.custom_role_id)));

commit;
