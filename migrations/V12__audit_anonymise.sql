-- Deleting an organization keeps its audit chain (default) or anonymises it (configuration):
-- personal data is removed from the entries and the chain is re-sealed so it still verifies.
-- The append-only trigger admits exactly that rewrite: by the definer role, inside
-- app.anonymise_organization_audit(), for an organization that no longer exists.
create or replace function app.audit_refuse_change() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if tg_op = 'UPDATE' and current_user = 'tenantry_definer'
     and pg_catalog.current_setting('app.audit_rewrite', true) = old.organization_id::text then
    return new;
  end if;
  raise exception 'the audit log is append-only' using errcode = 'TY002';
end
$$;
