-- Exports become jobs (issue 14): a row per export with its state and progress, made by a task
-- of the server that received the request, and the NDJSON stored in chunks of at most 2,000
-- rows, so that neither making nor downloading an export holds a table in memory. Exports made
-- before this (their state is `succeeded`, their file one value in export_files.content) stay
-- downloadable. Expand-only: the previous release ignores the new columns.

alter table public.exports
  add column status text not null default 'succeeded'
    check (status in ('queued', 'running', 'succeeded', 'failed')),
  add column error text check (error in ('abandoned', 'forbidden', 'error')),
  add column tables_done integer not null default 0 check (tables_done >= 0),
  add column rows_exported bigint not null default 0 check (rows_exported >= 0),
  add column started_at timestamptz,
  add column finished_at timestamptz,
  add column heartbeat_at timestamptz not null default now();

create table public.export_chunks (
  organization_id uuid not null,
  export_id       uuid not null,
  table_name      text not null check (table_name ~ '^[a-z_]+$'),
  chunk_no        integer not null check (chunk_no >= 0),
  row_count       integer not null check (row_count between 1 and 2000),
  content         text not null,
  primary key (organization_id, export_id, table_name, chunk_no),
  foreign key (organization_id, export_id) references public.exports (organization_id, id) on delete cascade
);
alter table public.export_chunks enable row level security;
alter table public.export_chunks force row level security;
