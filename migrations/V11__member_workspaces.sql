-- Optional restriction of a member to specific workspaces: a member with rows here sees (and
-- works in) only those workspaces; a member without any is unrestricted.
create table public.member_workspaces (
  organization_id uuid not null,
  user_id         uuid not null,
  workspace_id    uuid not null,
  primary key (organization_id, user_id, workspace_id),
  foreign key (organization_id, user_id) references public.memberships (organization_id, user_id) on delete cascade,
  foreign key (organization_id, workspace_id) references public.workspaces (organization_id, id) on delete cascade
);
alter table public.member_workspaces enable row level security;
alter table public.member_workspaces force row level security;
