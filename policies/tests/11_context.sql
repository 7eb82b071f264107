-- The sealed context: the app role, which may set every setting, is admitted only to what
-- app.enter_context() verified and sealed in this transaction (sql/02_context.sql).
begin;
select plan(33);

insert into users (id, issuer, subject) values
  ('00000000-0000-0000-0000-00000000a11c', 'test', 'alice'),
  ('00000000-0000-0000-0000-0000000ca401', 'test', 'carol'),
  ('00000000-0000-0000-0000-000000000b0b', 'test', 'bob'),
  ('00000000-0000-0000-0000-0000000000e1', 'test', 'erin');
insert into organizations (id, name, slug) values
  ('aaaaaaaa-0000-0000-0000-000000000000', 'A', 'ctx-a'),
  ('bbbbbbbb-0000-0000-0000-000000000000', 'B', 'ctx-b');
insert into memberships (organization_id, user_id, role) values
  ('aaaaaaaa-0000-0000-0000-000000000000', '00000000-0000-0000-0000-00000000a11c', 'owner'),
  ('aaaaaaaa-0000-0000-0000-000000000000', '00000000-0000-0000-0000-0000000ca401', 'viewer'),
  ('bbbbbbbb-0000-0000-0000-000000000000', '00000000-0000-0000-0000-000000000b0b', 'owner');
-- Erin: an admin of A restricted to A1.
insert into memberships (organization_id, user_id, role, restricted) values
  ('aaaaaaaa-0000-0000-0000-000000000000', '00000000-0000-0000-0000-0000000000e1', 'admin', true);
insert into workspaces (organization_id, id, name, region) values
  ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000a1', 'A1', 'us'),
  ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000a2', 'A2', 'us'),
  ('bbbbbbbb-0000-0000-0000-000000000000', 'bbbbbbbb-0000-0000-0000-0000000000b1', 'B1', 'us');
insert into member_workspaces (organization_id, user_id, workspace_id) values
  ('aaaaaaaa-0000-0000-0000-000000000000', '00000000-0000-0000-0000-0000000000e1', 'aaaaaaaa-0000-0000-0000-0000000000a1');

-- As the app role: set `p_user` in `p_org` (region us), enter the context when `p_enter`, then
-- run `p_tamper` (settings the app role changes by hand; may be empty) and the query `p_sql`.
-- Returns the query's first column as text.
create function pg_temp.as_app(p_user uuid, p_org uuid, p_enter boolean, p_tamper text, p_sql text)
returns text language plpgsql as $$
declare v text;
begin
  execute 'set local role tenantry_app';
  perform set_config('app.current_user_id', coalesce(p_user::text, ''), true);
  perform set_config('app.current_organization_id', coalesce(p_org::text, ''), true);
  perform set_config('app.current_region', 'us', true);
  perform set_config('app.current_session_id', '', true);
  perform set_config('app.current_api_key_id', '', true);
  perform set_config('app.verified_org', '', true);
  perform set_config('app.verified_permissions', '', true);
  perform set_config('app.verified_workspaces', '', true);
  perform set_config('app.context_seal', '', true);
  if p_enter then
    perform app.enter_context();
  end if;
  if p_tamper <> '' then
    execute p_tamper;
  end if;
  execute p_sql into v;
  execute 'reset role';
  return v;
end $$;

\set alice '\'00000000-0000-0000-0000-00000000a11c\''
\set carol '\'00000000-0000-0000-0000-0000000ca401\''
\set a '\'aaaaaaaa-0000-0000-0000-000000000000\''
\set b '\'bbbbbbbb-0000-0000-0000-000000000000\''

-- The honest path.
select is(pg_temp.as_app(:alice, :a, true, '', 'select count(*) from workspaces'), '2',
  'a member whose context was entered sees her organization');
select is(pg_temp.as_app(:alice, :a, true, '', 'select app.current_org_id()::text'),
  'aaaaaaaa-0000-0000-0000-000000000000', 'current_org_id is the verified organization');

