-- Core tables: users, organizations (the tenants), memberships, workspaces, and the permission
-- catalogue. Forward-only: never edit this file once applied; add V2__... instead.
-- Every tenant table: organization_id first in the primary key, in every foreign key to another
-- tenant table and in every unique key; ENABLE and FORCE row level security. Policies and grants
-- live in policies/ (applied after migrations), so until they exist these tables fail closed.

create or replace function public.set_updated_at() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  new.updated_at := now();
  return new;
end
$$;

-- Users are global: one person may belong to many organizations. Identity is (issuer, subject).
create table public.users (
  id           uuid primary key default gen_random_uuid(),
  issuer       text not null check (char_length(issuer) between 1 and 500),
  subject      text not null check (char_length(subject) between 1 and 500),
  email        text check (char_length(email) <= 320),
  display_name text check (char_length(display_name) <= 200),
  created_at   timestamptz not null default now(),
  updated_at   timestamptz not null default now(),
  constraint users_identity_key unique (issuer, subject)
);
create trigger users_set_updated_at before update on public.users
  for each row execute function public.set_updated_at();
alter table public.users enable row level security;
alter table public.users force row level security;

-- The tenant root. Its own id is the organization_id of every tenant row.
-- The slug is globally unique on purpose (it appears in URLs, like a GitHub organization name);
-- that is the one value whose existence one tenant can learn about another.
create table public.organizations (
  id         uuid primary key default gen_random_uuid(),
  name       text not null check (char_length(name) between 1 and 200),
  slug       text not null check (slug ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
  region     text not null default 'us' check (region in ('us', 'eu')),
  data_mode  text not null default 'metadata_only' check (data_mode in ('metadata_only', 'full')),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint organizations_slug_key unique (slug)
);
create trigger organizations_set_updated_at before update on public.organizations
  for each row execute function public.set_updated_at();
alter table public.organizations enable row level security;
alter table public.organizations force row level security;

-- The permission catalogue and what each built-in role grants. Platform-wide, read-only to the app.
create table public.permissions (
  name        text primary key check (name ~ '^[a-z_]+:[a-z_]+$'),
  description text not null
);
create table public.builtin_role_permissions (
  role       text not null check (role in ('owner', 'admin', 'member', 'viewer')),
  permission text not null references public.permissions (name),
  primary key (role, permission)
);
insert into public.permissions (name, description) values
  ('org:read',          'Read the organization'),
  ('org:update',        'Rename the organization or change its settings'),
  ('org:delete',        'Delete the organization and everything in it'),
  ('members:read',      'List members and their roles'),
  ('members:manage',    'Add, remove and change the role of non-owner members'),
  ('owners:manage',     'Grant or revoke the owner role'),
  ('workspaces:read',   'List and read workspaces'),
  ('workspaces:write',  'Create and edit workspaces'),
  ('workspaces:delete', 'Delete workspaces');
insert into public.builtin_role_permissions (role, permission)
select r.role, p.name
from (values
  ('owner',  array['org:read','org:update','org:delete','members:read','members:manage','owners:manage',
                   'workspaces:read','workspaces:write','workspaces:delete']),
  ('admin',  array['org:read','org:update','members:read','members:manage',
                   'workspaces:read','workspaces:write','workspaces:delete']),
  ('member', array['org:read','members:read','workspaces:read','workspaces:write']),
  ('viewer', array['org:read','members:read','workspaces:read'])
) as r(role, perms)
cross join lateral unnest(r.perms) as p(name);

create table public.memberships (
  organization_id uuid not null references public.organizations (id) on delete cascade,
  user_id         uuid not null references public.users (id) on delete cascade,
  role            text not null check (role in ('owner', 'admin', 'member', 'viewer')),
  created_at      timestamptz not null default now(),
  updated_at      timestamptz not null default now(),
  primary key (organization_id, user_id)
);
-- "Which organizations am I in?" is asked by user; the primary key serves everything else.
create index memberships_user_id_idx on public.memberships (user_id, organization_id);
create trigger memberships_set_updated_at before update on public.memberships
  for each row execute function public.set_updated_at();
alter table public.memberships enable row level security;
alter table public.memberships force row level security;

-- An organization always keeps an owner. Checked at commit (deferred) so a transaction may swap
-- owners; skipped when the organization itself is gone (deleting it cascades to memberships).
-- SECURITY DEFINER so the answer never depends on what the caller can see: an owner removing
-- themselves no longer sees their organization by the time this runs.
create or replace function app.memberships_keep_an_owner() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if exists (select 1 from public.organizations o where o.id = old.organization_id)
     and not exists (select 1 from public.memberships m
                     where m.organization_id = old.organization_id and m.role = 'owner') then
    raise exception 'an organization must keep at least one owner'
      using errcode = 'TY001', detail = 'last_owner';
  end if;
  return null;
end
$$;
alter function app.memberships_keep_an_owner() owner to tenantry_definer;
revoke all on function app.memberships_keep_an_owner() from public;
create constraint trigger memberships_keep_an_owner
  after update of role or delete on public.memberships
  deferrable initially deferred
  for each row when (old.role = 'owner')
  execute function app.memberships_keep_an_owner();

create table public.workspaces (
  organization_id uuid not null references public.organizations (id) on delete cascade,
  id              uuid not null default gen_random_uuid(),
  name            text not null check (char_length(name) between 1 and 200),
  region          text not null check (region in ('us', 'eu')),
  created_at      timestamptz not null default now(),
  updated_at      timestamptz not null default now(),
  primary key (organization_id, id),
  constraint workspaces_name_key unique (organization_id, name)
);
create trigger workspaces_set_updated_at before update on public.workspaces
  for each row execute function public.set_updated_at();

-- A workspace's region defaults to its organization's.
create or replace function public.workspaces_default_region() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if new.region is null then
    select o.region into new.region from public.organizations o where o.id = new.organization_id;
  end if;
  return new;
end
$$;
create trigger workspaces_default_region before insert on public.workspaces
  for each row execute function public.workspaces_default_region();
alter table public.workspaces enable row level security;
alter table public.workspaces force row level security;
