-- Billing: the ledger balances (checked even when forced immediate) and is append-only; plans are
-- public; the webhook inbox is out of the app role's reach.
begin;
select plan(8);

create function pg_temp.as_owner_of_a(p_sql text) returns text
language plpgsql as $$
declare v text;
begin
  execute 'set local role tenantry_app';
  perform set_config('app.current_user_id', '00000000-0000-0000-0000-00000000a11c', true);
  perform set_config('app.current_organization_id', 'aaaaaaaa-0000-0000-0000-000000000000', true);
  perform set_config('app.current_region', 'us', true);
  perform app.enter_context();
  execute p_sql into v;
  execute 'reset role';
  return v;
end $$;

insert into users (id, issuer, subject) values ('00000000-0000-0000-0000-00000000a11c', 'test', 'alice');
insert into organizations (id, name, slug) values
  ('aaaaaaaa-0000-0000-0000-000000000000', 'A', 'pgtap-a'),
  ('bbbbbbbb-0000-0000-0000-000000000000', 'B', 'pgtap-b');
insert into memberships (organization_id, user_id, role) values
  ('aaaaaaaa-0000-0000-0000-000000000000', '00000000-0000-0000-0000-00000000a11c', 'owner');
insert into ledger_accounts (organization_id, id, code, currency) values
  ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000c1', 'cash', 'USD'),
  ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000c2', 'revenue', 'USD'),
  ('bbbbbbbb-0000-0000-0000-000000000000', 'bbbbbbbb-0000-0000-0000-0000000000c1', 'cash', 'USD');
set constraints all immediate;

select is(pg_temp.as_owner_of_a('select count(*) from plans'), '3', 'plans are readable by every caller');
select is(pg_temp.as_owner_of_a('select count(*) from ledger_accounts'), '2', 'a member sees only its organization''s accounts');
select throws_ok($$select pg_temp.as_owner_of_a('select count(*) from webhook_events')$$, '42501', null,
  'the webhook inbox is out of the app role''s reach');
select lives_ok($$select pg_temp.as_owner_of_a($q$
  with t as (insert into journal_transactions (organization_id, id, description, source)
             values ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000d1', 'sale', 'test:1')
             returning id)
  insert into journal_entries (organization_id, transaction_id, line_no, account_id, amount_minor, currency)
  select 'aaaaaaaa-0000-0000-0000-000000000000', t.id, x.line, x.account, x.amount, 'USD' from t,
    (values (1, 'aaaaaaaa-0000-0000-0000-0000000000c1'::uuid, 500::bigint),
            (2, 'aaaaaaaa-0000-0000-0000-0000000000c2'::uuid, -500::bigint)) as x(line, account, amount)
  returning 1$q$)$$, 'a balanced transaction is posted');
select throws_ok($$select pg_temp.as_owner_of_a($q$
  with t as (insert into journal_transactions (organization_id, id, description, source)
             values ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000d2', 'forged', 'test:2')
             returning id)
  insert into journal_entries (organization_id, transaction_id, line_no, account_id, amount_minor, currency)
  select 'aaaaaaaa-0000-0000-0000-000000000000', t.id, x.line, x.account, x.amount, 'USD' from t,
    (values (1, 'aaaaaaaa-0000-0000-0000-0000000000c1'::uuid, 500::bigint),
            (2, 'aaaaaaaa-0000-0000-0000-0000000000c2'::uuid, -499::bigint)) as x(line, account, amount)
  returning 1$q$)$$, 'TY042', null, 'an unbalanced transaction is refused');
select throws_ok($$select pg_temp.as_owner_of_a($q$
  with t as (insert into journal_transactions (organization_id, id, description, source)
             values ('aaaaaaaa-0000-0000-0000-000000000000', 'aaaaaaaa-0000-0000-0000-0000000000d3', 'cross', 'test:3')
             returning id)
  insert into journal_entries (organization_id, transaction_id, line_no, account_id, amount_minor, currency)
  select 'aaaaaaaa-0000-0000-0000-000000000000', t.id, x.line, x.account, x.amount, 'USD' from t,
    (values (1, 'aaaaaaaa-0000-0000-0000-0000000000c1'::uuid, 1::bigint),
            (2, 'bbbbbbbb-0000-0000-0000-0000000000c1'::uuid, -1::bigint)) as x(line, account, amount)
  returning 1$q$)$$, '23503', null, 'an entry cannot post to another organization''s account');
select throws_ok($$update journal_entries set amount_minor = 1$$, 'TY043', null, 'entries never change, even for the owner');
select throws_ok($$delete from journal_transactions$$, 'TY043', null, 'nor disappear');

select * from finish();
rollback;