-- Settings alone, however complete, admit nothing.
select is(pg_temp.as_app(:alice, :a, false, '', 'select count(*) from workspaces'), '0',
  'the settings without enter_context: nothing');
select is(pg_temp.as_app(:alice, :a, false,
  $$select set_config('app.verified_org', 'aaaaaaaa-0000-0000-0000-000000000000', true),
           set_config('app.verified_permissions', '{workspaces:read,workspaces:write}', true),
           set_config('app.context_seal', repeat('0', 64), true)$$,
  'select count(*) from workspaces'), '0', 'a verified context written by hand, with a made-up seal: nothing');

-- A sealed context, changed afterwards: each change breaks the seal.
select is(pg_temp.as_app(:alice, :a, true,
  $$select set_config('app.verified_org', 'bbbbbbbb-0000-0000-0000-000000000000', true),
           set_config('app.current_organization_id', 'bbbbbbbb-0000-0000-0000-000000000000', true)$$,
  'select count(*) from workspaces'), '0', 'the seal of A does not carry over to B');
select is(pg_temp.as_app(:alice, :a, true,
  $$select set_config('app.current_organization_id', 'bbbbbbbb-0000-0000-0000-000000000000', true)$$,
  'select count(*) from workspaces'), '0', 'naming B after entering A: admitted nowhere');
select is(pg_temp.as_app(:alice, :a, true,
  $$select set_config('app.current_user_id', '00000000-0000-0000-0000-000000000b0b', true)$$,
  'select count(*) from workspaces'), '0', 'another user after entering: admitted nowhere');
select is(pg_temp.as_app(:carol, :a, true,
  $$select set_config('app.verified_permissions', '{org:delete,workspaces:delete,workspaces:read}', true)$$,
  $$select app.has_permission('workspaces:delete')::text$$), 'false',
  'a viewer who widens her own permissions holds none');
select is(pg_temp.as_app(:carol, :a, true, '', $$select app.has_permission('workspaces:delete')::text$$),
  'false', 'a viewer holds no workspaces:delete');
select is(pg_temp.as_app(:alice, :a, true,
  $$select set_config('app.verified_workspaces', '{aaaaaaaa-0000-0000-0000-0000000000a1}', true)$$,
  'select count(*) from workspaces'), '0', 'even narrowing a restriction by hand breaks the seal');

-- Changing the context in the middle of a statement: the policy's context was taken once, at its
-- start, and another organization's rows never pass.
select is(pg_temp.as_app(:alice, :a, true, '',
  $$select count(*) from workspaces w
     where set_config('app.current_organization_id', 'bbbbbbbb-0000-0000-0000-000000000000', true) is not null
       and w.organization_id = 'bbbbbbbb-0000-0000-0000-000000000000'$$), '0',
  'switching the organization mid-statement shows none of B');

\set erin '\'00000000-0000-0000-0000-0000000000e1\''
select is(pg_temp.as_app(:erin, :a, true, '', $$select string_agg(name, ',' order by name) from workspaces$$), 'A1',
  'a restricted admin sees her workspace only');
select is(pg_temp.as_app(:erin, :a, true,
  $$select set_config('app.verified_workspaces', '', true)$$, 'select count(*) from workspaces'), '0',
  'lifting her restriction by hand: admitted nowhere');
