-- Organization API keys. Apply as the owner, after migrations.
-- Managing keys needs api_keys:manage in the organization; revocation is an UPDATE of
-- revoked_at. Secrets are never stored, only their SHA-256.
begin;
set local role tenantry_owner;

revoke all on public.api_keys from tenantry_app;
grant select, insert on public.api_keys to tenantry_app;
grant update (revoked_at) on public.api_keys to tenantry_app;
grant select, update (last_used_at) on public.api_keys to tenantry_definer;

drop policy if exists api_keys_select on public.api_keys;
create policy api_keys_select on public.api_keys for select to tenantry_app
  using (organization_id = app.current_org_id()
         and app.has_permission('api_keys:manage'));

-- A key never holds more than its creator: its scopes are permissions the creator holds here,
-- and a restricted creator's key is restricted to (some of) the creator's workspaces.
drop policy if exists api_keys_insert on public.api_keys;
create policy api_keys_insert on public.api_keys for insert to tenantry_app
  with check (organization_id = app.current_org_id()
              and app.has_permission('api_keys:manage')
              and scopes <@ app.current_permissions()
              and app.within_restriction(workspace_ids));

drop policy if exists api_keys_update on public.api_keys;
create policy api_keys_update on public.api_keys for update to tenantry_app
  using (organization_id = app.current_org_id()
         and app.has_permission('api_keys:manage'))
  with check (organization_id = app.current_org_id()
              and app.has_permission('api_keys:manage'));

commit;
