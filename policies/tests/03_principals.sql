-- API keys and sessions as principals: what the app role sees under each.
begin;
select plan(9);

create function pg_temp.count_as(p_user uuid, p_org uuid, p_session uuid, p_key uuid, p_query text) returns bigint
language plpgsql as $$
declare n bigint;
begin
  execute 'set local role tenantry_app';
  perform set_config('app.current_user_id', coalesce(p_user::text, ''), true);
  perform set_config('app.current_organization_id', coalesce(p_org::text, ''), true);
  perform set_config('app.current_region', 'us', true);
  perform set_config('app.current_session_id', coalesce(p_session::text, ''), true);
  perform set_config('app.current_api_key_id', coalesce(p_key::text, ''), true);
  perform app.enter_context();
  execute p_query into n;
  execute 'reset role';
  return n;
end $$;

insert into users (id, issuer, subject) values ('00000000-0000-0000-0000-00000000a11c', 'test', 'alice');
insert into organizations (id, name, slug) values
  ('aaaaaaaa-0000-0000-0000-000000000000', 'A', 'pgtap-a'),
  ('bbbbbbbb-0000-0000-0000-000000000000', 'B', 'pgtap-b');
insert into memberships (organization_id, user_id, role) values
  ('aaaaaaaa-0000-0000-0000-000000000000', '00000000-0000-0000-0000-00000000a11c', 'owner');
insert into workspaces (organization_id, id, name, region) values
  ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000a1', 'A1', 'us'),
  ('bbbbbbbb-0000-0000-0000-000000000000', 'bbbbbbbb-0000-0000-0000-0000000000b1', 'B1', 'us');
insert into api_keys (organization_id, id, name, secret_hash, scopes) values
  ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-00000000ce11', 'live', sha256('x'), '{workspaces:read}'),
  ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-00000000dead', 'revoked', sha256('y'), '{workspaces:read}');
update api_keys set revoked_at = now() where id = 'aaaaaaaa-0000-0000-0000-00000000dead';
insert into sessions (id, user_id, provider, created_at, last_refreshed_at, idle_expires_at, absolute_expires_at, revoked_at)
values ('5e550000-0000-0000-0000-000000000001', '00000000-0000-0000-0000-00000000a11c', 'test', now(), now(),
        now() + interval '1 day', now() + interval '1 day', null),
       ('5e550000-0000-0000-0000-000000000002', '00000000-0000-0000-0000-00000000a11c', 'test', now(), now(),
        now() + interval '1 day', now() + interval '1 day', now());

select is(pg_temp.count_as(null, 'aaaaaaaa-0000-0000-0000-000000000000', null, 'aaaaaaaa-0000-0000-0000-00000000ce11',
          'select count(*) from workspaces'), 1::bigint, 'a live key sees its organization''s workspace');
select is(pg_temp.count_as(null, 'bbbbbbbb-0000-0000-0000-000000000000', null, 'aaaaaaaa-0000-0000-0000-00000000ce11',
          'select count(*) from workspaces'), 0::bigint, 'a key naming another organization sees nothing');
select is(pg_temp.count_as(null, 'aaaaaaaa-0000-0000-0000-000000000000', null, 'aaaaaaaa-0000-0000-0000-00000000dead',
          'select count(*) from workspaces'), 0::bigint, 'a revoked key sees nothing');
select is(pg_temp.count_as(null, 'aaaaaaaa-0000-0000-0000-000000000000', null, 'aaaaaaaa-0000-0000-0000-00000000ce11',
          'select count(*) from memberships'), 1::bigint, 'a key sees its organization''s members, no more');
select is(pg_temp.count_as(null, 'aaaaaaaa-0000-0000-0000-000000000000', null, 'aaaaaaaa-0000-0000-0000-00000000ce11',
          $$select count(*) from app.current_principal() where active and permissions = '{workspaces:read}'$$),
          1::bigint, 'a key''s permissions are its scopes');
select is(pg_temp.count_as(null, 'aaaaaaaa-0000-0000-0000-000000000000', null, 'aaaaaaaa-0000-0000-0000-00000000dead',
          'select count(*) from app.current_principal() where not active'), 1::bigint, 'a revoked key is inactive');
select is(pg_temp.count_as('00000000-0000-0000-0000-00000000a11c', null, '5e550000-0000-0000-0000-000000000002', null,
          'select count(*) from app.current_principal() where not active'), 1::bigint, 'a revoked session is inactive');
select is(pg_temp.count_as('00000000-0000-0000-0000-00000000a11c', null, '5e550000-0000-0000-0000-000000000001', null,
          'select count(*) from sessions'), 2::bigint, 'alice sees her sessions');
select is(pg_temp.count_as(null, 'aaaaaaaa-0000-0000-0000-000000000000', null, 'aaaaaaaa-0000-0000-0000-00000000ce11',
          'select count(*) from sessions'), 0::bigint, 'a key sees no sessions');

select * from finish();
rollback;
