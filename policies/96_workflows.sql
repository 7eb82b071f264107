-- Workflows. Apply as the owner, after migrations. Reading needs workflows:read, drafts
-- workflows:write; versions are created only by app.publish_workflow() (workflows:publish) and
-- never changed. A member restricted to some workspaces sees only their workflows.
begin;
set local role tenantry_owner;

revoke all on public.workflows, public.workflow_versions from tenantry_app;
grant select, insert on public.workflows to tenantry_app;
grant update (name, draft, draft_edited_at, archived_at) on public.workflows to tenantry_app;
grant select on public.workflow_versions to tenantry_app;
grant select, update (latest_version) on public.workflows to tenantry_definer;
grant select, insert on public.workflow_versions to tenantry_definer;

drop policy if exists workflows_select on public.workflows;
create policy workflows_select on public.workflows for select to tenantry_app
  using (organization_id = app.current_org_id() and app.has_permission('workflows:read')
         and app.workspace_visible(workspace_id));

drop policy if exists workflows_insert on public.workflows;
create policy workflows_insert on public.workflows for insert to tenantry_app
  with check (organization_id = app.current_org_id() and app.has_permission('workflows:write')
              and app.workspace_allowed(workspace_id));

drop policy if exists workflows_update on public.workflows;
create policy workflows_update on public.workflows for update to tenantry_app
  using (organization_id = app.current_org_id() and app.has_permission('workflows:write')
         and app.workspace_allowed(workspace_id))
  with check (organization_id = app.current_org_id() and app.has_permission('workflows:write'));

drop policy if exists workflow_versions_select on public.workflow_versions;
-- A version is visible exactly when its workflow is: the same permission and workspace, which
-- the version carries (migration V33), so the policy reads no other table.
create policy workflow_versions_select on public.workflow_versions for select to tenantry_app
  using (organization_id = app.current_org_id() and app.has_permission('workflows:read')
         and app.workspace_visible(workspace_id));

commit;
