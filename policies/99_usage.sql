-- Usage counters. Apply as the owner, after migrations. Read with billing:read; written only by
-- app.record_usage().
begin;
set local role tenantry_owner;

revoke all on public.usage_counters from tenantry_app;
grant select on public.usage_counters to tenantry_app;
grant select, insert, update (requests) on public.usage_counters to tenantry_definer;

drop policy if exists usage_counters_select on public.usage_counters;
create policy usage_counters_select on public.usage_counters for select to tenantry_app
  using (organization_id = app.current_org_id() and app.has_permission('billing:read'));

commit;
