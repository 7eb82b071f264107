-- Exports. Apply as the owner, after migrations. Creating and reading them needs org:export.
begin;
set local role tenantry_owner;

revoke all on public.exports, public.export_files, public.export_chunks from tenantry_app;
grant select, insert, delete on public.exports, public.export_files, public.export_chunks to tenantry_app;
-- The job's progress: the rest of an export never changes.
grant update (status, error, tables_done, rows_exported, started_at, finished_at, heartbeat_at)
  on public.exports to tenantry_app;

drop policy if exists exports_all on public.exports;
create policy exports_all on public.exports for all to tenantry_app
  using (organization_id = app.current_org_id() and app.has_permission('org:export'))
  with check (organization_id = app.current_org_id() and app.has_permission('org:export'));

drop policy if exists export_files_all on public.export_files;
create policy export_files_all on public.export_files for all to tenantry_app
  using (organization_id = app.current_org_id() and app.has_permission('org:export'))
  with check (organization_id = app.current_org_id() and app.has_permission('org:export'));

drop policy if exists export_chunks_all on public.export_chunks;
create policy export_chunks_all on public.export_chunks for all to tenantry_app
  using (organization_id = app.current_org_id() and app.has_permission('org:export'))
  with check (organization_id = app.current_org_id() and app.has_permission('org:export'));

commit;
