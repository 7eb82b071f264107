-- Outbound webhooks: an organization's endpoints, and a delivery of each event to each endpoint
-- that wants it. app.record_event() (sql/11_events.sql) creates the deliveries in the same
-- transaction as the event, so an endpoint receives exactly the events committed after it was
-- created, and an endpoint of A can only ever have deliveries of A's events: both foreign keys
-- carry the organization.
--
-- The signing secret is the server's to use (it signs every delivery), so it is stored
-- encrypted, never hashed: AES-256-GCM under the organization's data key (as provider keys),
-- bound to its organization and endpoint. After a rotation the previous secret keeps signing,
-- beside the new one, until `previous_secret_expires_at`.

create table public.webhook_endpoints (
  organization_id            uuid not null references public.organizations (id) on delete cascade,
  id                         uuid not null,
  url                        text not null check (char_length(url) between 10 and 2000),
  description                text check (char_length(description) <= 500),
  -- Event types it receives (`*`: all of them).
  event_types                text[] not null check (cardinality(event_types) between 1 and 100),
  enabled                    boolean not null default true,
  -- Why it is disabled: by a person (`manual`), or by the dispatcher after a run of failures.
  disabled_reason            text check (disabled_reason in ('manual', 'failing')),
  data_key_id                uuid not null,
  secret_nonce               bytea not null check (octet_length(secret_nonce) = 12),
  secret_ciphertext          bytea not null check (octet_length(secret_ciphertext) between 17 and 256),
  previous_secret_nonce      bytea check (octet_length(previous_secret_nonce) = 12),
  previous_secret_ciphertext bytea check (octet_length(previous_secret_ciphertext) between 17 and 256),
  previous_secret_expires_at timestamptz,
  -- Failed attempts in a row (any success resets it), and since when.
  consecutive_failures       integer not null default 0 check (consecutive_failures >= 0),
  failing_since              timestamptz,
  created_by                 uuid references public.users (id) on delete set null,
  created_at                 timestamptz not null default now(),
  updated_at                 timestamptz not null default now(),
  row_version                bigint not null default 1,
  primary key (organization_id, id),
  foreign key (organization_id, data_key_id) references public.organization_data_keys (organization_id, id),
  constraint webhook_endpoints_disabled_reason check (enabled = (disabled_reason is null)),
  constraint webhook_endpoints_previous_secret
    check ((previous_secret_ciphertext is null) = (previous_secret_expires_at is null)
           and (previous_secret_ciphertext is null) = (previous_secret_nonce is null))
);
alter table public.webhook_endpoints enable row level security;
alter table public.webhook_endpoints force row level security;
create trigger webhook_endpoints_set_updated_at before update on public.webhook_endpoints
  for each row execute function public.set_updated_at();
create trigger zz_row_version before insert or update on public.webhook_endpoints
  for each row execute function app.bump_row_version('consecutive_failures', 'failing_since', 'updated_at');

create table public.webhook_deliveries (
  organization_id      uuid not null,
  id                   uuid not null,
  endpoint_id          uuid not null,
  event_id             uuid not null,
  status               text not null default 'pending'
                       check (status in ('pending', 'delivering', 'succeeded', 'failed')),
  attempts             integer not null default 0 check (attempts >= 0),
  next_attempt_at      timestamptz not null default now(),
  -- The dispatcher's claim while it delivers (as for runs: the token is its only authority).
  claim_token          uuid,
  claimed_by           text check (char_length(claimed_by) <= 200),
  lease_expires_at     timestamptz,
  last_attempt_at      timestamptz,
  last_response_status integer,
  last_error           text check (char_length(last_error) <= 200),
  created_at           timestamptz not null default now(),
  finished_at          timestamptz,
  primary key (organization_id, id),
  constraint webhook_deliveries_once unique (organization_id, endpoint_id, event_id),
  foreign key (organization_id, endpoint_id) references public.webhook_endpoints (organization_id, id) on delete cascade,
  foreign key (organization_id, event_id) references public.events (organization_id, id) on delete cascade,
  constraint webhook_deliveries_claim_consistent
    check ((status = 'delivering') = (claim_token is not null and lease_expires_at is not null))
);
alter table public.webhook_deliveries enable row level security;
alter table public.webhook_deliveries force row level security;
-- The dispatcher's two scans: due deliveries, and claims whose lease ran out.
create index webhook_deliveries_due on public.webhook_deliveries (next_attempt_at) where status = 'pending';
create index webhook_deliveries_leases on public.webhook_deliveries (lease_expires_at) where status = 'delivering';
create index webhook_deliveries_claim_token on public.webhook_deliveries (claim_token) where claim_token is not null;
-- An endpoint's delivery log, newest first.
create index webhook_deliveries_by_endpoint on public.webhook_deliveries (organization_id, endpoint_id, id);

-- Every attempt of a delivery. The response body is the receiver's content: kept (1 KiB at most)
-- only for organizations in full mode.
create table public.webhook_delivery_attempts (
  organization_id uuid not null,
  delivery_id     uuid not null,
  attempt         integer not null check (attempt >= 1),
  started_at      timestamptz not null,
  duration_ms     integer not null check (duration_ms >= 0),
  response_status integer,
  error           text check (char_length(error) <= 200),
  response_body   text check (char_length(response_body) <= 1024),
  primary key (organization_id, delivery_id, attempt),
  foreign key (organization_id, delivery_id) references public.webhook_deliveries (organization_id, id) on delete cascade
);
alter table public.webhook_delivery_attempts enable row level security;
alter table public.webhook_delivery_attempts force row level security;
create trigger webhook_delivery_attempts_data_mode before insert or update on public.webhook_delivery_attempts
  for each row execute function app.enforce_data_mode('response_body');

insert into public.event_types (type, description) values
  ('webhook_endpoint.disabled', 'An endpoint was disabled after failing for too long (deliveries to it stop)');
create trigger webhook_endpoints_events after update of disabled_reason on public.webhook_endpoints
  for each row when (new.disabled_reason = 'failing' and old.disabled_reason is distinct from 'failing')
  execute function app.record_event();
