-- Usage metering: requests per organization, per API key (or by members, the nil id) and per UTC
-- day. Servers count in memory and add their counts in batches through app.record_usage(), so a
-- request costs no write.

create table public.usage_counters (
  organization_id uuid not null references public.organizations (id) on delete cascade,
  day             date not null,
  -- The API key that made the requests; the nil id for members' own requests.
  api_key_id      uuid not null,
  requests        bigint not null check (requests >= 0),
  primary key (organization_id, day, api_key_id)
);
alter table public.usage_counters enable row level security;
alter table public.usage_counters force row level security;
