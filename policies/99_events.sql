-- Events. Apply as the owner, after migrations. The catalogue is public to the app role; an
-- organization's events are read with events:read, and written only by app.record_event() (the
-- definer), from the triggers on the tables that change: the app role cannot insert, change or
-- delete one. Retention deletes through app.prune_events().
begin;
set local role tenantry_owner;

revoke all on public.event_types, public.events from tenantry_app;
grant select on public.event_types to tenantry_app;
grant select (organization_id, id, type, occurred_at, actor_user_id, actor_api_key_id, workspace_id, data, content)
  on public.events to tenantry_app;
grant select, insert, delete on public.events to tenantry_definer;
grant select on public.event_types, public.workflows to tenantry_definer;

drop policy if exists events_select on public.events;
create policy events_select on public.events for select to tenantry_app
  using (organization_id = app.current_org_id() and app.has_permission('events:read')
         and app.without_run_claim()
         and (workspace_id is null or app.workspace_visible(workspace_id)));

-- A dispatcher holding a delivery's claim reads the event it delivers, and no other.
drop policy if exists events_dispatch on public.events;
create policy events_dispatch on public.events for select to tenantry_app
  using (organization_id = app.current_org_id()
         and id = app.current_claim('delivery', 'event'));

commit;
