-- Behaviour: what the app role sees and may write under each context.
begin;
select plan(33);

-- Become the app role with the given context (until `reset role`), then run a query returning
-- one number, or a statement returning the rows it affected. A failing statement rolls its
-- SET LOCAL back with it, so a caught error also leaves the test as the superuser.
create function pg_temp.become(p_user uuid, p_org uuid) returns void
language plpgsql as $$
begin
  execute 'set local role tenantry_app';
  perform set_config('app.current_user_id', coalesce(p_user::text, ''), true);
  perform set_config('app.current_organization_id', coalesce(p_org::text, ''), true);
  perform set_config('app.current_region', 'us', true);
  perform app.enter_context();
end $$;
create function pg_temp.count_as(p_user uuid, p_org uuid, p_query text) returns bigint
language plpgsql as $$
declare n bigint;
begin
  perform pg_temp.become(p_user, p_org);
  execute p_query into n;
  execute 'reset role';
  return n;
end $$;
create function pg_temp.exec_as(p_user uuid, p_org uuid, p_sql text) returns bigint
language plpgsql as $$
declare n bigint;
begin
  perform pg_temp.become(p_user, p_org);
  execute p_sql;
  get diagnostics n = row_count;
  execute 'reset role';
  return n;
end $$;

-- Arrange, as the superuser (bypassing RLS).
insert into users (id, issuer, subject, email) values
  ('00000000-0000-0000-0000-00000000a11c', 'test', 'alice', 'alice@a.test'),
  ('00000000-0000-0000-0000-000000000b0b', 'test', 'bob', 'bob@b.test'),
  ('00000000-0000-0000-0000-0000000ca401', 'test', 'carol', 'carol@a.test');
insert into organizations (id, name, slug) values
  ('aaaaaaaa-0000-0000-0000-000000000000', 'A', 'pgtap-a'),
  ('bbbbbbbb-0000-0000-0000-000000000000', 'B', 'pgtap-b');
insert into memberships (organization_id, user_id, role) values
  ('aaaaaaaa-0000-0000-0000-000000000000', '00000000-0000-0000-0000-00000000a11c', 'owner'),
  ('aaaaaaaa-0000-0000-0000-000000000000', '00000000-0000-0000-0000-0000000ca401', 'viewer'),
  ('bbbbbbbb-0000-0000-0000-000000000000', '00000000-0000-0000-0000-000000000b0b', 'owner');
insert into workspaces (organization_id, id, name, region) values
  ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000a1', 'A1', 'us'),
  ('bbbbbbbb-0000-0000-0000-000000000000', 'bbbbbbbb-0000-0000-0000-0000000000b1', 'B1', 'us');

\set alice '\'00000000-0000-0000-0000-00000000a11c\''
\set bob '\'00000000-0000-0000-0000-000000000b0b\''
\set carol '\'00000000-0000-0000-0000-0000000ca401\''
\set a '\'aaaaaaaa-0000-0000-0000-000000000000\''
\set b '\'bbbbbbbb-0000-0000-0000-000000000000\''

select is(pg_temp.count_as(null, null, 'select count(*) from workspaces'), 0::bigint, 'no context: no workspaces');
select is(pg_temp.count_as(null, null, 'select count(*) from organizations'), 0::bigint, 'no context: no organizations');
select is(pg_temp.count_as(null, :a, 'select count(*) from workspaces'), 0::bigint, 'an organization without a user: nothing');
select is(pg_temp.count_as(:alice, :a, 'select count(*) from workspaces'), 1::bigint, 'alice sees her organization''s workspace');
select is(pg_temp.count_as(:alice, :a, $$select count(*) from workspaces where name = 'B1'$$), 0::bigint, 'and not B''s');
select is(pg_temp.count_as(:alice, :b, 'select count(*) from workspaces'), 0::bigint, 'naming B without membership: nothing');
select is(pg_temp.count_as(:bob, :a, 'select count(*) from workspaces'), 0::bigint, 'bob naming A: nothing');
select is(pg_temp.count_as(:alice, null, 'select count(*) from app.user_organizations'), 1::bigint,
  'alice lists only her organization (app.user_organizations)');
select is(pg_temp.count_as(:alice, null, 'select count(*) from organizations'), 0::bigint,
  'organizations itself shows only the organization in context: none here');
select is(pg_temp.count_as(:alice, :a, 'select count(*) from memberships'), 2::bigint, 'alice sees A''s two memberships');
select is(pg_temp.count_as(:bob, null, 'select count(*) from users'), 1::bigint, 'bob sees only himself among users');
select is(pg_temp.count_as(:carol, :a, 'select count(*) from users'), 1::bigint, 'carol sees only her own user row');
select is(pg_temp.count_as(:carol, :a, 'with d as (delete from users returning 1) select count(*) from d'), 0::bigint,
  'and deletes no user, not even herself');
