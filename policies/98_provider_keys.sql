-- Provider keys and organization data keys. Apply as the owner, after migrations. Both hold
-- ciphertext only; the data key also seals webhook signing secrets (webhooks:manage). Managing
-- keys needs provider_keys:manage (and, for a member restricted to some workspaces, one of
-- theirs). A worker running a run may read the keys of that run's workspace, and its
-- organization's wrapped data key, to use them; so may a dispatcher delivering one of the
-- organization's webhooks (it signs with the endpoint's secret). Master key rotation goes through the
-- owner-only functions app.data_keys_to_rewrap() and app.rewrap_data_key().
begin;
set local role tenantry_owner;

revoke all on public.organization_data_keys, public.provider_keys from tenantry_app;
grant select, insert on public.organization_data_keys to tenantry_app;
grant select, insert, delete on public.provider_keys to tenantry_app;
grant update (data_key_id, nonce, ciphertext, key_suffix, endpoint, last_verified_at) on public.provider_keys to tenantry_app;
grant select, update (wrapped_key, master_key_version, rewrapped_at) on public.organization_data_keys to tenantry_definer;

drop policy if exists organization_data_keys_select on public.organization_data_keys;
create policy organization_data_keys_select on public.organization_data_keys for select to tenantry_app
  using (organization_id = app.current_org_id()
         and (app.has_permission('provider_keys:manage') or app.has_permission('webhooks:manage')
              or app.holds_verified_claim()));

drop policy if exists organization_data_keys_insert on public.organization_data_keys;
create policy organization_data_keys_insert on public.organization_data_keys for insert to tenantry_app
  with check (organization_id = app.current_org_id()
              and (app.has_permission('provider_keys:manage') or app.has_permission('webhooks:manage'))
              and app.without_run_claim());

drop policy if exists provider_keys_select on public.provider_keys;
create policy provider_keys_select on public.provider_keys for select to tenantry_app
  using (organization_id = app.current_org_id()
         and ((app.has_permission('provider_keys:manage') and app.without_run_claim()
               and app.workspace_visible(workspace_id))
              or workspace_id = app.current_claim('run', 'workspace')));

drop policy if exists provider_keys_insert on public.provider_keys;
create policy provider_keys_insert on public.provider_keys for insert to tenantry_app
  with check (organization_id = app.current_org_id() and app.has_permission('provider_keys:manage')
              and app.without_run_claim()
              and app.workspace_allowed(workspace_id));

drop policy if exists provider_keys_update on public.provider_keys;
create policy provider_keys_update on public.provider_keys for update to tenantry_app
  using (organization_id = app.current_org_id() and app.has_permission('provider_keys:manage')
         and app.without_run_claim()
         and app.workspace_allowed(workspace_id))
  with check (organization_id = app.current_org_id() and app.has_permission('provider_keys:manage'));

drop policy if exists provider_keys_delete on public.provider_keys;
create policy provider_keys_delete on public.provider_keys for delete to tenantry_app
  using (organization_id = app.current_org_id() and app.has_permission('provider_keys:manage')
         and app.without_run_claim()
         and app.workspace_allowed(workspace_id));

commit;
