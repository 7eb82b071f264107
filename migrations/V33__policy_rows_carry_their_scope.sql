-- Issue 18: a version carries its workflow's workspace, so its policy decides from the row and the
-- sealed context alone (a Citus shard cannot query another table inside a policy). A version's
-- workspace is its workflow's for ever: workflows never move between workspaces, and the
-- foreign key says so.
alter table public.workflow_versions add column workspace_id uuid;
update public.workflow_versions v set workspace_id = w.workspace_id
  from public.workflows w
 where w.organization_id = v.organization_id and w.id = v.workflow_id and v.workspace_id is null;
alter table public.workflow_versions alter column workspace_id set not null;

create unique index if not exists workflows_scope_key on public.workflows (organization_id, id, workspace_id);
alter table public.workflow_versions
  add constraint workflow_versions_workflow_scope_fkey
  foreign key (organization_id, workflow_id, workspace_id)
  references public.workflows (organization_id, id, workspace_id) on delete cascade;
