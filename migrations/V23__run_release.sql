-- A worker shutting down releases the runs it cannot finish in its grace period
-- (app.release_run_claim): running -> queued, by the claim function's role only. Expand-only:
-- the previous release never makes this move, so both run side by side during a rollout.
create or replace function app.workflow_runs_transition() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
  v_claiming boolean := current_user = 'tenantry_definer';
  v_worker boolean := not v_claiming and app.current_run_claim() is not null;
begin
  if old.status in ('succeeded', 'failed', 'cancelled') then
    raise exception 'run % is already %', old.id, old.status using errcode = 'TY031';
  end if;
  if (new.organization_id, new.workspace_id, new.id, new.workflow_id, new.version, new.input_bytes,
      new.created_by, new.created_by_api_key, new.created_at)
     is distinct from
     (old.organization_id, old.workspace_id, old.id, old.workflow_id, old.version, old.input_bytes,
      old.created_by, old.created_by_api_key, old.created_at)
     or new.input is distinct from old.input then
    raise exception 'what a run is cannot change' using errcode = 'TY031';
  end if;
  if not (
       (old.status = 'queued' and new.status = 'running' and v_claiming)
    or (old.status = 'running' and new.status = 'running' and v_claiming)
    or (old.status = 'running' and new.status = 'queued' and v_claiming)
    or (old.status = 'running' and new.status in ('succeeded', 'failed') and (v_claiming or v_worker))
    or (old.status in ('queued', 'running') and new.status = 'cancelled' and not v_worker and not v_claiming)
  ) then
    raise exception 'illegal run transition % -> %', old.status, new.status using errcode = 'TY031';
  end if;
  if new.status <> 'succeeded' and new.output is not null then
    raise exception 'only a succeeded run has output' using errcode = 'TY031';
  end if;
  if new.status in ('succeeded', 'failed', 'cancelled') then
    new.finished_at := coalesce(new.finished_at, now());
    new.claim_token := null;
    new.lease_expires_at := null;
  end if;
  return new;
end
$$;
