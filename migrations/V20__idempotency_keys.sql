-- Idempotency-Key: the first response to a mutating POST, kept per organization, principal (user
-- or API key) and key until it expires, so a retried request gets the same answer instead of a
-- second resource. Only the principal that made the request can see its keys.

create table public.idempotency_keys (
  organization_id uuid not null references public.organizations (id) on delete cascade,
  principal_id    uuid not null,
  key             text not null check (char_length(key) between 1 and 255),
  request_hash    bytea not null check (octet_length(request_hash) = 32),
  status          text not null check (status in ('in_progress', 'completed')),
  response_status integer check (response_status between 100 and 599),
  response_type   text check (char_length(response_type) <= 200),
  response_location text check (char_length(response_location) <= 2000),
  response_body   bytea,
  created_at      timestamptz not null default now(),
  expires_at      timestamptz not null,
  primary key (organization_id, principal_id, key),
  constraint idempotency_keys_completed check ((status = 'completed') = (response_status is not null))
);
alter table public.idempotency_keys enable row level security;
alter table public.idempotency_keys force row level security;
create index idempotency_keys_expiry on public.idempotency_keys (organization_id, principal_id, expires_at);
