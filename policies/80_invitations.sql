-- Invitations. Apply as the owner, after migrations. Managing them needs members:manage, and an
-- invitation grants only a role its inviter could grant (every permission of it held) within the
-- inviter's workspace restriction; accepting goes through app.accept_invitation(), which checks
-- both again against the inviter's standing then.
begin;
set local role tenantry_owner;

revoke all on public.invitations from tenantry_app;
grant select, insert on public.invitations to tenantry_app;
grant update (revoked_at) on public.invitations to tenantry_app;
grant select, update (accepted_at, accepted_by) on public.invitations to tenantry_definer;

drop policy if exists invitations_select on public.invitations;
create policy invitations_select on public.invitations for select to tenantry_app
  using (organization_id = app.current_org_id() and app.has_permission('members:manage'));

drop policy if exists invitations_insert on public.invitations;
create policy invitations_insert on public.invitations for insert to tenantry_app
  with check (organization_id = app.current_org_id()
              and app.has_permission('members:manage')
              and app.can_grant_role(role, custom_role_id)
              and app.within_restriction(workspace_ids));

drop policy if exists invitations_update on public.invitations;
create policy invitations_update on public.invitations for update to tenantry_app
  using (organization_id = app.current_org_id() and app.has_permission('members:manage'))
  with check (organization_id = app.current_org_id() and app.has_permission('members:manage'));

commit;
