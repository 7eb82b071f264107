-- Feature flags. Apply as the owner, after migrations. The platform's flag definitions are read
-- by every request that evaluates flags (they hold no tenant data) and changed only through
-- app.admin_put_flag(). An organization's configuration and its platform targeting are read with
-- flags:read; the configuration is changed with flags:write, the targeting only through
-- app.admin_target_flag().
begin;
set local role tenantry_owner;

revoke all on public.feature_flags, public.organization_flags, public.feature_flag_targets from tenantry_app;
grant select on public.feature_flags to tenantry_app;
grant select, insert, delete on public.organization_flags to tenantry_app;
grant update (enabled, rollout_percentage, allow_users, deny_users, updated_by) on public.organization_flags to tenantry_app;
grant select on public.feature_flag_targets to tenantry_app;
grant select, insert, update (description, default_enabled, kill_switch) on public.feature_flags to tenantry_definer;
grant select, insert, delete, update (enabled) on public.feature_flag_targets to tenantry_definer;

drop policy if exists feature_flags_select on public.feature_flags;
create policy feature_flags_select on public.feature_flags for select to tenantry_app using (true);

drop policy if exists organization_flags_select on public.organization_flags;
create policy organization_flags_select on public.organization_flags for select to tenantry_app
  using (organization_id = app.current_org_id() and app.has_permission('flags:read'));

drop policy if exists organization_flags_insert on public.organization_flags;
create policy organization_flags_insert on public.organization_flags for insert to tenantry_app
  with check (organization_id = app.current_org_id() and app.has_permission('flags:write'));

drop policy if exists organization_flags_update on public.organization_flags;
create policy organization_flags_update on public.organization_flags for update to tenantry_app
  using (organization_id = app.current_org_id() and app.has_permission('flags:write'))
  with check (organization_id = app.current_org_id() and app.has_permission('flags:write'));

drop policy if exists organization_flags_delete on public.organization_flags;
create policy organization_flags_delete on public.organization_flags for delete to tenantry_app
  using (organization_id = app.current_org_id() and app.has_permission('flags:write'));

drop policy if exists feature_flag_targets_select on public.feature_flag_targets;
create policy feature_flag_targets_select on public.feature_flag_targets for select to tenantry_app
  using (organization_id = app.current_org_id() and app.has_permission('flags:read'));

commit;
