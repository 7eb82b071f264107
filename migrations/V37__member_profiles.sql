-- Issue 18: the profiles an organization shows of its members become a tenant table, one copy per
-- membership (app.copy_member_profile() makes it with the membership, app.refresh_profile()
-- refreshes it; sql/05_identity.sql). It replaces the view app.member_profiles, which joined users
-- as its owner, the definer: Citus reads a view's tables on the workers as the caller, so there
-- the app role saw no other member's profile. The view stays, over this table, for servers of the
-- previous release (policies/10_users.sql). Safe for them: they only read it.
create table public.member_profiles (
  organization_id uuid not null,
  user_id         uuid not null references public.users (id) on delete cascade,
  email           text,
  display_name    text,
  issuer          text not null,
  subject         text not null,
  created_at      timestamptz not null, -- the user's
  row_version     bigint not null,      -- the user's
  primary key (organization_id, user_id),
  foreign key (organization_id, user_id) references public.memberships (organization_id, user_id) on delete cascade
);
create index member_profiles_user_idx on public.member_profiles (user_id);
alter table public.member_profiles enable row level security;
alter table public.member_profiles force row level security;

insert into public.member_profiles (organization_id, user_id, email, display_name, issuer, subject, created_at, row_version)
select m.organization_id, u.id, u.email, u.display_name, u.issuer, u.subject, u.created_at, u.row_version
  from public.memberships m join public.users u on u.id = m.user_id;

create trigger memberships_copy_profile after insert on public.memberships
  for each row execute function app.copy_member_profile();