-- A write re-checks the seal on every row: lifting the restriction halfway through an update
-- (on her own A1, which comes first) fails the whole statement, A1 included.
select throws_ok($$select pg_temp.as_app('00000000-0000-0000-0000-0000000000e1', 'aaaaaaaa-0000-0000-0000-000000000000', true, '',
  'with u as (update workspaces w set name = w.name || ''!''
               where (set_config(''app.verified_workspaces'', '''', true) || w.name) is not null returning w.name)
    select string_agg(name, '','' order by name) from u')$$, '42501', null,
  'lifting her restriction mid-update changes nothing');
select is((select string_agg(name, ',' order by name) from workspaces where organization_id = :a), 'A1,A2',
  'both her workspace and the other are as they were');

-- Entering again re-verifies: the server moves a transaction into another organization this way.
select is(pg_temp.as_app(:alice, :a, true,
  $$select set_config('app.current_organization_id', 'bbbbbbbb-0000-0000-0000-000000000000', true),
           app.enter_context()$$,
  'select count(*) from workspaces'), '0', 'entering B, where she is no member: nothing');
select is(pg_temp.as_app(:alice, :b, true,
  $$select set_config('app.current_organization_id', 'aaaaaaaa-0000-0000-0000-000000000000', true),
           app.enter_context()$$,
  'select count(*) from workspaces'), '2', 'entering A again: her organization');

-- The key is the definer's alone.
set local role tenantry_app;
select throws_ok('select count(*) from app.context_keys', '42501', null, 'the app role cannot read the key');
select throws_ok($$select app.context_key()$$, '42501', null, 'nor call the function that holds it');
select throws_ok($$select app.context_seal('', '', '', '')$$, '42501', null, 'nor seal a context of its own');
reset role;
select is((select count(*) from app.context_keys where inner_key <> outer_key), 1::bigint,
  'one key, its halves distinct');
select ok(not has_table_privilege('tenantry_app', 'app.context_keys', 'select, insert, update, delete'),
  'the app role holds no privilege on the key');

-- Rotating the key voids every seal made under the old one, on connections that already folded
-- the old key into their plans too (this one has, above), and entering again seals under the new.
create function pg_temp.sealed_org() returns text language plpgsql as $$
declare v text;
begin
  execute 'set local role tenantry_app';
  v := app.current_org_id()::text;
  execute 'reset role';
  return v;
end $$;
select is(pg_temp.as_app(:alice, :a, true, '', 'select app.current_org_id()::text'),
  'aaaaaaaa-0000-0000-0000-000000000000', 'sealed under the key in use');
select is(pg_temp.sealed_org(), 'aaaaaaaa-0000-0000-0000-000000000000', 'and still sealed, one statement later');
call app.rotate_context_key();
select is(pg_temp.sealed_org(), null, 'after a rotation, the old seal admits nothing');
select is(pg_temp.as_app(:alice, :a, true, '', 'select app.current_org_id()::text'),
  'aaaaaaaa-0000-0000-0000-000000000000', 'entering again seals under the new key');

-- What Citus needs, as it behaves on plain PostgreSQL (the drill, `make citus`, runs the rest).
select is(app.logical_table_name('memberships'), 'memberships', 'a table is named by its own name');
select is(app.logical_table_name('memberships_102008'), 'memberships', 'a shard by its table''s');
select ok(not app.fired_on_shard('workflow_runs') and app.fired_on_shard('workflow_runs_102040'),
  'a trigger on a shard knows it');
select is(app.context_binding(), pg_backend_pid() || '@' || extract(epoch from now()),
  'without Citus, a seal is bound to the backend and the transaction''s start');
select ok(not has_function_privilege('tenantry_app', 'app.share_context_with_workers(text[])', 'execute')
          and not has_function_privilege('tenantry_app', 'app.context_binding()', 'execute')
          and not has_function_privilege('tenantry_app', 'app.share_context_key()', 'execute'),
  'the app role can neither re-set the context for the workers, compute a binding nor copy the key');
select is(current_setting('citus.propagate_set_commands', true), null,
  'without Citus, app.enter_context() shares nothing with workers');
-- The policies' claim questions, which stand in for `f() IS NULL` (Citus cannot re-create that).
select is(pg_temp.as_app(:alice, :a, true, '',
            'select app.without_run_claim()::text || '' '' || app.holds_verified_claim()::text'),
  'true false', 'a member holds no run claim and no verified claim');

select * from finish();
rollback;
