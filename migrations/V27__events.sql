-- Events: what happened in an organization, for its own systems to learn without polling. The
-- database writes them itself, from triggers on the tables that change, in the same transaction
-- as the change (a transactional outbox): a rolled-back change leaves no event, and no change
-- that the catalogue names can commit without its event, whichever path made it (a request, the
-- worker, a payment webhook). app.record_event() (sql/11_events.sql) builds each payload.
--
-- Data mode: `data` holds ids and metadata only; `content` (a run's output or error message) is
-- stored only for organizations in `full` mode (app.events_content_allowed() refuses it otherwise).
-- Retention: events older than `events.retention_days` (30 by default) are deleted by the
-- worker through app.prune_events().

-- The catalogue. Published at GET /api/v1/event-types; an event's type must be one of these.
create table public.event_types (
  type        text primary key check (type ~ '^[a-z_]+(\.[a-z_]+)+$' and char_length(type) <= 100),
  description text not null
);
insert into public.event_types (type, description) values
  ('member.added', 'A user became a member of the organization'),
  ('member.role_changed', 'A member''s role changed'),
  ('member.removed', 'A member left or was removed'),
  ('invitation.accepted', 'An invitation was accepted (member.added follows)'),
  ('workspace.created', 'A workspace was created'),
  ('workspace.deleted', 'A workspace was deleted, with everything in it'),
  ('api_key.created', 'An API key was created (never its secret)'),
  ('api_key.revoked', 'An API key was revoked'),
  ('workflow.version_published', 'A workflow''s draft was published as a new version'),
  ('run.succeeded', 'A run finished successfully (its output in full mode only)'),
  ('run.failed', 'A run failed (its error message in full mode only)'),
  ('run.cancelled', 'A run was cancelled'),
  ('subscription.changed', 'The subscription was created, or its plan or status changed'),
  ('invoice.paid', 'An invoice was paid in full'),
  ('provider_key.changed', 'A workspace''s provider key was stored, replaced or deleted (never the key)');

create table public.events (
  organization_id  uuid not null references public.organizations (id) on delete cascade,
  -- UUIDv7 of occurred_at (app.uuid_v7()): ordered by time, so lists page by id.
  id               uuid not null,
  -- One of event_types, checked by app.record_event(), the only writer. Not a foreign key: every
  -- event of a type would share-lock the same catalogue row, and concurrent writers of every
  -- tenant would queue on it.
  type             text not null check (type ~ '^[a-z_]+(\.[a-z_]+)+$' and char_length(type) <= 100),
  occurred_at      timestamptz not null default clock_timestamp(),
  -- Who made the change: a user, an API key, or neither (the worker, a payment provider). No
  -- foreign keys, for the same reason; an erased user's id then names nobody.
  actor_user_id    uuid,
  actor_api_key_id uuid,
  -- The workspace it concerns, if any: a member restricted to some workspaces sees only theirs.
  workspace_id     uuid,
  data             jsonb not null check (jsonb_typeof(data) = 'object'),
  content          jsonb check (content is null or jsonb_typeof(content) = 'object'),
  primary key (organization_id, id)
);
alter table public.events enable row level security;
alter table public.events force row level security;
-- Lists page by id (the primary key), by type with `type`. A time range needs no index of its
-- own: an id is its time (app.uuid_v7(occurred_at)), so `since`/`until` and retention are id
-- ranges of the primary key (app.uuid_v7_floor()). Each index here is paid on every write.
create index events_by_type on public.events (organization_id, type, id);
-- Content only in full mode, whoever inserts. Not app.enforce_data_mode(): that asks through the
-- caller's context, and a worker's claim no longer admits it once its run has finished, which is
-- exactly when a run's event is written. This reads the organization's mode itself.
create or replace function app.events_content_allowed() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if new.content is not null
     and not exists (select 1 from public.organizations o where o.id = new.organization_id and o.data_mode = 'full') then
    raise exception 'content cannot be stored in metadata_only mode' using errcode = 'TY020', column = 'content';
  end if;
  return new;
end
$$;
alter function app.events_content_allowed() owner to tenantry_definer;
revoke all on function app.events_content_allowed() from public;
create trigger events_data_mode before insert or update on public.events
  for each row when (new.content is not null) execute function app.events_content_allowed();

-- Events are facts: never changed. (Deleted only by retention, or with their organization.)
create or replace function app.events_immutable() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  raise exception 'events cannot be changed' using errcode = 'TY030';
end
$$;
create trigger events_immutable before update on public.events
  for each row execute function app.events_immutable();

insert into public.permissions (name, description) values
  ('events:read', 'Read the organization''s events'),
  ('webhooks:manage', 'Create, change, test and delete webhook endpoints; read and retry deliveries');
insert into public.builtin_role_permissions (role, permission) values
  ('owner', 'events:read'), ('admin', 'events:read'), ('auditor', 'events:read'),
  ('integration_admin', 'events:read'),
  ('owner', 'webhooks:manage'), ('admin', 'webhooks:manage'), ('integration_admin', 'webhooks:manage');

-- The changes that are events. Each trigger runs app.record_event(), which decides the type and
-- the payload from the row (and writes nothing for rows that are going away with their
-- organization).
create trigger memberships_events after insert or update or delete on public.memberships
  for each row execute function app.record_event();
create trigger invitations_events after update of accepted_at on public.invitations
  for each row when (old.accepted_at is null and new.accepted_at is not null)
  execute function app.record_event();
create trigger workspaces_events after insert or delete on public.workspaces
  for each row execute function app.record_event();
create trigger api_keys_events after insert or update of revoked_at on public.api_keys
  for each row execute function app.record_event();
create trigger workflow_versions_events after insert on public.workflow_versions
  for each row execute function app.record_event();
create trigger workflow_runs_events after update of status on public.workflow_runs
  for each row when (old.status is distinct from new.status
                     and new.status in ('succeeded', 'failed', 'cancelled'))
  execute function app.record_event();
create trigger subscriptions_events after insert or update of plan_id, status on public.subscriptions
  for each row execute function app.record_event();
create trigger invoices_events after insert or update of status on public.invoices
  for each row execute function app.record_event();
create trigger provider_keys_events after insert or update of ciphertext, endpoint or delete on public.provider_keys
  for each row execute function app.record_event();
