-- Workflow runs: the queue's claim is the worker's only authority, confined to one run of one
-- organization while it runs; the state machine holds for every writer.
begin;
select plan(29);

-- Runs p_sql on the app role with the given context; returns the first column as text.
create function pg_temp.as_app(p_user uuid, p_org uuid, p_claim uuid, p_sql text) returns text
language plpgsql as $$
declare v text;
begin
  execute 'set local role tenantry_app';
  perform set_config('app.current_user_id', coalesce(p_user::text, ''), true);
  perform set_config('app.current_organization_id', coalesce(p_org::text, ''), true);
  perform set_config('app.current_region', 'us', true);
  perform set_config('app.current_session_id', '', true);
  perform set_config('app.current_api_key_id', '', true);
  perform set_config('app.current_run_claim', coalesce(p_claim::text, ''), true);
  perform app.enter_context();
  execute p_sql into v;
  execute 'reset role';
  return v;
end $$;

insert into users (id, issuer, subject) values ('00000000-0000-0000-0000-00000000a11c', 'test', 'alice');
insert into organizations (id, name, slug, data_mode) values
  ('aaaaaaaa-0000-0000-0000-000000000000', 'A', 'pgtap-a', 'full'),
  ('bbbbbbbb-0000-0000-0000-000000000000', 'B', 'pgtap-b', 'full');
insert into memberships (organization_id, user_id, role) values
  ('aaaaaaaa-0000-0000-0000-000000000000', '00000000-0000-0000-0000-00000000a11c', 'owner');
insert into workspaces (organization_id, id, name, region) values
  ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000a1', 'A1', 'us'),
  ('bbbbbbbb-0000-0000-0000-000000000000', 'bbbbbbbb-0000-0000-0000-0000000000b1', 'B1', 'us');
insert into workflows (organization_id, workspace_id, id, name, draft, latest_version) values
  ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000a1', 'aaaaaaaa-0000-0000-0000-00000000f100', 'wa', 'x', 1),
  ('bbbbbbbb-0000-0000-0000-000000000000', 'bbbbbbbb-0000-0000-0000-0000000000b1', 'bbbbbbbb-0000-0000-0000-00000000f100', 'wb', 'x', 1);
insert into workflow_versions (organization_id, workspace_id, workflow_id, version, definition, spec) values
  ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000a1', 'aaaaaaaa-0000-0000-0000-00000000f100', 1, 'x', '{}'),
  ('bbbbbbbb-0000-0000-0000-000000000000', 'bbbbbbbb-0000-0000-0000-0000000000b1', 'bbbbbbbb-0000-0000-0000-00000000f100', 1, 'x', '{}');
-- Two runs in A (the first is older, so it is claimed first), one in B.
insert into workflow_runs (organization_id, workspace_id, id, workflow_id, version, input, input_bytes, created_at) values
  ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000a1', 'aaaaaaaa-0000-0000-0000-0000000000e1',
   'aaaaaaaa-0000-0000-0000-00000000f100', 1, '{"a": 1}', 8, now() - interval '3 minutes'),
  ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000a1', 'aaaaaaaa-0000-0000-0000-0000000000e2',
   'aaaaaaaa-0000-0000-0000-00000000f100', 1, '{"a": 2}', 8, now() - interval '2 minutes'),
  ('bbbbbbbb-0000-0000-0000-000000000000', 'bbbbbbbb-0000-0000-0000-0000000000b1', 'bbbbbbbb-0000-0000-0000-0000000000e1',
   'bbbbbbbb-0000-0000-0000-00000000f100', 1, '{"b": 1}', 8, now() - interval '1 minute');
insert into workflow_run_inputs (organization_id, run_id, input) values
  ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000e1', '{"a": 1}'),
  ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000e2', '{"a": 2}'),
  ('bbbbbbbb-0000-0000-0000-000000000000', 'bbbbbbbb-0000-0000-0000-0000000000e1', '{"b": 1}');

-- A worker's claim in the region its context names (the argument names none).
create function pg_temp.claim_in(p_region text, p_per_org integer) returns uuid
language plpgsql as $$
declare v uuid;
begin
  execute 'set local role tenantry_app';
  perform set_config('app.current_region', coalesce(p_region, ''), true);
  select run_id into v from app.claim_next_run('pgtap', 60, 3, p_per_org);
  perform set_config('app.current_region', 'us', true);
  execute 'reset role';
  return v;
end $$;

