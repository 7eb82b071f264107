-- Users: global rows, visible to themselves, and as profiles to the members of the organization
-- in context.
-- Created only through app.provision_user() (sql/03_definer_functions.sql). Apply as the owner.
begin;
set local role tenantry_owner;

revoke all on public.users from tenantry_app;
grant select on public.users to tenantry_app;
-- No update: a profile changes only through app.refresh_profile(), which refreshes its copies.
-- DELETE is granted for Citus alone, and admits no row (users_delete below): Citus locks users'
-- shards when the app writes a table referencing it (revoking a session), and lets a role take
-- that lock only if it may modify users. Erasing a user is app.erase_current_user().
grant delete on public.users to tenantry_app;
grant select, insert, update, delete on public.users to tenantry_definer;

-- A user sees their own row here; other members' profiles as their organization's copies below.
drop policy if exists users_select on public.users;
create policy users_select on public.users for select to tenantry_app
  using (id = app.current_user_id());

-- The profiles of the members of the organization in context (verified: app.current_org_id()),
-- one copy per membership (V37): a policy on users cannot say "a member of this organization"
-- without reading memberships, which a Citus shard may not do inside a policy. Written only by
-- the definer (with the membership; when the user's own profile changes).
revoke all on public.member_profiles from tenantry_app;
grant select on public.member_profiles to tenantry_app;
grant select, insert, update on public.member_profiles to tenantry_definer;
drop policy if exists member_profiles_select on public.member_profiles;
create policy member_profiles_select on public.member_profiles for select to tenantry_app
  using (organization_id = app.current_org_id());

-- The view servers of the previous release read the profiles from, now over the copies (drop it
-- with the release after). security_barrier: no condition of the caller's runs on a row before
-- the view's own have admitted it.
create or replace view app.member_profiles with (security_barrier = true) as
  select p.organization_id, p.user_id, p.email, p.display_name, p.issuer, p.subject, p.created_at, p.row_version
    from public.member_profiles p
   where p.organization_id = app.current_org_id();
alter view app.member_profiles owner to tenantry_definer;
revoke all on app.member_profiles from public;
grant select on app.member_profiles to tenantry_app;

drop policy if exists users_update on public.users;
drop policy if exists users_delete on public.users;
create policy users_delete on public.users for delete to tenantry_app using (false);

commit;
