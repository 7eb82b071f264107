-- Workspaces. Apply as the owner, after migrations.
begin;
set local role tenantry_owner;

revoke all on public.workspaces from tenantry_app;
grant select, insert, delete on public.workspaces to tenantry_app;
grant update (name) on public.workspaces to tenantry_app;

drop policy if exists workspaces_select on public.workspaces;
create policy workspaces_select on public.workspaces for select to tenantry_app
  using (organization_id = (select app.current_org_id()));

drop policy if exists workspaces_insert on public.workspaces;
create policy workspaces_insert on public.workspaces for insert to tenantry_app
  with check (organization_id = (select app.current_org_id())
              and (select app.has_permission('workspaces:write')));

drop policy if exists workspaces_update on public.workspaces;
create policy workspaces_update on public.workspaces for update to tenantry_app
  using (organization_id = (select app.current_org_id())
         and (select app.has_permission('workspaces:write')))
  with check (organization_id = (select app.current_org_id())
              and (select app.has_permission('workspaces:write')));

drop policy if exists workspaces_delete on public.workspaces;
create policy workspaces_delete on public.workspaces for delete to tenantry_app
  using (organization_id = (select app.current_org_id())
         and (select app.has_permission('workspaces:delete')));

commit;