-- The app role claims the oldest queued run and gets a token.
create temp table claim as select * from app.claim_next_run('pgtap', 60, 3, 4) limit 0;
grant all on claim to public;
set local role tenantry_app;
select set_config('app.current_region', 'us', true);
select lives_ok($$insert into claim select * from app.claim_next_run('pgtap', 60, 3, 4)$$, 'the app role can claim');
reset role;
select is((select run_id from claim), 'aaaaaaaa-0000-0000-0000-0000000000e1'::uuid, 'the oldest queued run is claimed first');
select is((select status from workflow_runs where id = 'aaaaaaaa-0000-0000-0000-0000000000e1'), 'running', 'and is running');
select is(pg_temp.claim_in('eu', 4), null, 'another region''s worker claims nothing here');
select is(pg_temp.claim_in(null, 4), null, 'a worker without a region claims nothing');
select is(pg_temp.claim_in('us', 1), 'bbbbbbbb-0000-0000-0000-0000000000e1'::uuid,
          'fair: A already runs one, so B''s run goes before A''s older second one');
select is(pg_temp.claim_in('us', 1), null, 'at one running run per organization, nothing more is claimed');

-- What the claim admits.
select is(pg_temp.as_app(null, 'aaaaaaaa-0000-0000-0000-000000000000', (select claim_token from claim),
          'select string_agg(id::text, '','') from workflow_runs'), 'aaaaaaaa-0000-0000-0000-0000000000e1',
          'the worker sees its run and no other run of the organization');
select is(pg_temp.as_app(null, 'aaaaaaaa-0000-0000-0000-000000000000', (select claim_token from claim),
          'select input::text from workflow_run_inputs'), '{"a": 1}', 'and its run''s input');
select is(pg_temp.as_app(null, 'bbbbbbbb-0000-0000-0000-000000000000', (select claim_token from claim),
          'select count(*) from workflow_runs'), '0', 'naming another organization with the claim sees nothing');
select is(pg_temp.as_app(null, 'aaaaaaaa-0000-0000-0000-000000000000', gen_random_uuid(),
          'select count(*) from workflow_runs'), '0', 'a made-up claim sees nothing');
select is(pg_temp.as_app(null, 'aaaaaaaa-0000-0000-0000-000000000000', gen_random_uuid(),
          'select active::text from app.current_principal()'), 'false', 'and is not an active principal');
select is(pg_temp.as_app('00000000-0000-0000-0000-00000000a11c', 'aaaaaaaa-0000-0000-0000-000000000000', null,
          'select count(*) from workflow_run_inputs'), '0', 'members (even owners) never read queued inputs');
select throws_ok($$select pg_temp.as_app('00000000-0000-0000-0000-00000000a11c', 'aaaaaaaa-0000-0000-0000-000000000000', null,
          'select count(claim_token) from workflow_runs')$$, '42501', null, 'the claim token column is not readable');

-- The state machine.
select throws_ok(format($$select pg_temp.as_app(null, 'aaaaaaaa-0000-0000-0000-000000000000', %L,
          'update workflow_runs set status = ''cancelled'' returning 1')$$, (select claim_token from claim)),
          'TY031', null, 'a worker cannot cancel');
select throws_ok($$select pg_temp.as_app('00000000-0000-0000-0000-00000000a11c', 'aaaaaaaa-0000-0000-0000-000000000000', null,
          'update workflow_runs set status = ''succeeded'' where id = ''aaaaaaaa-0000-0000-0000-0000000000e1'' returning 1')$$,
          'TY031', null, 'a member cannot finish a run');
select throws_ok($$select pg_temp.as_app('00000000-0000-0000-0000-00000000a11c', 'aaaaaaaa-0000-0000-0000-000000000000', null,
          'update workflow_runs set input = ''{}'' returning 1')$$, '42501', null, 'nobody changes a run''s input');
select is(pg_temp.as_app(null, 'aaaaaaaa-0000-0000-0000-000000000000', (select claim_token from claim),
          'update workflow_runs set status = ''succeeded'', output = ''{"ok": true}'' returning status'), 'succeeded',
          'the claim holder finishes its run');
select is((select count(*) from workflow_run_inputs where run_id = 'aaaaaaaa-0000-0000-0000-0000000000e1'), 0::bigint,
          'a finished run''s input is gone');
