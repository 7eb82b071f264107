-- The audit log: appendable under context, readable with audit:read, never changed.
begin;
select plan(9);

insert into users (id, issuer, subject) values
  ('00000000-0000-0000-0000-00000000a11c', 'test', 'alice'),
  ('00000000-0000-0000-0000-000000000b0b', 'test', 'bob');
insert into organizations (id, name, slug) values ('aaaaaaaa-0000-0000-0000-000000000000', 'A', 'pgtap-a');
insert into memberships (organization_id, user_id, role) values
  ('aaaaaaaa-0000-0000-0000-000000000000', '00000000-0000-0000-0000-00000000a11c', 'owner'),
  ('aaaaaaaa-0000-0000-0000-000000000000', '00000000-0000-0000-0000-000000000b0b', 'viewer');

-- As the app role in organization A: run a statement (rows affected) or a query (one number).
create function pg_temp.become(p_user uuid) returns void
language plpgsql as $$
begin
  execute 'set local role tenantry_app';
  perform set_config('app.current_user_id', p_user::text, true);
  perform set_config('app.current_organization_id', 'aaaaaaaa-0000-0000-0000-000000000000', true);
  perform set_config('app.current_region', 'us', true);
  perform app.enter_context();
end $$;
create function pg_temp.exec_as(p_user uuid, p_sql text) returns bigint
language plpgsql as $$
declare n bigint;
begin
  perform pg_temp.become(p_user);
  execute p_sql;
  get diagnostics n = row_count;
  execute 'reset role';
  return n;
end $$;
create function pg_temp.count_as(p_user uuid, p_sql text) returns bigint
language plpgsql as $$
declare n bigint;
begin
  perform pg_temp.become(p_user);
  execute p_sql into n;
  execute 'reset role';
  return n;
end $$;

select is(pg_temp.exec_as('00000000-0000-0000-0000-000000000b0b',
  $q$insert into audit_events (organization_id, id, actor_type, action, outcome, prev_hash, hash)
     values ('aaaaaaaa-0000-0000-0000-000000000000', gen_random_uuid(), 'user', 'test.denied', 'denied', '\x', '\x')$q$),
  1::bigint, 'a viewer appends (denials are recorded)');
select is(pg_temp.exec_as('00000000-0000-0000-0000-00000000a11c',
  $q$insert into audit_events (organization_id, id, actor_type, action, outcome, prev_hash, hash)
     values ('aaaaaaaa-0000-0000-0000-000000000000', gen_random_uuid(), 'user', 'test.allowed', 'allowed', '\x', '\x')$q$),
  1::bigint, 'an owner appends');
select is((select array_agg(seq order by seq) from audit_events), array[1, 2]::bigint[],
  'the chain numbers entries itself');
select is((select prev_hash from audit_events where seq = 2), (select hash from audit_events where seq = 1),
  'each entry chains to the previous one');
select is(pg_temp.count_as('00000000-0000-0000-0000-000000000b0b', 'select count(*) from audit_events'), 0::bigint,
  'without audit:read nothing is readable');
select is(pg_temp.count_as('00000000-0000-0000-0000-00000000a11c', 'select count(*) from audit_events'), 2::bigint,
  'an owner reads the log');
select throws_ok(
  $q$select pg_temp.exec_as('00000000-0000-0000-0000-00000000a11c', 'update audit_events set details = ''{}''')$q$,
  '42501', null, 'the app role cannot update');
select throws_ok($q$delete from audit_events$q$, 'TY002', null, 'nobody deletes, the owner included');
select is_empty($q$select * from app.audit_verify('aaaaaaaa-0000-0000-0000-000000000000')$q$, 'the chain verifies');

select * from finish();
rollback;