select is(pg_temp.count_as(:carol, :a, 'select count(*) from member_profiles'), 2::bigint,
  'and the profiles of A''s members (member_profiles, copied with each membership)');
select is(pg_temp.count_as(:carol, :b, 'select count(*) from member_profiles'), 0::bigint,
  'naming B without membership: no profiles');
select is(pg_temp.count_as(:carol, :a, 'select count(*) from app.member_profiles'), 2::bigint,
  'the previous release''s view shows the same');
select throws_ok(format('select pg_temp.count_as(%L, %L, %L)', :carol, :a,
  $q$with x as (insert into member_profiles (organization_id, user_id, issuer, subject, created_at, row_version)
     select organization_id, user_id, 'x', 'y', now(), 1 from memberships returning 1) select count(*) from x$q$),
  '42501', null, 'the app role cannot plant a profile');
select throws_ok(format('select pg_temp.count_as(%L, %L, %L)', :carol, :a,
  $q$with x as (update member_profiles set email = 'planted@x.test' returning 1) select count(*) from x$q$),
  '42501', null, 'nor rewrite one');
-- The attacker's first try at a definer view: a condition of their own that records what it sees
-- (a cast error or a notice would do the same). security_barrier runs it only on admitted rows.
create temporary table seen (email text);
grant insert on seen to tenantry_app;
create function pg_temp.peek(p_email text) returns boolean
language sql volatile cost 0.0001 as $$ insert into pg_temp.seen values (p_email) returning true $$;
select is(pg_temp.count_as(:carol, :a, 'select count(*) from member_profiles where pg_temp.peek(email)'),
  2::bigint, 'a cheap leaky condition on the profiles still counts only A''s members');
select is((select array_agg(email order by email) from seen), array['alice@a.test', 'carol@a.test'],
  'and never saw a row of B');
select is(pg_temp.count_as(:bob, :b, 'select count(*) from app.user_organizations where pg_temp.peek(slug)'),
  1::bigint, 'nor on the organization list, which shows bob only B');
select is((select array_agg(email) from seen where email like 'pgtap-%'), array['pgtap-b'],
  'whose condition saw B''s slug alone');
delete from seen;
select is(pg_temp.count_as(:bob, :a, 'select count(*) from app.caller_organizations() where pg_temp.peek(slug)'),
  1::bigint, 'the function the server lists organizations with shows bob only B, naming A');
select is((select array_agg(email) from seen), array['pgtap-b'], 'and a condition of his saw B''s slug alone');

select is(pg_temp.exec_as(:alice, :a, $$insert into workspaces (organization_id, name) values ('aaaaaaaa-0000-0000-0000-000000000000', 'A2')$$),
          1::bigint, 'an owner creates a workspace');
select throws_ok($$select pg_temp.exec_as('00000000-0000-0000-0000-00000000a11c', 'aaaaaaaa-0000-0000-0000-000000000000',
                   'insert into workspaces (organization_id, name) values (''bbbbbbbb-0000-0000-0000-000000000000'', ''planted'')')$$,
                 '42501', null, 'a row for another organization is refused');
select throws_ok($$select pg_temp.exec_as('00000000-0000-0000-0000-0000000ca401', 'aaaaaaaa-0000-0000-0000-000000000000',
                   'insert into workspaces (organization_id, name) values (''aaaaaaaa-0000-0000-0000-000000000000'', ''x'')')$$,
                 '42501', null, 'a viewer cannot create a workspace');
select is(pg_temp.exec_as(:carol, :a, $$update workspaces set name = 'renamed'$$), 0::bigint, 'a viewer updates nothing');
select is(pg_temp.exec_as(:bob, :a, 'delete from workspaces'), 0::bigint, 'another tenant deletes nothing');
select throws_ok($$select pg_temp.exec_as('00000000-0000-0000-0000-00000000a11c', 'aaaaaaaa-0000-0000-0000-000000000000',
                   'update workspaces set organization_id = ''bbbbbbbb-0000-0000-0000-000000000000''')$$,
                 '42501', null, 'a workspace cannot be moved to another organization');
select throws_ok($$select pg_temp.exec_as('00000000-0000-0000-0000-00000000a11c', 'aaaaaaaa-0000-0000-0000-000000000000',
                   'insert into organizations (name, slug) values (''x'', ''x'')')$$,
                 '42501', null, 'organizations are not inserted directly');
select throws_ok($$select pg_temp.exec_as('00000000-0000-0000-0000-00000000a11c', 'aaaaaaaa-0000-0000-0000-000000000000',
                   'set constraints all immediate; delete from memberships where user_id = ''00000000-0000-0000-0000-00000000a11c''')$$,
                 'TY001', null, 'the last owner cannot leave');
select is((select count(*) from workspaces where name = 'planted'), 0::bigint, 'nothing was planted in B');

select * from finish();
rollback;
