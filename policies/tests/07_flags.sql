-- Feature flags: platform definitions are readable and unwritable by the app role; an
-- organization's configuration and targeting are its own.
begin;
select plan(7);

create function pg_temp.as_member(p_user uuid, p_org uuid, p_sql text) returns text
language plpgsql as $$
declare v text;
begin
  execute 'set local role tenantry_app';
  perform set_config('app.current_user_id', p_user::text, true);
  perform set_config('app.current_organization_id', p_org::text, true);
  perform set_config('app.current_region', 'us', true);
  perform app.enter_context();
  execute p_sql into v;
  execute 'reset role';
  return v;
end $$;

insert into users (id, issuer, subject) values
  ('00000000-0000-0000-0000-00000000a11c', 'test', 'alice'),
  ('00000000-0000-0000-0000-000000000b0b', 'test', 'bob');
insert into organizations (id, name, slug) values
  ('aaaaaaaa-0000-0000-0000-000000000000', 'A', 'pgtap-a'),
  ('bbbbbbbb-0000-0000-0000-000000000000', 'B', 'pgtap-b');
insert into memberships (organization_id, user_id, role) values
  ('aaaaaaaa-0000-0000-0000-000000000000', '00000000-0000-0000-0000-00000000a11c', 'owner'),
  ('aaaaaaaa-0000-0000-0000-000000000000', '00000000-0000-0000-0000-000000000b0b', 'viewer');
insert into feature_flags (key) values ('new-editor');
insert into organization_flags (organization_id, flag_key, enabled) values
  ('aaaaaaaa-0000-0000-0000-000000000000', 'new-editor', true),
  ('bbbbbbbb-0000-0000-0000-000000000000', 'new-editor', false);
insert into feature_flag_targets (organization_id, flag_key, enabled) values
  ('bbbbbbbb-0000-0000-0000-000000000000', 'new-editor', true);

select is(pg_temp.as_member('00000000-0000-0000-0000-00000000a11c', 'aaaaaaaa-0000-0000-0000-000000000000',
          'select string_agg(organization_id::text, '','') from organization_flags'),
          'aaaaaaaa-0000-0000-0000-000000000000', 'a member sees only its organization''s configuration');
select is(pg_temp.as_member('00000000-0000-0000-0000-00000000a11c', 'bbbbbbbb-0000-0000-0000-000000000000',
          'select count(*) from organization_flags'), '0', 'naming another organization shows nothing');
select is(pg_temp.as_member('00000000-0000-0000-0000-00000000a11c', 'aaaaaaaa-0000-0000-0000-000000000000',
          'select count(*) from feature_flag_targets'), '0', 'another organization''s targeting is invisible');
select is(pg_temp.as_member('00000000-0000-0000-0000-00000000a11c', 'aaaaaaaa-0000-0000-0000-000000000000',
          'select count(*) from feature_flags'), '1', 'platform definitions are readable');
select throws_ok($$select pg_temp.as_member('00000000-0000-0000-0000-00000000a11c', 'aaaaaaaa-0000-0000-0000-000000000000',
          'update feature_flags set kill_switch = true returning 1')$$, '42501', null,
          'only platform admins (through app.admin_put_flag) change definitions');
select is(pg_temp.as_member('00000000-0000-0000-0000-000000000b0b', 'aaaaaaaa-0000-0000-0000-000000000000',
          'with u as (update organization_flags set enabled = false returning 1) select count(*) from u'), '0',
          'a viewer (flags:read only) changes no configuration');
select throws_ok($$select pg_temp.as_member('00000000-0000-0000-0000-00000000a11c', 'aaaaaaaa-0000-0000-0000-000000000000',
          'insert into feature_flag_targets values (''aaaaaaaa-0000-0000-0000-000000000000'', ''new-editor'', true) returning 1')$$,
          '42501', null, 'an organization cannot target itself');

select * from finish();
rollback;
