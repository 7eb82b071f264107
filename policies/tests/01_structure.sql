-- Structure: RLS enabled and forced, the expected policies, and roles that cannot bypass them.
begin;
select plan(28);

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
-- No policy for the app role: only the definer's functions read refresh tokens.
select policies_are('public', 'refresh_tokens', array['definer_across_tenants']);
select ok(not has_table_privilege('tenantry_app', 'public.refresh_tokens', 'SELECT'),
          'the app role cannot read refresh token hashes');
select ok(not has_column_privilege('tenantry_app', 'public.api_keys', 'secret_hash', 'UPDATE'),
          'the app role cannot replace a key''s secret');
select policies_are('public', 'api_keys', array['api_keys_select', 'api_keys_insert', 'api_keys_update', 'definer_across_tenants']);
select policies_are('public', 'users', array['users_select', 'users_delete', 'definer_across_tenants']);
select is((select pg_get_expr(polqual, polrelid) from pg_policy where polname = 'users_delete'), 'false',
          'the app role''s DELETE on users (for Citus''s lock check) admits no row');
select ok(not has_any_column_privilege('tenantry_app', 'public.users', 'UPDATE'),
          'the app role changes no profile itself (app.refresh_profile() refreshes its copies too)');
select policies_are('public', 'member_profiles', array['member_profiles_select', 'definer_across_tenants']);
select policies_are('public', 'organizations', array['organizations_select', 'organizations_update', 'organizations_delete', 'definer_across_tenants']);
select policies_are('public', 'memberships', array['memberships_select', 'memberships_insert', 'memberships_update', 'memberships_delete', 'definer_across_tenants']);
select policies_are('public', 'workspaces', array['workspaces_select', 'workspaces_insert', 'workspaces_update', 'workspaces_delete', 'definer_across_tenants']);
select policy_roles_are('public', 'workspaces', 'workspaces_select', array['tenantry_app']);

select ok(not (select rolsuper or rolbypassrls or rolcreatedb or rolcreaterole from pg_roles where rolname = 'tenantry_app'),
          'the app role is NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE');
select ok(not exists (select 1 from pg_class where relowner = 'tenantry_app'::regrole),
          'the app role owns no relation');
select ok(not has_schema_privilege('tenantry_app', 'app', 'CREATE'), 'the app role cannot create in schema app');
select ok(not has_schema_privilege('tenantry_app', 'public', 'CREATE'), 'the app role cannot create in schema public');
select ok(not (select rolcanlogin from pg_roles where rolname = 'tenantry_definer'), 'nobody logs in as the definer');
select ok(not pg_has_role('tenantry_app', 'tenantry_definer', 'MEMBER'), 'the app role is not a member of the definer');
select ok(not exists (select 1 from pg_roles where rolname in ('tenantry_owner', 'tenantry_app', 'tenantry_definer')
                      and (rolsuper or rolbypassrls)),
          'no role tenantry runs as bypasses RLS (the definer neither)');
select ok(not exists (select 1 from pg_policy where 'tenantry_definer'::regrole = any(polroles)
                      and (polroles <> array['tenantry_definer'::regrole::oid] or polname <> 'definer_across_tenants')),
          'the definer is named only by its own definer_across_tenants policies');
select is((select count(*)::int from pg_policy p join pg_class c on c.oid = p.polrelid
            where p.polname = 'definer_across_tenants'
              and not (has_table_privilege('tenantry_definer', c.oid, 'SELECT, INSERT, UPDATE, DELETE')
                       or has_any_column_privilege('tenantry_definer', c.oid, 'SELECT, INSERT, UPDATE'))),
          0, 'the definer sees across tenants only on tables it is granted');
select ok(not has_table_privilege('tenantry_app', 'public.organizations', 'INSERT'),
          'organizations are created only through app.create_organization()');
select ok(not has_column_privilege('tenantry_app', 'public.organizations', 'region', 'UPDATE'),
          'the app role cannot move an organization between regions');

select * from finish();
rollback;