select is(pg_temp.as_app(null, 'aaaaaaaa-0000-0000-0000-000000000000', (select claim_token from claim),
          'select active::text from app.current_principal()'), 'false', 'the claim ends with the run');
select throws_ok($$select pg_temp.as_app('00000000-0000-0000-0000-00000000a11c', 'aaaaaaaa-0000-0000-0000-000000000000', null,
          'update workflow_runs set status = ''cancelled'' where id = ''aaaaaaaa-0000-0000-0000-0000000000e1'' returning 1')$$,
          'TY031', null, 'a finished run cannot be cancelled');
select is(pg_temp.as_app('00000000-0000-0000-0000-00000000a11c', 'aaaaaaaa-0000-0000-0000-000000000000', null,
          'update workflow_runs set status = ''cancelled'' where id = ''aaaaaaaa-0000-0000-0000-0000000000e2'' returning status'),
          'cancelled', 'a member cancels a queued run');

-- The row checks (triggers standing in for a policy that would need another row), tried straight
-- on the tables as the app role.
select is(pg_temp.as_app('00000000-0000-0000-0000-00000000a11c', 'aaaaaaaa-0000-0000-0000-000000000000', null,
          'select count(*) from workflow_versions'), '1', 'a member sees her organization''s version, not B''s');
select is(pg_temp.as_app('00000000-0000-0000-0000-00000000a11c', 'aaaaaaaa-0000-0000-0000-000000000000', null,
          $q$insert into workflow_runs (organization_id, workspace_id, id, workflow_id, version, input_bytes) values
             ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000a1',
              'aaaaaaaa-0000-0000-0000-0000000000e9', 'aaaaaaaa-0000-0000-0000-00000000f100', 1, 0) returning 1$q$),
          '1', 'a member starts a run of a live workflow of the workspace');
select is(pg_temp.as_app('00000000-0000-0000-0000-00000000a11c', 'aaaaaaaa-0000-0000-0000-000000000000', null,
          $q$insert into workflow_run_inputs (organization_id, run_id, input) values
             ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000e9', '{}') returning 1$q$),
          '1', 'and writes its input while it is queued');
select throws_ok($$select pg_temp.as_app('00000000-0000-0000-0000-00000000a11c', 'aaaaaaaa-0000-0000-0000-000000000000', null,
          $q$insert into workflow_runs (organization_id, workspace_id, id, workflow_id, version, input_bytes) values
             ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000a1', gen_random_uuid(),
              'bbbbbbbb-0000-0000-0000-00000000f100', 1, 0) returning 1$q$)$$,
          '42501', 'row-level security check: the run''s workflow is not a live workflow of its workspace',
          'a run of another organization''s workflow is refused');
select throws_ok($$select pg_temp.as_app('00000000-0000-0000-0000-00000000a11c', 'aaaaaaaa-0000-0000-0000-000000000000', null,
          $q$insert into workflow_runs (organization_id, workspace_id, id, workflow_id, version, input_bytes) values
             ('aaaaaaaa-0000-0000-0000-000000000000', 'bbbbbbbb-0000-0000-0000-0000000000b1', gen_random_uuid(),
              'aaaaaaaa-0000-0000-0000-00000000f100', 1, 0) returning 1$q$)$$,
          '42501', 'row-level security check: the run''s workflow is not a live workflow of its workspace',
          'so is a run filed under a workspace its workflow is not in');
select throws_ok($$select pg_temp.as_app('00000000-0000-0000-0000-00000000a11c', 'aaaaaaaa-0000-0000-0000-000000000000', null,
          $q$insert into workflow_run_inputs (organization_id, run_id, input) values
             ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000e2', '{"x": 1}') returning 1$q$)$$,
          '42501', 'row-level security check: a run''s input is written only while the run is queued',
          'no input is slipped to a run that is no longer queued');
update workflows set archived_at = now() where id = 'aaaaaaaa-0000-0000-0000-00000000f100';
select throws_ok($$select pg_temp.as_app('00000000-0000-0000-0000-00000000a11c', 'aaaaaaaa-0000-0000-0000-000000000000', null,
          $q$insert into workflow_runs (organization_id, workspace_id, id, workflow_id, version, input_bytes) values
             ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000a1', gen_random_uuid(),
              'aaaaaaaa-0000-0000-0000-00000000f100', 1, 0) returning 1$q$)$$,
          '42501', 'row-level security check: the run''s workflow is not a live workflow of its workspace',
          'nor is an archived workflow started');

select * from finish();
rollback;
