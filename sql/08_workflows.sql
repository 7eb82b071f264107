-- Workflows and the run queue. Publishing needs workflows:publish in the organization in
-- context. Workers claim runs of the region they serve (the context's region, like every
-- policy), fairly across organizations; a claim token then admits the worker to that one run's
-- organization only. Apply after 07_platform_admin.sql.
set role tenantry_owner;
set check_function_bodies = off;

drop function if exists app.claim_next_run(text, text, integer, integer);
-- Issue 16 added `traceparent` to what a claim returns (a new result column: drop, recreate).
drop function if exists app.claim_next_run(text, integer, integer, integer);

-- Publish a workflow's validated draft as its next version (workflows:publish). The row lock
-- on the workflow serializes concurrent publishes: versions are consecutive, never duplicated.
-- Returns the version, or NULL when there is no such (unarchived, visible) workflow.
create or replace function app.publish_workflow(p_workflow uuid, p_definition text, p_spec jsonb)
returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_org uuid := app.current_org_id();
  v_version integer;
  v_workspace uuid;
begin
  if v_org is null or not app.has_permission('workflows:publish') then
    raise exception 'new row violates row-level security policy for table "workflow_versions"' using errcode = '42501';
  end if;
  -- The workspace first, then the update: Citus takes no stable function of a column in an
  -- UPDATE's condition ("STABLE functions used in UPDATE queries cannot be called with column
  -- references"). A workflow never moves to another workspace.
  select w.workspace_id into v_workspace from public.workflows w
   where w.organization_id = v_org and w.id = p_workflow and w.archived_at is null;
  if v_workspace is null or not app.workspace_allowed(v_workspace) then
    return null;
  end if;
  update public.workflows w set latest_version = w.latest_version + 1
  where w.organization_id = v_org and w.id = p_workflow and w.archived_at is null and w.workspace_id = v_workspace
  returning w.latest_version into v_version;
  if v_version is null then
    return null;
  end if;
  insert into public.workflow_versions (organization_id, workflow_id, workspace_id, version, definition, spec,
                                       published_by)
  values (v_org, p_workflow, v_workspace, v_version, p_definition, p_spec, app.current_user_id());
  return v_version;
end
$$;

-- The run a worker holds the claim on (NULL for everyone else), as app.enter_context() found it
-- running under that claim when the transaction began (app.current_claim('run', 'id')). The run
-- policies compare with it; it reads the sealed context, not the runs table, so a shard can
-- decide them.
create or replace function app.current_run_id() returns uuid
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return app.verified_claim_part('run', 2);
end
$$;

-- The two questions policies ask about claims, as functions: Citus 13.2 cannot re-create on a
-- distributed table a policy holding `<function call> IS [NOT] NULL` ("unrecognized node type"),
-- and a policy has to be re-creatable there. Plain SQL, so each inlines into the policy.
-- Not a worker acting for a run (whatever the caller set: a stricter reading).
create or replace function app.without_run_claim() returns boolean
language sql stable
as $$ select app.current_run_claim() is null $$;
-- A worker's verified run, or a dispatcher's verified delivery.
create or replace function app.holds_verified_claim() returns boolean
language sql stable
as $$ select app.current_run_id() is not null or app.current_claim('delivery', 'id') is not null $$;
revoke all on function app.without_run_claim(), app.holds_verified_claim() from public;
grant execute on function app.without_run_claim(), app.holds_verified_claim() to tenantry_app, tenantry_definer;


-- The queue. Claims a run of the region in context (app.current_region(), set by the worker
-- like every transaction): first a running run whose lease ran out (its worker died or
-- stalled), else a queued one, chosen fairly: among organizations below `p_max_running_per_org`
-- running runs, the one with the fewest running, its oldest queued run first (ties: the oldest).
-- So one organization queuing many long runs cannot stall everyone else's. FOR UPDATE SKIP
-- LOCKED makes claims exclusive without blocking. A run that has used up its attempts fails
-- instead. Returns ids and a fresh claim token only, never content: the worker reads the run
-- under the organization's RLS context, with the token.
create or replace function app.claim_next_run(
  p_worker text, p_lease_seconds integer, p_max_attempts integer, p_max_running_per_org integer)
returns table (organization_id uuid, run_id uuid, claim_token uuid, attempt integer, traceparent text)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
  v_region text := app.current_region();
  v_cap integer := least(greatest(coalesce(p_max_running_per_org, 1), 1), 10000);
  v_lease integer := least(greatest(coalesce(p_lease_seconds, 30), 1), 3600);
  v_org uuid;
  v_run uuid;
  v_attempts integer;
  v_candidate record;
