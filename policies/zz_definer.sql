-- The definer's view across tenants. Apply as the owner, LAST (after every file that grants the
-- definer a table).
--
-- tenantry_definer owns the few SECURITY DEFINER functions that must see across tenants. It does
-- not bypass row-level security (a managed PostgreSQL cannot even create such a role); instead
-- every table it is granted carries one policy, `definer_across_tenants`, written `to
-- tenantry_definer` and no other role. The grants in the files above are the specification:
-- this file gives exactly the tables the definer holds a privilege on (with row-level security
-- enabled) that policy, and removes it from any table it no longer holds one on. Which commands
-- it may run, and on which columns, stay decided by those grants; which rows a function touches
-- is decided by the function from the verified context. `tenantry check` verifies that no other
-- policy names the definer, that exactly these tables carry this one, and that the app role is
-- not a member of the definer.
begin;
set local role tenantry_owner;

do $definer$
declare
  v_table regclass;
begin
  for v_table in
    select c.oid::regclass
      from pg_catalog.pg_class c
      join pg_catalog.pg_namespace n on n.oid = c.relnamespace
     where n.nspname = 'public' and c.relkind in ('r', 'p') and c.relrowsecurity
       and (has_table_privilege('tenantry_definer', c.oid, 'SELECT, INSERT, UPDATE, DELETE')
            or has_any_column_privilege('tenantry_definer', c.oid, 'SELECT, INSERT, UPDATE'))
       and not exists (select 1 from pg_catalog.pg_policy p
                        where p.polrelid = c.oid and p.polname = 'definer_across_tenants')
  loop
    execute format('create policy definer_across_tenants on %s to tenantry_definer '
                   'using (true) with check (true)', v_table);
  end loop;

  for v_table in
    select p.polrelid::regclass
      from pg_catalog.pg_policy p
     where p.polname = 'definer_across_tenants'
       and not (has_table_privilege('tenantry_definer', p.polrelid, 'SELECT, INSERT, UPDATE, DELETE')
                or has_any_column_privilege('tenantry_definer', p.polrelid, 'SELECT, INSERT, UPDATE'))
  loop
    execute format('drop policy definer_across_tenants on %s', v_table);
  end loop;
end
$definer$;

commit;
