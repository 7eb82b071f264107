-- Workflow runs and their queue. A run is the queue entry: `status = 'queued'` rows are claimed
-- by workers through app.claim_next_run() (FOR UPDATE SKIP LOCKED), which hands the worker a
-- random claim token. The token is the worker's whole authority: with it set as
-- app.current_run_claim, app.current_org_id() admits the run's organization, and only while that
-- run is still running under that claim (a cancel or a re-claim revokes it at once).
--
-- Content and data mode: `input`, `output` and `error_message` are content and carry
-- app.enforce_data_mode(), so they are stored only for organizations in `full` mode. The input a
-- worker needs travels in workflow_run_inputs, readable only by the worker holding the claim and
-- deleted when the run finishes, so a metadata_only organization keeps no content at rest.

create table public.workflow_runs (
  organization_id  uuid not null,
  workspace_id     uuid not null,
  id               uuid not null,
  workflow_id      uuid not null,
  version          integer not null,
  status           text not null default 'queued'
                   check (status in ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
  input            jsonb,
  output           jsonb,
  input_bytes      integer not null check (input_bytes >= 0),
  output_bytes     integer check (output_bytes >= 0),
  error_code       text check (char_length(error_code) <= 100),
  failed_step      text check (char_length(failed_step) <= 64),
  error_message    text check (char_length(error_message) <= 2000),
  attempts         integer not null default 0,
  claim_token      uuid,
  claimed_by       text check (char_length(claimed_by) <= 200),
  lease_expires_at timestamptz,
  created_by       uuid references public.users (id) on delete set null,
  created_by_api_key uuid,
  created_at       timestamptz not null default now(),
  started_at       timestamptz,
  finished_at      timestamptz,
  primary key (organization_id, id),
  foreign key (organization_id, workflow_id, version)
    references public.workflow_versions (organization_id, workflow_id, version) on delete cascade,
  foreign key (organization_id, workspace_id) references public.workspaces (organization_id, id) on delete cascade,
  constraint workflow_runs_claim_consistent
    check ((status = 'running') = (claim_token is not null and lease_expires_at is not null)),
  constraint workflow_runs_finished_consistent
    check ((status in ('succeeded', 'failed', 'cancelled')) = (finished_at is not null))
);
alter table public.workflow_runs enable row level security;
alter table public.workflow_runs force row level security;

-- The queue's two scans: oldest queued first, and running runs whose lease ran out.
create index workflow_runs_queued on public.workflow_runs (created_at) where status = 'queued';
create index workflow_runs_leases on public.workflow_runs (lease_expires_at) where status = 'running';
-- Not unique: uniqueness across tenants is what `tenantry check` forbids, and a random token needs none.
create index workflow_runs_claim_token on public.workflow_runs (claim_token) where claim_token is not null;
create index workflow_runs_by_workflow on public.workflow_runs (organization_id, workflow_id, id);
create index workflow_runs_by_workspace on public.workflow_runs (organization_id, workspace_id, id);

create trigger workflow_runs_data_mode before insert or update on public.workflow_runs
  for each row execute function app.enforce_data_mode('input', 'output', 'error_message');

-- The input on its way to the worker: one row per queued or running run, deleted when it ends.
create table public.workflow_run_inputs (
  organization_id uuid not null,
  run_id          uuid not null,
  input           jsonb not null,
  primary key (organization_id, run_id),
  foreign key (organization_id, run_id) references public.workflow_runs (organization_id, id) on delete cascade
);
alter table public.workflow_run_inputs enable row level security;
alter table public.workflow_run_inputs force row level security;

-- The state machine, for every writer (the API, the worker and the claim function):
--   queued  -> running (claim) | cancelled (API)
--   running -> running (renewal, or re-claim after a lost lease) | succeeded | failed (worker, or the claim
--              function when attempts are exhausted) | cancelled (API)
--   succeeded, failed, cancelled: final.
-- Who may make which move is fixed too: people cancel, the claim holder finishes, the claim
-- function claims. What a run is (its workflow, version, input, creator) never changes.
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
create trigger workflow_runs_transition before update on public.workflow_runs
  for each row execute function app.workflow_runs_transition();

-- A finished run's transient input is removed in the same transaction that finishes it.
create or replace function app.workflow_runs_discard_input() returns trigger
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  delete from public.workflow_run_inputs i where i.organization_id = new.organization_id and i.run_id = new.id;
  return null;
end
$$;
alter function app.workflow_runs_discard_input() owner to tenantry_definer;
revoke all on function app.workflow_runs_discard_input() from public;
create trigger workflow_runs_discard_input after update of status on public.workflow_runs
  for each row when (new.status in ('succeeded', 'failed', 'cancelled'))
  execute function app.workflow_runs_discard_input();

-- Workers wait on this channel instead of polling hard. The payload is empty: a notification
-- carries no tenant data.
create or replace function app.workflow_runs_notify() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform pg_notify('tenantry_runs', '');
  return null;
end
$$;
create trigger workflow_runs_notify after insert on public.workflow_runs
  for each statement execute function app.workflow_runs_notify();