begin
  if v_region is null then
    return;
  end if;
  loop
    v_run := null;
    select r.organization_id, r.id, r.attempts into v_org, v_run, v_attempts
    from public.workflow_runs r
    where r.status = 'running' and r.lease_expires_at < now()
      and exists (select 1 from public.organizations o
                  where o.id = r.organization_id and o.region = v_region and o.suspended_at is null)
    order by r.lease_expires_at
    limit 1
    for update of r skip locked;
    if v_run is null then
      for v_candidate in
        with heads as (
          select distinct on (q.organization_id) q.organization_id, q.id, q.created_at
          from public.workflow_runs q
          join public.organizations o on o.id = q.organization_id and o.region = v_region and o.suspended_at is null
          where q.status = 'queued'
          order by q.organization_id, q.created_at
        )
        select h.organization_id, h.id,
               (select count(*) from public.workflow_runs x
                where x.organization_id = h.organization_id and x.status = 'running') as running
        from heads h
        order by 3, h.created_at
        limit 20
      loop
        continue when v_candidate.running >= v_cap;
        select r.organization_id, r.id, r.attempts into v_org, v_run, v_attempts
        from public.workflow_runs r
        where r.organization_id = v_candidate.organization_id and r.status = 'queued'
        order by r.created_at
        limit 1
        for update of r skip locked;
        exit when v_run is not null;
      end loop;
    end if;
    if v_run is null then
      return;
    end if;
    if v_attempts >= p_max_attempts then
      update public.workflow_runs r set status = 'failed', error_code = 'lease_expired'
      where r.organization_id = v_org and r.id = v_run;
      continue;
    end if;
    return query
      update public.workflow_runs r
      set status = 'running', claim_token = gen_random_uuid(), claimed_by = left(p_worker, 200),
          lease_expires_at = now() + make_interval(secs => v_lease),
          attempts = r.attempts + 1, started_at = coalesce(r.started_at, now())
      where r.organization_id = v_org and r.id = v_run
      returning r.organization_id, r.id, r.claim_token, r.attempts, r.traceparent;
    return;
  end loop;
end
$$;

-- A worker renews its claim while a run executes. False when the claim is gone (the run was
-- cancelled, or re-claimed after the lease ran out): the worker then abandons the run.
create or replace function app.renew_run_claim(p_claim uuid, p_lease_seconds integer) returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  update public.workflow_runs r
  set lease_expires_at = now() + make_interval(secs => least(greatest(coalesce(p_lease_seconds, 30), 1), 3600))
  where r.claim_token = p_claim and r.status = 'running';
  return found;
end
$$;

-- A worker shutting down gives a run it could not finish back to the queue: queued again, its
-- attempt returned (a release is not a failure), for any worker to claim. Only the holder of
-- the claim token can (the token is the worker's proof, as for renewal); false when the claim
-- is gone (cancelled, re-claimed).
create or replace function app.release_run_claim(p_claim uuid) returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if p_claim is null then
    return false;
  end if;
  update public.workflow_runs r
  set status = 'queued', claim_token = null, claimed_by = null, lease_expires_at = null,
      attempts = greatest(r.attempts - 1, 0)
  where r.claim_token = p_claim and r.status = 'running';
  if found then
    perform pg_notify('tenantry_runs', ''); -- idle workers elsewhere claim it at once
    return true;
  end if;
  return false;
end
$$;

-- The worker's metrics: this region's queue (queued, running, leases run out, the oldest queued
-- run's age) and how many runs ever failed for using up their attempts. Counts only, across
-- organizations, never an id or content; what it counts is the context's region.
create or replace function app.run_queue_stats()
returns table (queued bigint, running bigint, leases_expired bigint, oldest_queued_seconds double precision,
               attempts_exhausted bigint)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  with region_runs as (
    select r.status, r.created_at, r.lease_expires_at
    from public.workflow_runs r
    join public.organizations o on o.id = r.organization_id and o.region = app.current_region()
    where r.status in ('queued', 'running')
  )
  select count(*) filter (where status = 'queued'),
         count(*) filter (where status = 'running'),
         count(*) filter (where status = 'running' and lease_expires_at < now()),
         coalesce(extract(epoch from now() - min(created_at) filter (where status = 'queued')), 0)::float8,
         (select count(*) from public.workflow_runs x
          join public.organizations o on o.id = x.organization_id and o.region = app.current_region()
          where x.error_code = 'lease_expired')
  from region_runs
$$;

-- Publishing as the server does it: app.publish_workflow(), the publication recorded in the
-- organization's audit log with the request's metadata, and the new version's row, all by the
-- definer that wrote them. On Citus, once the definer has written an organization's rows in a
-- transaction, the app role may touch none of that organization's tables in it (their shard
-- placements are on the definer's connections). The actor is the caller the server set up, a user
-- or an API key. publish_workflow stays for servers of the previous release.
drop function if exists app.publish_workflow_version(uuid, text, jsonb);
create or replace function app.publish_workflow_version(
  p_workflow uuid, p_definition text, p_spec jsonb, p_ip inet, p_user_agent text, p_request_id text)
returns table (workflow_id uuid, version integer, definition text, spec jsonb, published_by uuid,
               published_at timestamptz, row_version bigint)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v_version integer := app.publish_workflow(p_workflow, p_definition, p_spec);
  v_key uuid := app.current_api_key_id();
begin
  if v_version is null then
    return;
  end if;
  perform app.audit_append(app.current_org_id(), case when v_key is null then 'user' else 'api_key' end,
                           coalesce(v_key, app.current_user_id()), 'workflow.publish', 'workflow',
                           p_workflow::text, 'allowed', jsonb_build_object('version', v_version),
                           p_ip, p_user_agent, p_request_id);
  return query
  select v.workflow_id, v.version, v.definition, v.spec, v.published_by, v.published_at, v.row_version
    from public.workflow_versions v
   where v.organization_id = app.current_org_id() and v.workflow_id = p_workflow and v.version = v_version;
end
$$;

call app.install_definer(array[
    'app.run_queue_stats()',
    'app.publish_workflow(uuid, text, jsonb)',
    'app.publish_workflow_version(uuid, text, jsonb, inet, text, text)',
    'app.release_run_claim(uuid)',
    'app.current_run_id()',
    'app.claim_next_run(text, integer, integer, integer)',
    'app.renew_run_claim(uuid, integer)'
], '{tenantry_app}');
