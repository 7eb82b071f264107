-- tenantry roles. Apply FIRST, as a superuser (creating a BYPASSRLS role needs one):
--   psql "$ADMIN_URL" -v ON_ERROR_STOP=1 -f sql/01_roles.sql
-- Idempotent: roles are created only when missing; attributes are (re)asserted every time.
--
--   tenantry_owner    owns every schema, table and policy; runs migrations. NOLOGIN by default:
--                     a DBA logs in as an admin and `SET ROLE tenantry_owner` (or grants LOGIN).
--   tenantry_app      the role the server logs in as. Owns nothing, may not create anything,
--                     NOBYPASSRLS: every row it touches passes through the policies.
--   tenantry_definer  NOLOGIN. Owns only the few SECURITY DEFINER functions in schema `app`
--                     (membership lookups, user provisioning, organization creation) that must see
--                     across tenants. It is the one role with BYPASSRLS; nobody can log in as it and
--                     the app role is not a member of it. `tenantry check` verifies all of this.
--   tenantry_backup   LOGIN, BYPASSRLS, read-only (pg_read_all_data): the only role that can log
--                     in and bypass RLS, because a backup must hold every tenant's rows. It is for
--                     `make backup` (pg_dump) and nothing else: it writes nothing, owns nothing, and
--                     the server refuses to run as it. Protect its credentials like the backups.

do $roles$
begin
  if not exists (select 1 from pg_roles where rolname = 'tenantry_owner') then
    create role tenantry_owner nologin;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'tenantry_app') then
    create role tenantry_app login;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'tenantry_definer') then
    create role tenantry_definer nologin bypassrls;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'tenantry_backup') then
    create role tenantry_backup login bypassrls;
  end if;
end
$roles$;

alter role tenantry_owner nosuperuser nocreatedb nocreaterole noreplication nobypassrls;
alter role tenantry_app nosuperuser nocreatedb nocreaterole noreplication nobypassrls noinherit;
alter role tenantry_definer nologin nosuperuser nocreatedb nocreaterole noreplication bypassrls;
alter role tenantry_backup login nosuperuser nocreatedb nocreaterole noreplication bypassrls;
grant pg_read_all_data to tenantry_backup;
-- Reads only; a dump never needs to wait long for a lock.
alter role tenantry_backup set default_transaction_read_only = on;
alter role tenantry_backup set lock_timeout = '10s';

-- The owner creates functions owned by the definer, so it must be able to act as it.
grant tenantry_definer to tenantry_owner;

-- Server-side limits for the app role: a stuck request can hold neither a lock nor a connection.
alter role tenantry_app set statement_timeout = '5s';
alter role tenantry_app set idle_in_transaction_session_timeout = '15s';
alter role tenantry_app set lock_timeout = '3s';

-- The owner creates schema `app` in this database.
do $grant$
begin
  execute format('grant create on database %I to tenantry_owner', current_database());
end
$grant$;

-- PostgreSQL 15 no longer lets PUBLIC create in schema public; the owner needs to.
grant usage, create on schema public to tenantry_owner;
grant usage on schema public to tenantry_app, tenantry_definer;
revoke create on schema public from public;
