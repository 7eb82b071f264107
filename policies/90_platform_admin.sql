-- Platform admins. Apply as the owner, after migrations. The app role has no access at all; the
-- definer functions read it to check the caller. Grant and revoke with `tenantry admin`.
begin;
set local role tenantry_owner;
revoke all on public.platform_admins from tenantry_app;
grant select on public.platform_admins to tenantry_definer;
grant update (suspended_at, region) on public.organizations to tenantry_definer;
commit;
