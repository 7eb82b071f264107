-- Issue 17: the web console's browser sessions. A console session is a session like any other
-- (listed, revoked and checked on every transaction the same way), but instead of refresh
-- tokens it has one secret, held in the browser's HttpOnly cookie and stored here only as its
-- SHA-256. No access or refresh token is ever issued for it.
alter table public.sessions add column console_secret_hash bytea
  check (octet_length(console_secret_hash) = 32);
create unique index sessions_console_secret_idx on public.sessions (id, console_secret_hash)
  where console_secret_hash is not null;
