-- Platform tables that hold no tenant data. Apply as the owner, after migrations.
begin;
set local role tenantry_owner;

-- Readiness compares the applied migration version with the binary's.
grant select on public.refinery_schema_history to tenantry_app;

commit;
