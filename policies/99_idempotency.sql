-- Idempotency keys. Apply as the owner, after migrations. A principal sees and writes only its
-- own keys in the organization in context; no permission is needed beyond membership, because
-- the request a key guards checks its own.
begin;
set local role tenantry_owner;

revoke all on public.idempotency_keys from tenantry_app;
grant select, insert, delete on public.idempotency_keys to tenantry_app;
grant update (status, response_status, response_type, response_location, response_body, secret_withheld,
  expires_at)
  on public.idempotency_keys to tenantry_app;

do $policies$
declare
  v_command text;
begin
  foreach v_command in array array['select', 'insert', 'update', 'delete'] loop
    execute format('drop policy if exists %I on public.idempotency_keys', 'idempotency_keys_' || v_command);
  end loop;
end
$policies$;

create policy idempotency_keys_select on public.idempotency_keys for select to tenantry_app
  using (organization_id = app.current_org_id()
         and principal_id = coalesce(app.current_user_id(), app.current_api_key_id()));
create policy idempotency_keys_insert on public.idempotency_keys for insert to tenantry_app
  with check (organization_id = app.current_org_id()
              and principal_id = coalesce(app.current_user_id(), app.current_api_key_id()));
create policy idempotency_keys_update on public.idempotency_keys for update to tenantry_app
  using (organization_id = app.current_org_id()
         and principal_id = coalesce(app.current_user_id(), app.current_api_key_id()));
create policy idempotency_keys_delete on public.idempotency_keys for delete to tenantry_app
  using (organization_id = app.current_org_id()
         and principal_id = coalesce(app.current_user_id(), app.current_api_key_id()));

commit;
