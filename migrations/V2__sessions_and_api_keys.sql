-- Sessions with rotating refresh tokens, and organization API keys.

-- A sign-in session. Refresh tokens rotate within it; presenting a spent one revokes it.
-- Not tenant data (a person's session spans organizations): visible to its own user only.
create table public.sessions (
  id                  uuid primary key,
  user_id             uuid not null references public.users (id) on delete cascade,
  provider            text not null check (char_length(provider) between 1 and 100),
  created_at          timestamptz not null,
  last_refreshed_at   timestamptz not null,
  idle_expires_at     timestamptz not null,
  absolute_expires_at timestamptz not null,
  revoked_at          timestamptz,
  revoked_reason      text check (revoked_reason in ('logout', 'revoked_by_user', 'refresh_token_reuse', 'expired')),
  user_agent          text check (char_length(user_agent) <= 500),
  ip                  inet
);
create index sessions_user_id_idx on public.sessions (user_id, created_at);
alter table public.sessions enable row level security;
alter table public.sessions force row level security;

-- Every refresh token ever issued, as a SHA-256 of its secret. A spent one is kept so that its
-- reuse can be recognised (and only recognised when the secret is right: a guessed id revokes
-- nothing).
create table public.refresh_tokens (
  id          uuid primary key,
  session_id  uuid not null references public.sessions (id) on delete cascade,
  secret_hash bytea not null check (octet_length(secret_hash) = 32),
  created_at  timestamptz not null,
  spent_at    timestamptz
);
create index refresh_tokens_session_id_idx on public.refresh_tokens (session_id);
alter table public.refresh_tokens enable row level security;
alter table public.refresh_tokens force row level security;

-- Organization API keys: a service principal confined to its organization, with scopes that
-- are a subset of its creator's permissions. Only a SHA-256 of the secret is stored.
create table public.api_keys (
  organization_id uuid not null references public.organizations (id) on delete cascade,
  id              uuid not null,
  name            text not null check (char_length(name) between 1 and 200),
  secret_hash     bytea not null check (octet_length(secret_hash) = 32),
  scopes          text[] not null,
  created_by      uuid references public.users (id) on delete set null,
  created_at      timestamptz not null default now(),
  expires_at      timestamptz,
  last_used_at    timestamptz,
  revoked_at      timestamptz,
  primary key (organization_id, id)
);
-- A presented key names only its id. Deliberately not unique: ids are random and server-made,
-- and a unique key without organization_id is what `tenantry check` forbids.
create index api_keys_id_idx on public.api_keys (id);
alter table public.api_keys enable row level security;
alter table public.api_keys force row level security;

insert into public.permissions (name, description) values
  ('api_keys:manage', 'Create, list and revoke the organization''s API keys');
insert into public.builtin_role_permissions (role, permission) values
  ('owner', 'api_keys:manage'), ('admin', 'api_keys:manage');
