-- Structure: RLS enabled and forced, the expected policies, and roles that cannot bypass them.
begin;
select plan(22);

select ok((select relrowsecurity and relforcerowsecurity from pg_class where oid = 'public.users'::regclass),
          'users: RLS enabled and forced');
select ok((select relrowsecurity and relforcerowsecurity from pg_class where oid = 'public.organizations'::regclass),
          'organizations: RLS enabled and forced');
select ok((select relrowsecurity and relforcerowsecurity from pg_class where oid = 'public.memberships'::regclass),
          'memberships: RLS enabled and forced');
select ok((select relrowsecurity and relforcerowsecurity from pg_class where oid = 'public.workspaces'::regclass),
          'workspaces: RLS enabled and forced');

select ok((select bool_and(relrowsecurity and relforcerowsecurity) from pg_class
           where oid in ('public.sessions'::regclass, 'public.refresh_tokens'::regclass, 'public.api_keys'::regclass)),
          'sessions, refresh_tokens, api_keys: RLS enabled and forced');
select policies_are('public', 'refresh_tokens', array[]::name[]);
select ok(not has_table_privilege('tenantry_app', 'public.refresh_tokens', 'SELECT'),
          'the app role cannot read refresh token hashes');
select ok(not has_column_privilege('tenantry_app', 'public.api_keys', 'secret_hash', 'UPDATE'),
          'the app role cannot replace a key''s secret');
select policies_are('public', 'api_keys', array['api_keys_select', 'api_keys_insert', 'api_keys_update']);
select policies_are('public', 'users', array['users_select', 'users_update']);
select policies_are('public', 'organizations', array['organizations_select', 'organizations_update', 'organizations_delete']);
select policies_are('public', 'memberships', array['memberships_select', 'memberships_insert', 'memberships_update', 'memberships_delete']);
select policies_are('public', 'workspaces', array['workspaces_select', 'workspaces_insert', 'workspaces_update', 'workspaces_delete']);
select policy_roles_are('public', 'workspaces', 'workspaces_select', array['tenantry_app']);

select ok(not (select rolsuper or rolbypassrls or rolcreatedb or rolcreaterole from pg_roles where rolname = 'tenantry_app'),
          'the app role is NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE');
select ok(not exists (select 1 from pg_class where relowner = 'tenantry_app'::regrole),
          'the app role owns no relation');
select ok(not has_schema_privilege('tenantry_app', 'app', 'CREATE'), 'the app role cannot create in schema app');
select ok(not has_schema_privilege('tenantry_app', 'public', 'CREATE'), 'the app role cannot create in schema public');
select ok(not (select rolcanlogin from pg_roles where rolname = 'tenantry_definer'), 'nobody logs in as the definer');
select ok(not pg_has_role('tenantry_app', 'tenantry_definer', 'MEMBER'), 'the app role is not a member of the definer');
select ok(not has_table_privilege('tenantry_app', 'public.organizations', 'INSERT'),
          'organizations are created only through app.create_organization()');
select ok(not has_column_privilege('tenantry_app', 'public.organizations', 'region', 'UPDATE'),
          'the app role cannot move an organization between regions');

select * from finish();
rollback;
