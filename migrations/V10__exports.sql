-- Organization exports: one NDJSON file per table, produced under the organization's own RLS
-- context and kept for download (permission org:export, owners only).

insert into public.permissions (name, description) values ('org:export', 'Export all of the organization''s data');
insert into public.builtin_role_permissions (role, permission) values ('owner', 'org:export');

create table public.exports (
  organization_id uuid not null references public.organizations (id) on delete cascade,
  id              uuid not null,
  created_by      uuid references public.users (id) on delete set null,
  created_at      timestamptz not null default now(),
  primary key (organization_id, id)
);
alter table public.exports enable row level security;
alter table public.exports force row level security;

create table public.export_files (
  organization_id uuid not null,
  export_id       uuid not null,
  table_name      text not null check (table_name ~ '^[a-z_]+$'),
  row_count       bigint not null,
  content         text not null,
  primary key (organization_id, export_id, table_name),
  foreign key (organization_id, export_id) references public.exports (organization_id, id) on delete cascade
);
alter table public.export_files enable row level security;
alter table public.export_files force row level security;
