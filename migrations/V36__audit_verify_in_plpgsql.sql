-- app.audit_verify() (V4) as PL/pgSQL, same query: Citus cannot plan a distributed query inside a
-- SQL function that has parameters ("could not create distributed plan"), while PL/pgSQL hands it
-- the query with the organization bound, which Citus routes to that organization's shard.
create or replace function app.audit_verify(p_org uuid)
returns table (seq bigint, reason text)
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
begin
  return query
  select v.seq, v.reason
  from (
    select e.seq,
           case
             when e.seq <> coalesce(lag(e.seq) over w, 0) + 1 then 'sequence_gap'
             when e.prev_hash <> coalesce(lag(e.hash) over w,
                    '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea)
               then 'previous_hash_mismatch'
             when e.hash <> app.audit_hash(e.prev_hash, e) then 'content_hash_mismatch'
           end as reason
    from public.audit_events e
    where e.organization_id = p_org
    window w as (order by e.seq)
  ) v
  where v.reason is not null
  order by v.seq
  limit 1;
end
$$;
