-- Feature flags. The platform defines flags (key, description, default, kill switch) and may
-- target organizations; each organization configures its own rollout (on/off, user allow and
-- deny lists, a percentage). Servers evaluate from an in-process cache, invalidated by
-- NOTIFY tenantry_flags: the payload is the organization whose configuration changed, or '*'
-- when a platform flag changed. It carries no configuration.

create table public.feature_flags (
  key             text primary key check (key ~ '^[a-z][a-z0-9_.-]{0,63}$'),
  description     text not null default '' check (char_length(description) <= 500),
  default_enabled boolean not null default false,
  -- On: the flag is off for everyone, whatever any rule says.
  kill_switch     boolean not null default false,
  created_at      timestamptz not null default now(),
  updated_at      timestamptz not null default now()
);
create trigger feature_flags_set_updated_at before update on public.feature_flags
  for each row execute function public.set_updated_at();
alter table public.feature_flags enable row level security;
alter table public.feature_flags force row level security;

-- An organization's own configuration of a flag.
create table public.organization_flags (
  organization_id    uuid not null references public.organizations (id) on delete cascade,
  flag_key           text not null references public.feature_flags (key) on delete cascade,
  -- NULL: no organization-wide answer (the percentage, targeting or default decides).
  enabled            boolean,
  rollout_percentage integer check (rollout_percentage between 0 and 100),
  allow_users        uuid[] not null default '{}' check (cardinality(allow_users) <= 1000),
  deny_users         uuid[] not null default '{}' check (cardinality(deny_users) <= 1000),
  updated_by         uuid references public.users (id) on delete set null,
  created_at         timestamptz not null default now(),
  updated_at         timestamptz not null default now(),
  primary key (organization_id, flag_key)
);
create trigger organization_flags_set_updated_at before update on public.organization_flags
  for each row execute function public.set_updated_at();
alter table public.organization_flags enable row level security;
alter table public.organization_flags force row level security;
create index organization_flags_by_flag on public.organization_flags (flag_key);

-- Platform targeting: a flag switched on (or off) for one organization by a platform admin.
create table public.feature_flag_targets (
  organization_id uuid not null references public.organizations (id) on delete cascade,
  flag_key        text not null references public.feature_flags (key) on delete cascade,
  enabled         boolean not null,
  created_by      uuid references public.users (id) on delete set null,
  created_at      timestamptz not null default now(),
  primary key (organization_id, flag_key)
);
alter table public.feature_flag_targets enable row level security;
alter table public.feature_flag_targets force row level security;
create index feature_flag_targets_by_flag on public.feature_flag_targets (flag_key);

create or replace function app.flags_notify() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if tg_table_name = 'feature_flags' then
    perform pg_notify('tenantry_flags', '*');
  else
    perform pg_notify('tenantry_flags', coalesce(new.organization_id, old.organization_id)::text);
  end if;
  return null;
end
$$;
create trigger feature_flags_notify after insert or update or delete on public.feature_flags
  for each statement execute function app.flags_notify();
create trigger organization_flags_notify after insert or update or delete on public.organization_flags
  for each row execute function app.flags_notify();
create trigger feature_flag_targets_notify after insert or update or delete on public.feature_flag_targets
  for each row execute function app.flags_notify();
