-- Workflow runs. Apply as the owner, after migrations. Reading needs workflows:read; starting
-- and cancelling need runs:execute. A worker (app.current_run_claim() set) sees and finishes only
-- the run it holds the claim on, and only it can read that run's transient input. The claim
-- token column is not readable by the app role at all. Transitions are checked by the
-- workflow_runs_transition trigger whoever writes.
begin;
set local role tenantry_owner;

revoke all on public.workflow_runs, public.workflow_run_inputs from tenantry_app;
grant select (organization_id, workspace_id, id, workflow_id, version, status, input, output, input_bytes,
              output_bytes, error_code, failed_step, error_message, attempts, claimed_by, lease_expires_at,
              created_by, created_by_api_key, created_at, started_at, finished_at, row_version)
  on public.workflow_runs to tenantry_app;
grant insert (organization_id, workspace_id, id, workflow_id, version, input, input_bytes, created_by,
              created_by_api_key, traceparent)
  on public.workflow_runs to tenantry_app;
grant update (status, output, output_bytes, error_code, failed_step, error_message, finished_at)
  on public.workflow_runs to tenantry_app;
grant select, insert on public.workflow_run_inputs to tenantry_app;
grant select, update on public.workflow_runs to tenantry_definer;
grant select, delete on public.workflow_run_inputs to tenantry_definer;

drop policy if exists workflow_runs_select on public.workflow_runs;
create policy workflow_runs_select on public.workflow_runs for select to tenantry_app
  using (organization_id = app.current_org_id() and app.has_permission('workflows:read')
         and (app.without_run_claim() or id = app.current_run_id())
         and app.workspace_visible(workspace_id));

-- Only a live workflow in the same workspace can be started. The policy reads the sealed context;
-- the workflow is another row, so the check on it is a trigger (below), as it must be on Citus,
-- where a policy runs inside a shard query and may read no other table, while a trigger may read
-- the co-located shard.
drop policy if exists workflow_runs_insert on public.workflow_runs;
create policy workflow_runs_insert on public.workflow_runs for insert to tenantry_app
  with check (organization_id = app.current_org_id() and app.has_permission('runs:execute')
              and app.without_run_claim()
              and app.workspace_allowed(workspace_id));

drop policy if exists workflow_runs_update on public.workflow_runs;
create policy workflow_runs_update on public.workflow_runs for update to tenantry_app
  using (organization_id = app.current_org_id() and app.has_permission('runs:execute')
         and (app.without_run_claim() or id = app.current_run_id())
         and app.workspace_allowed(workspace_id))
  with check (organization_id = app.current_org_id() and app.has_permission('runs:execute'));

drop policy if exists workflow_run_inputs_select on public.workflow_run_inputs;
create policy workflow_run_inputs_select on public.workflow_run_inputs for select to tenantry_app
  using (organization_id = app.current_org_id() and run_id = app.current_run_id());

-- Written with its run (still queued, checked by the trigger below), by whoever may start runs
-- there.
drop policy if exists workflow_run_inputs_insert on public.workflow_run_inputs;
create policy workflow_run_inputs_insert on public.workflow_run_inputs for insert to tenantry_app
  with check (organization_id = app.current_org_id() and app.has_permission('runs:execute')
              and app.without_run_claim());

-- The row checks: what the policies above would need another row for. They bind the roles the
-- policies bind (app.row_checks_apply) and read that row as the caller, through its policies.
create or replace function app.workflow_runs_check_workflow() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if app.row_checks_apply(tg_relid)
     and not exists (select 1 from public.workflows w
                      where w.organization_id = new.organization_id and w.id = new.workflow_id
                        and w.workspace_id = new.workspace_id and w.archived_at is null) then
    raise exception 'row-level security check: the run''s workflow is not a live workflow of its workspace'
      using errcode = '42501';
  end if;
  return new;
end
$$;
drop trigger if exists workflow_runs_check_workflow on public.workflow_runs;
create trigger workflow_runs_check_workflow before insert on public.workflow_runs
  for each row execute function app.workflow_runs_check_workflow();

create or replace function app.workflow_run_inputs_check_run() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if app.row_checks_apply(tg_relid)
     and not exists (select 1 from public.workflow_runs r
                      where r.organization_id = new.organization_id and r.id = new.run_id
                        and r.status = 'queued') then
    raise exception 'row-level security check: a run''s input is written only while the run is queued'
      using errcode = '42501';
  end if;
  return new;
end
$$;
drop trigger if exists workflow_run_inputs_check_run on public.workflow_run_inputs;
create trigger workflow_run_inputs_check_run before insert on public.workflow_run_inputs
  for each row execute function app.workflow_run_inputs_check_run();

commit;
