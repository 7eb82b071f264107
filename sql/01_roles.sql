-- tenantry roles. Apply FIRST, as the database's admin: a superuser, or the NOSUPERUSER
-- CREATEROLE CREATEDB admin a managed PostgreSQL gives you (RDS/Aurora, Cloud SQL, Azure):
--   psql "$ADMIN_URL" -v ON_ERROR_STOP=1 -f sql/01_roles.sql
-- Idempotent: roles are created only when missing; attributes are (re)asserted every time, as far
-- as the admin may (only a superuser can change SUPERUSER, REPLICATION or BYPASSRLS; `tenantry
-- check` verifies those in every install).
--
--   tenantry_owner    owns every schema, table and policy; runs migrations. NOLOGIN by default:
--                     the admin is made a member and runs `SET ROLE tenantry_owner`.
--   tenantry_app      the role the server logs in as. Owns nothing, may not create anything,
--                     NOBYPASSRLS: every row it touches passes through the policies.
--   tenantry_definer  NOLOGIN (LOGIN on Citus, see below), NOBYPASSRLS. Owns only the SECURITY DEFINER functions in schema
--                     `app` that must see across tenants (membership lookups, user provisioning,
--                     organization creation, the worker's claims). It sees other tenants' rows
--                     only through policies written `to tenantry_definer`, on the tables it is
--                     granted, and each function decides from the verified context what it
--                     touches. Nobody can log in as it and the app role is not a member of it.
--   tenantry_backup   only where the admin is a superuser: LOGIN, BYPASSRLS, read-only
--                     (pg_read_all_data), for `make backup` (pg_dump) and nothing else. A managed
--                     database cannot have it (creating a BYPASSRLS role needs a superuser): back
--                     up with the provider's snapshots instead (README, "Backups").
--
-- No role tenantry needs bypasses row-level security; `tenantry check` verifies all of this.

do $roles$
declare
  v_superuser boolean := (select rolsuper from pg_catalog.pg_roles where rolname = current_user);
begin
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'tenantry_owner') then
    create role tenantry_owner nologin;
  end if;
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'tenantry_app') then
    create role tenantry_app login;
  end if;
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'tenantry_definer') then
    create role tenantry_definer nologin;
  end if;

  -- What any CREATEROLE admin may assert.
  alter role tenantry_owner nocreatedb nocreaterole;
  alter role tenantry_app nocreatedb nocreaterole noinherit;
  alter role tenantry_definer nocreatedb nocreaterole;
  -- On a Citus coordinator, the owner's DDL and the definer's queries reach the workers over
  -- connections Citus opens as that role, which it must be allowed to log in for. Give them no
  -- password, and let the workers admit them only from the coordinator (README, "Scaling out").
  if exists (select 1 from pg_catalog.pg_extension where extname = 'citus') then
    alter role tenantry_owner login;
    alter role tenantry_definer login;
  else
    alter role tenantry_definer nologin;
  end if;

  if v_superuser then
    alter role tenantry_owner nosuperuser noreplication nobypassrls;
    alter role tenantry_app nosuperuser noreplication nobypassrls;
    -- Earlier releases gave the definer BYPASSRLS; policies/zz_definer.sql now names it
    -- instead. `tenantry migrate` drops the attribute once those policies exist (a DBA applying
    -- the files by hand runs `alter role tenantry_definer nobypassrls` after the policies), so
    -- running instances never see the definer lose its view.
    alter role tenantry_definer nosuperuser noreplication;
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'tenantry_backup') then
      create role tenantry_backup login bypassrls;
    end if;
    alter role tenantry_backup login nosuperuser nocreatedb nocreaterole noreplication bypassrls;
    grant pg_read_all_data to tenantry_backup;
    -- Reads only; a dump never needs to wait long for a lock.
    alter role tenantry_backup set default_transaction_read_only = on;
    alter role tenantry_backup set lock_timeout = '10s';
  else
    -- PostgreSQL 15 does not make a CREATEROLE admin a member of the roles it creates; the admin
    -- needs to be one of the owner to run `SET ROLE tenantry_owner` (migrations, DBA review).
    if not pg_catalog.pg_has_role(current_user, 'tenantry_owner', 'MEMBER') then
      execute format('grant tenantry_owner to %I', current_user);
    end if;
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'tenantry_backup') then
      raise notice 'not a superuser: tenantry_backup (BYPASSRLS, for pg_dump) is not created; '
        'back up with your provider''s snapshots (README, "Backups")';
    end if;
  end if;
end
$roles$;

-- The owner creates functions owned by the definer, so it must be able to act as it.
grant tenantry_definer to tenantry_owner;

-- Server-side limits for the app role: a stuck request can hold neither a lock nor a connection.
alter role tenantry_app set statement_timeout = '5s';
alter role tenantry_app set idle_in_transaction_session_timeout = '15s';
alter role tenantry_app set lock_timeout = '3s';

-- The owner creates schema `app` in this database (the admin owns the database or is superuser).
do $grant$
begin
  execute format('grant create on database %I to tenantry_owner', current_database());
end
$grant$;

-- PostgreSQL 15 no longer lets PUBLIC create in schema public; the owner needs to.
grant usage, create on schema public to tenantry_owner;
grant usage on schema public to tenantry_app, tenantry_definer;
revoke create on schema public from public;
