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
              and app.within_restriction(workspace_ids));

-- The role's permissions are other rows: the grant is checked by this trigger (a policy reads
-- only the sealed context).
create or replace function app.invitations_check_grant() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if app.row_checks_apply(tg_relid) and not app.can_grant_role(new.role, new.custom_role_id) then
    raise exception 'row-level security check: this role is beyond the principal''s own'
      using errcode = '42501';
  end if;
  return new;
end
$$;
drop trigger if exists invitations_check_grant on public.invitations;
create trigger invitations_check_grant before insert on public.invitations
  for each row execute function app.invitations_check_grant();

drop policy if exists invitations_update on public.invitations;
create policy invitations_update on public.invitations for update to tenantry_app
  using (organization_id = app.current_org_id() and app.has_permission('members:manage'))
  with check (organization_id = app.current_org_id() and app.has_permission('members:manage'));

commit;
