-- Users: global rows, visible to themselves, and as profiles to the members of the organization
-- in context.
-- Created only through app.provision_user() (sql/03_definer_functions.sql). Apply as the owner.
begin;
set local role tenantry_owner;

revoke all on public.users from tenantry_app;
grant select on public.users to tenantry_app;
grant update (display_name) on public.users to tenantry_app;
grant select, insert, update, delete on public.users to tenantry_definer;

-- A user sees their own row here; other members' profiles only through member_profiles below.
drop policy if exists users_select on public.users;
create policy users_select on public.users for select to tenantry_app
  using (id = app.current_user_id());

-- The profiles of the members of the organization in context (verified: app.current_org_id()).
-- A policy on users cannot say "a member of this organization" without reading memberships, which
-- a Citus shard may not do inside a policy; this view reads both as its owner, the definer, and
-- shows only that organization's members. security_barrier: no condition of the caller's runs on
-- a row before the view's own have admitted it (a cast error cannot reveal another tenant's
-- e-mail). Join it on (organization_id, user_id), which Citus can push down to one shard group.
create or replace view app.member_profiles with (security_barrier = true) as
  select m.organization_id, u.id as user_id, u.email, u.display_name, u.issuer, u.subject, u.created_at,
         u.row_version
    from public.memberships m
    join public.users u on u.id = m.user_id
   where m.organization_id = app.current_org_id();
alter view app.member_profiles owner to tenantry_definer;
revoke all on app.member_profiles from public;
grant select on app.member_profiles to tenantry_app;

drop policy if exists users_update on public.users;
create policy users_update on public.users for update to tenantry_app
  using (id = app.current_user_id())
  with check (id = app.current_user_id());

commit;
