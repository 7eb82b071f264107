-- Data mode: content columns stay empty for metadata_only organizations, for every role.
begin;
select plan(7);

insert into organizations (id, name, slug, data_mode) values
  ('aaaaaaaa-0000-0000-0000-000000000000', 'Meta', 'pgtap-meta', 'metadata_only'),
  ('bbbbbbbb-0000-0000-0000-000000000000', 'Full', 'pgtap-full', 'full');

-- A table shaped like workflow runs: metadata plus content columns.
create table pg_temp.run_probe (organization_id uuid not null, id int, status text, input jsonb, output text);
create trigger run_probe_data_mode before insert or update on pg_temp.run_probe
  for each row execute function app.enforce_data_mode('input', 'output');

select lives_ok($$insert into pg_temp.run_probe values ('aaaaaaaa-0000-0000-0000-000000000000', 1, 'queued', null, null)$$,
  'metadata is always stored');
select throws_ok($$insert into pg_temp.run_probe values ('aaaaaaaa-0000-0000-0000-000000000000', 2, 'queued', '{"q": 1}', null)$$,
  'TY020', null, 'content is refused in metadata_only mode');
select throws_ok($$update pg_temp.run_probe set output = 'answer' where id = 1$$,
  'TY020', null, 'and cannot be added later');
select lives_ok($$insert into pg_temp.run_probe values ('bbbbbbbb-0000-0000-0000-000000000000', 3, 'done', '{"q": 1}', 'answer')$$,
  'content is stored in full mode');
select is((select count(*) from pg_temp.run_probe where input is not null or output is not null), 1::bigint,
  'only the full-mode row holds content');
select throws_ok($$insert into pg_temp.run_probe values ('cccccccc-0000-0000-0000-000000000000', 4, 'x', '{}', null)$$,
  'TY020', null, 'an unknown organization counts as metadata_only (fail closed)');
update organizations set data_mode = 'metadata_only' where id = 'bbbbbbbb-0000-0000-0000-000000000000';
select throws_ok($$update pg_temp.run_probe set output = 'new answer' where id = 3$$,
  'TY020', null, 'switching to metadata_only stops new content at once');

select * from finish();
rollback;
