-- The audit log. Apply as the owner, after migrations. Any principal of an organization may
-- append to its log (so denied attempts are recorded too); reading needs audit:read. There is
-- no UPDATE or DELETE grant, and triggers refuse both for every role anyway.
begin;
set local role tenantry_owner;

revoke all on public.audit_events from tenantry_app;
grant select, insert on public.audit_events to tenantry_app;
grant select, insert on public.audit_events to tenantry_definer;
-- Only for re-sealing an anonymised chain (app.anonymise_organization_audit).
grant update (actor_id, ip, user_agent, request_id, details, target_id, prev_hash, hash)
  on public.audit_events to tenantry_definer;
-- Data mode (migrations/V8): the enforcing trigger runs as whoever writes. The audit hash's
-- anyelement overloads hash a shard's rows on Citus (V35).
grant execute on function app.organization_data_mode(uuid) to tenantry_app;
grant execute on function app.audit_verify(uuid), app.audit_hash(bytea, public.audit_events),
  app.audit_canonical(public.audit_events), app.audit_hash(bytea, anyelement),
  app.audit_canonical(anyelement) to tenantry_app;
grant execute on function app.audit_verify(uuid), app.audit_hash(bytea, public.audit_events),
  app.audit_canonical(public.audit_events), app.audit_hash(bytea, anyelement),
  app.audit_canonical(anyelement) to tenantry_definer;

drop policy if exists audit_events_select on public.audit_events;
create policy audit_events_select on public.audit_events for select to tenantry_app
  using (organization_id = app.current_org_id()
         and app.has_permission('audit:read'));

drop policy if exists audit_events_insert on public.audit_events;
create policy audit_events_insert on public.audit_events for insert to tenantry_app
  with check (organization_id = app.current_org_id());

commit;
