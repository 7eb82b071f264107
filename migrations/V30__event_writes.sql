-- Writing an event costs the change it rides on less (issue 15: at most 10 % of the create path).
-- app.record_event() (sql/11_events.sql) now writes an event with one statement. What each event
-- paid for besides, in instructions per workspace create (callgrind, serial, .dev/bench.sh's SQL):
-- the CHECK constraints below about a sixth of the event, the foreign key to organizations about
-- an eighth (a lookup and a row lock), the lookup of the organization's data mode and the probe
-- for endpoints a statement each. Safe for a server of the previous release: it writes no event
-- itself.

-- The checks guarded against one writer, app.record_event(), which builds every payload with
-- jsonb_build_object() and every type from a literal of the catalogue (tests/api/events.rs reads
-- each type back against event_types). PostgreSQL parses a table's CHECK expressions again for
-- every statement that inserts, which an event is.
alter table public.events
  drop constraint events_type_check,
  drop constraint events_data_check,
  drop constraint events_content_check;

-- Events go with their organization through app.delete_organization_events(), after the
-- cascades of the DELETE (see there why no event of the organization can be left behind).
alter table public.events drop constraint events_organization_id_fkey;
create trigger organizations_delete_events after delete on public.organizations
  referencing old table as deleted_organizations
  for each statement execute function app.delete_organization_events();
