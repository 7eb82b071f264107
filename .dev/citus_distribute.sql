-- The Citus drill's distribution, run as the cluster's admin on the coordinator after the first
-- `tenantry migrate` (then migrate again: Citus re-creates the views it rebuilt without their
-- grants). Tenant tables (those with organization_id) are distributed by it and co-located;
-- every other table is a reference table, but for app.context_keys, which stays a plain table on
-- each node (app.share_context_key() copies it to the workers), and refinery's history.
\set ON_ERROR_STOP 1
-- The app's transactions mix reference-table writes with multi-shard reads. (Set on this
-- database, whatever its name: the test harness distributes a template of its own.)
select format('alter database %I set citus.enable_unsafe_triggers = on', current_database()) \gexec
select format('alter database %I set citus.multi_shard_modify_mode = ''sequential''', current_database()) \gexec
set citus.enable_unsafe_triggers = on;
set citus.multi_shard_modify_mode = 'sequential';
create temp table plan as
with recursive t as (
  select c.oid, exists (select 1 from pg_attribute a where a.attrelid = c.oid and a.attname = 'organization_id' and not a.attisdropped) as tenant
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
   where c.relkind in ('r','p') and not c.relispartition and n.nspname in ('public','app')
     and c.relname not in ('refinery_schema_history', 'context_keys')
), dep(oid, depth) as (
  select oid, 0 from t
  union all
  select f.confrelid, d.depth + 1 from dep d join pg_constraint f on f.conrelid = d.oid and f.contype = 'f'
   where f.confrelid in (select oid from t) and f.confrelid <> d.oid and d.depth < 20
)
select d.oid::regclass::text as rel, t.tenant, max(depth) as depth from dep d join t using (oid) group by d.oid, t.tenant;
-- Foreign keys between tenant tables: a table can be distributed only once every table it is
-- joined to by a foreign key can be too, so these are dropped and re-made around the distribution.
create temp table tenant_fks as
select f.conrelid::regclass::text as rel, f.conname, pg_get_constraintdef(f.oid) as def
  from pg_constraint f
 where f.contype = 'f' and f.conrelid::regclass::text in (select rel from plan where tenant)
   and f.confrelid::regclass::text in (select rel from plan where tenant);
begin;
select format('alter table %s drop constraint %I', rel, conname) from tenant_fks \gexec
select format('select create_reference_table(%L)', rel) from plan where not tenant order by depth desc, rel \gexec
select format('select create_distributed_table(%L, ''organization_id'', colocate_with => %L)', rel,
              case when rn = 1 then 'default' else first_value(rel) over (order by rn) end)
  from (select rel, row_number() over (order by depth desc, rel) rn from plan where tenant) p order by rn \gexec
select format('alter table %s add constraint %I %s', rel, conname, def) from tenant_fks \gexec
-- An organization's events: deleted by a statement trigger on PostgreSQL (V30), which on Citus
-- runs on each node's copy of organizations and may not reach other nodes' shards. Here the
-- cascading key does it (a reference table's cascade reaches every shard).
alter table public.events add constraint events_organization_id_fkey
  foreign key (organization_id) references public.organizations (id) on delete cascade;
commit;
-- Functions whose signature names a table's row type were created on the coordinator only, while
-- those tables were local: now that they are distributed, Citus can create them on the workers.
select format('select create_distributed_function(%L)', p.oid::regprocedure)
  from pg_proc p
 where p.pronamespace = 'app'::regnamespace and p.prokind = 'f'
   and not exists (select 1 from pg_dist_object d where d.classid = 'pg_proc'::regclass and d.objid = p.oid) \gexec
call app.share_context_key();
