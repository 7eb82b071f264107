-- Row versions for optimistic concurrency: the API's strong ETag is a row's row_version, and
-- If-Match compares it inside the statement that writes the row, so two editors can no longer
-- overwrite each other.
--
-- The counter starts at a random origin (below 2^52) and adds one per change. Random so that a
-- resource deleted and created again under the same URL (a provider key, a flag setting, a
-- subscription) never reuses an old ETag; per row (not one shared sequence) so an ETag reveals
-- nothing about how often other organizations write. Rows that existed before start at 1.
-- Expand-only: the previous release ignores the column and the trigger keeps it right.

create or replace function app.bump_row_version() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if tg_op = 'INSERT' then
    new.row_version := 1 + floor(random() * 4503599627370495)::bigint;
  -- Columns named as trigger arguments (a run's lease, say) are bookkeeping: changing only them
  -- leaves the representation, and so the version, as it was.
  elsif tg_nargs > 0 and (to_jsonb(new) - tg_argv) = (to_jsonb(old) - tg_argv) then
    new.row_version := old.row_version;
  else
    new.row_version := old.row_version + 1;
  end if;
  return new;
end
$$;
revoke all on function app.bump_row_version() from public;

alter table public.organizations add column row_version bigint not null default 1;
alter table public.users add column row_version bigint not null default 1;
alter table public.memberships add column row_version bigint not null default 1;
alter table public.workspaces add column row_version bigint not null default 1;
alter table public.roles add column row_version bigint not null default 1;
alter table public.api_keys add column row_version bigint not null default 1;
alter table public.invitations add column row_version bigint not null default 1;
alter table public.workflows add column row_version bigint not null default 1;
alter table public.workflow_versions add column row_version bigint not null default 1;
alter table public.workflow_runs add column row_version bigint not null default 1;
alter table public.provider_keys add column row_version bigint not null default 1;
alter table public.provider_grants add column row_version bigint not null default 1;
alter table public.subscriptions add column row_version bigint not null default 1;
alter table public.organization_flags add column row_version bigint not null default 1;
alter table public.invoices add column row_version bigint not null default 1;
alter table public.exports add column row_version bigint not null default 1;

create trigger zz_row_version before insert or update on public.organizations
  for each row execute function app.bump_row_version();
create trigger zz_row_version before insert or update on public.users
  for each row execute function app.bump_row_version();
create trigger zz_row_version before insert or update on public.memberships
  for each row execute function app.bump_row_version();
create trigger zz_row_version before insert or update on public.workspaces
  for each row execute function app.bump_row_version();
create trigger zz_row_version before insert or update on public.roles
  for each row execute function app.bump_row_version();
create trigger zz_row_version before insert or update on public.api_keys
  for each row execute function app.bump_row_version();
create trigger zz_row_version before insert or update on public.invitations
  for each row execute function app.bump_row_version();
create trigger zz_row_version before insert or update on public.workflows
  for each row execute function app.bump_row_version();
create trigger zz_row_version before insert on public.workflow_versions
  for each row execute function app.bump_row_version();
create trigger zz_row_version before insert or update on public.workflow_runs
  for each row execute function app.bump_row_version('row_version', 'claim_token', 'claimed_by', 'lease_expires_at');
create trigger zz_row_version before insert or update on public.provider_keys
  for each row execute function app.bump_row_version();
create trigger zz_row_version before insert or update on public.provider_grants
  for each row execute function app.bump_row_version();
create trigger zz_row_version before insert or update on public.subscriptions
  for each row execute function app.bump_row_version();
create trigger zz_row_version before insert or update on public.organization_flags
  for each row execute function app.bump_row_version();
create trigger zz_row_version before insert or update on public.invoices
  for each row execute function app.bump_row_version();
create trigger zz_row_version before insert or update on public.exports
  for each row execute function app.bump_row_version();

-- Publishing a draft that was edited since it was created or last published needs If-Match
-- (428 without): the ETag names the draft that was reviewed.
-- (The app's grant to set it is in policies/96_workflows.sql, with the table's other grants.)
alter table public.workflows add column draft_edited_at timestamptz;
