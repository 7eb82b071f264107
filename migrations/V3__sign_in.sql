-- Sign-in through identity providers: login attempts, and memberships granted by a provider's
-- role-mapping rules.

-- One authorization-code attempt: created by /login, consumed once by /callback. Keyed by a
-- SHA-256 of `state`; holds the PKCE verifier and nonce for at most a few minutes.
create table public.login_attempts (
  state_hash    bytea primary key check (octet_length(state_hash) = 32),
  provider      text not null check (char_length(provider) between 1 and 100),
  pkce_verifier text not null,
  nonce         text not null,
  redirect_to   text check (char_length(redirect_to) <= 2000),
  created_at    timestamptz not null,
  expires_at    timestamptz not null
);
create index login_attempts_expires_at_idx on public.login_attempts (expires_at);
alter table public.login_attempts enable row level security;
alter table public.login_attempts force row level security;

-- Memberships a provider's mapping rules granted are re-evaluated at each sign-in through that
-- provider; memberships granted by people (NULL here) are never touched by a mapping.
alter table public.memberships add column granted_by_provider text
  check (char_length(granted_by_provider) between 1 and 100);
