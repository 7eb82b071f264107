//! Members of an organization and their roles. Managing members needs `members:manage`, and
//! every role given, changed or taken away must be one the caller could grant: it holds every
//! permission of it (so only owners make, change or remove owners). A caller restricted to some
//! workspaces adds only members restricted within its own, and cannot lift a restriction. The
//! database refuses all of this in its policies too, and, at commit, any change that would leave
//! an organization without an owner (409 `last_owner`).

use actix_web::http::header;
use actix_web::{HttpResponse, delete, get, patch, post, put, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::audit::{AuditEntry, record};
use super::authz::{
    authorize, authorize_grant, authorize_in, authorize_workspaces, deny_restricted, restriction,
};
use super::conditional::{Preconditions, etag, tagged};
use super::extract::{ApiJson, RequestMeta};
use super::orgs::OrgPath;
use super::pagination::{COUNT_FETCH, Key, Keyset, Page, PageQuery, total};
use crate::api::ApiError;
use crate::api::problem::Problem;
use crate::auth::Principal;
use crate::db::{DbError, TenantTx, tenant};
use crate::domain::{Membership, OrgId, Permission, Role, UserId};
use crate::{keyset, sorts};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MemberPath {
    /// Organization id.
    pub org_id: Uuid,
    /// The member's user id.
    pub user_id: Uuid,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberResponse {
    pub user_id: UserId,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub role: Role,
    /// The organization's custom role, when `role` is `custom`.
    pub custom_role_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"user_id": "01936f7e-7d2a-7c3b-9e41-2f6a8b9c0d1e", "role": "viewer"}))]
pub struct AddMemberRequest {
    /// An existing user's id (see `GET /api/v1/me`).
    pub user_id: UserId,
    pub role: Role,
    /// Required when `role` is `custom`: one of the organization's roles.
    pub custom_role_id: Option<Uuid>,
    /// Restrict the new member to these workspaces. A caller who is restricted itself may name
    /// only its own workspaces, and its new members are always restricted (by default to the
    /// caller's workspaces).
    pub workspace_ids: Option<Vec<Uuid>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"role": "admin"}))]
pub struct UpdateMemberRequest {
    pub role: Role,
    /// Required when `role` is `custom`: one of the organization's roles.
    pub custom_role_id: Option<Uuid>,
}

/// `custom` comes with a custom role id, a built-in role without one.
pub(super) fn custom_role_of(role: Role, custom_role_id: Option<Uuid>) -> Result<Option<Uuid>, ApiError> {
    match (role, custom_role_id) {
        (Role::Custom, Some(id)) => Ok(Some(id)),
        (Role::Custom, None) => {
            Err(ApiError::invalid_field("custom_role_id", "is required for the custom role"))
        }
        (_, Some(_)) => Err(ApiError::invalid_field("custom_role_id", "is only for the custom role")),
        (_, None) => Ok(None),
    }
}

/// A custom role must be one of this organization's.
pub(super) async fn check_custom_role(
    tx: &mut TenantTx,
    org: OrgId,
    custom_role: Option<Uuid>,
) -> Result<(), ApiError> {
    let Some(role_id) = custom_role else { return Ok(()) };
    tx.query_opt("select id from roles where organization_id = $1 and id = $2", &[org.as_uuid(), &role_id])
        .await?
        .ok_or_else(|| ApiError::invalid_field("custom_role_id", "no such role in this organization"))?;
    Ok(())
}

/// Acting on a member (changing, restricting or removing them) needs their current role to be
/// within the caller's grant, and, for a restricted caller, their workspaces within its own.
async fn authorize_target(
    tx: &mut TenantTx,
    principal: &Principal,
    meta: &RequestMeta,
    membership: &Membership,
    target: &Target,
    action: &'static str,
) -> Result<(), ApiError> {
    authorize_grant(tx, principal, meta, membership, (target.role, target.custom_role_id), action).await?;
    let within: bool =
        tx.query_found("select app.member_within_restriction($1)", &[target.user_id.as_uuid()]).await?.get(0);
    if !within {
        return deny_restricted(tx, principal, meta, action).await;
    }
    Ok(())
}

/// The workspaces named exist in this organization.
pub(super) async fn check_workspaces(tx: &mut TenantTx, org: OrgId, ids: &[Uuid]) -> Result<(), ApiError> {
    let known = tx
        .query(
            "select id from workspaces where organization_id = $1 and id = any($2)",
            &[org.as_uuid(), &ids],
        )
        .await?;
    if known.len() != ids.len() {
        return Err(ApiError::invalid_field(
            "workspace_ids",
            "contains a workspace that does not exist here",
        ));
    }
    Ok(())
}

/// Selected from the workspaces themselves (checked to exist here just before): on Citus an
/// `INSERT … SELECT` from the same organization's shard runs on that shard, while one from
/// `unnest()` alone is sent to the shards as COPY, which row-level security refuses.
const INSERT_MEMBER_WORKSPACES: &str = "insert into member_workspaces (organization_id, user_id, workspace_id) \
     select w.organization_id, $2, w.id from workspaces w where w.organization_id = $1 and w.id = any($3::uuid[])";

fn member_from_row(row: &Row) -> Result<MemberResponse, ApiError> {
    Ok(MemberResponse {
        user_id: UserId(row.get("user_id")),
        email: row.get("email"),
        display_name: row.get("display_name"),
        role: Role::from_db(row.get("role"))
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("unexpected role")))?,
        custom_role_id: row.get("custom_role_id"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    })
}

/// A member's ETag versions both rows it shows: the membership and the user's profile (both
/// counters only grow, so their sum changes whenever either does). The profile is the
/// organization's copy (member_profiles, one per membership, same key), joined on that key.
const SELECT_MEMBER: &str = "select m.user_id, u.email, u.display_name, m.role, m.custom_role_id, m.created_at, m.updated_at, \
     m.row_version + u.row_version as row_version \
     from memberships m join member_profiles u on u.organization_id = m.organization_id and u.user_id = m.user_id \
     where m.organization_id = $1 and m.user_id = $2";

/// Whether the member exists (after a guarded write matched nothing: 412 or 404).
const MEMBER_EXISTS: &str = "select 1 from memberships where organization_id = $1 and user_id = $2";

/// The member list's statements: `$1` organization, `$2` limit, `$3` role, `$4` e-mail, then
/// the cursor's keys. Indexes: `memberships_by_created (organization_id, created_at, user_id)`,
/// `memberships_by_role (organization_id, role, created_at, user_id)` with a role; an e-mail is
/// matched among the organization's members' profiles. organization_id is filtered here
/// because the policy also shows the caller's own memberships in other organizations; isolation
/// is the policy's job.
macro_rules! members {
    () => {
        "select m.user_id, u.email, u.display_name, m.role, m.custom_role_id, m.created_at, m.updated_at \
         from memberships m join member_profiles u on u.organization_id = m.organization_id and u.user_id = m.user_id \
         where m.organization_id = $1 and ($3::text is null or m.role = $3) \
           and ($4::text is null or lower(u.email) = lower($4))"
    };
}
macro_rules! members_plain {
    () => {
        "select m.user_id, u.email, u.display_name, m.role, m.custom_role_id, m.created_at, m.updated_at \
         from memberships m join member_profiles u on u.organization_id = m.organization_id and u.user_id = m.user_id \
         where m.organization_id = $1 and $3::text is null and $4::text is null"
    };
}
static BY_CREATED: Keyset = keyset!(
    1,
    Time,
    asc,
    members,
    members_plain,
    "",
    "(m.created_at, m.user_id)",
    "($5, $6)",
    "m.created_at, m.user_id",
    "m.created_at desc, m.user_id desc",
    "$2"
);
static BY_CREATED_DESC: Keyset = keyset!(
    2,
    Time,
    desc,
    members,
    members_plain,
    "",
    "(m.created_at, m.user_id)",
    "($5, $6)",
    "m.created_at, m.user_id",
    "m.created_at desc, m.user_id desc",
    "$2"
);
const COUNT_MEMBERS: &str = concat!("select count(*) from (", members!(), " limit $2) c");

sorts! {
    /// The order of a member list (by when they joined).
    MemberSort {
        CreatedAt = "created_at" => BY_CREATED,
        CreatedAtDesc = "-created_at" => BY_CREATED_DESC,
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MemberFilter {
    /// Only members with this role.
    #[param(inline)]
    pub role: Option<Role>,
    /// Only the member with this e-mail address (case-insensitive).
    #[param(example = "ada@example.com")]
    pub email: Option<String>,
    /// `created_at` (default, longest-standing first) or `-created_at`.
    #[param(inline)]
    pub sort: Option<MemberSort>,
}

/// List the members of an organization (permission `members:read`), filtered by role and
/// e-mail.
#[utoipa::path(
    tag = "members",
    params(OrgPath, MemberFilter, PageQuery),
    responses(
        (status = 200, description = "Members", body = Page<MemberResponse>),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission members:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid filter, sort, limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/members")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn list_members(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
    filter: web::Query<MemberFilter>,
    query: web::Query<PageQuery>,
) -> Result<web::Json<Page<MemberResponse>>, ApiError> {
    let org = OrgId(path.org_id);
    let page = query
        .parse(filter.sort.unwrap_or_default().keyset())?
        .filtered(filter.role.is_some() || filter.email.is_some());
    if filter.email.as_ref().is_some_and(|e| e.is_empty() || e.len() > 320) {
        return Err(ApiError::invalid_field("email", "must be 1 to 320 characters"));
    }
    let role = filter.role.as_ref().map(Role::as_str);
    let (membership, rows) = page
        .read(
            &state.db,
            principal.actor(),
            Some(org),
            &page.with_keys(vec![org.as_uuid(), page.fetch(), &role, &filter.email]),
        )
        .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::MembersRead, "member.list").await?;
    let count_params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [org.as_uuid(), &COUNT_FETCH, &role, &filter.email];
    let total = total(&state.db, &principal, Some(org), &page, COUNT_MEMBERS, &count_params).await?;
    let items = rows.iter().map(member_from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(web::Json(page.page(items, total, |m| Key::Time(m.created_at, m.user_id.0))))
}

/// Get one member (permission `members:read`).
#[utoipa::path(
    tag = "members",
    params(MemberPath),
    responses(
        (status = 200, description = "The member", body = MemberResponse),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission members:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such member", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/members/{user_id}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn get_member(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<MemberPath>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let (membership, rows) = tenant::read(
        &state.db,
        principal.actor(),
        Some(OrgId(path.org_id)),
        SELECT_MEMBER,
        &[&path.org_id, &path.user_id],
    )
    .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::MembersRead, "member.get").await?;
    let row = rows.first().ok_or(ApiError::NotFound)?;
    Ok(preconditions.respond(row.get("row_version"), &member_from_row(row)?))
}

/// Add an existing user to the organization (permission `members:manage`; `owners:manage` to
/// add an owner).
#[utoipa::path(
    tag = "members",
    params(OrgPath),
    request_body = AddMemberRequest,
    responses(
        (status = 201, description = "Added", body = MemberResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already a member", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field or no such user", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[post("/orgs/{org_id}/members")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn add_member(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
    body: ApiJson<AddMemberRequest>,
) -> Result<HttpResponse, ApiError> {
    let org = OrgId(path.org_id);
    let body = body.into_inner();
    let custom_role = custom_role_of(body.role, body.custom_role_id)?;
    let requested = body.workspace_ids.map(sorted);
    if requested.as_ref().is_some_and(Vec::is_empty) {
        return Err(ApiError::invalid_field("workspace_ids", "name at least one workspace, or leave it out"));
    }
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::MembersManage, "member.add").await?;
    check_custom_role(&mut tx, org, custom_role).await?;
    authorize_grant(&mut tx, &principal, &meta, &membership, (body.role, custom_role), "member.add").await?;
    let workspaces = authorize_workspaces(&mut tx, &principal, &meta, requested, "member.add").await?;
    if let Some(ids) = &workspaces {
        check_workspaces(&mut tx, org, ids).await?;
    }
    tx.execute(
        "insert into memberships (organization_id, user_id, role, custom_role_id, restricted) \
         values ($1, $2, $3, $4, $5)",
        &[org.as_uuid(), body.user_id.as_uuid(), &body.role.as_str(), &custom_role, &workspaces.is_some()],
    )
    .await?;
    if let Some(ids) = &workspaces {
        tx.execute(INSERT_MEMBER_WORKSPACES, &[org.as_uuid(), body.user_id.as_uuid(), ids]).await?;
    }
    let row = tx.query_found(SELECT_MEMBER, &[org.as_uuid(), body.user_id.as_uuid()]).await?;
    let entry = AuditEntry::allowed("member.add", "user", body.user_id, &meta).with_details(
        serde_json::json!({"role": body.role, "custom_role_id": custom_role, "workspace_ids": workspaces}),
    );
    record(&mut tx, &principal, entry).await?;
    tx.commit().await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/orgs/{org}/members/{}", body.user_id)))
        .insert_header((header::ETAG, etag(row.get("row_version"))))
        .json(member_from_row(&row)?))
}

/// Change a member's role.
#[utoipa::path(
    tag = "members",
    params(MemberPath),
    request_body = UpdateMemberRequest,
    responses(
        (status = 200, description = "Updated", body = MemberResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such member", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Would leave the organization without an owner", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[patch("/orgs/{org_id}/members/{user_id}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn update_member(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<MemberPath>,
    body: ApiJson<UpdateMemberRequest>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let org = OrgId(path.org_id);
    let custom_role = custom_role_of(body.role, body.custom_role_id)?;
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::MembersManage, "member.update").await?;
    let target = target(&mut tx, org, path.user_id).await?;
    let current = target.role;
    authorize_target(&mut tx, &principal, &meta, &membership, &target, "member.update").await?;
    check_custom_role(&mut tx, org, custom_role).await?;
    authorize_grant(&mut tx, &principal, &meta, &membership, (body.role, custom_role), "member.update")
        .await?;
    let changed = tx
        .execute(
            "update memberships m set role = $3, custom_role_id = $4 where organization_id = $1 and user_id = $2 \
               and ($5::bigint[] is null \
                    or m.row_version + (select p.row_version from member_profiles p where p.organization_id = m.organization_id and p.user_id = m.user_id) = any($5))",
            &[org.as_uuid(), &path.user_id, &body.role.as_str(), &custom_role, &preconditions.versions()],
        )
        .await?;
    if changed != 1 {
        return Err(preconditions.missed(&mut tx, MEMBER_EXISTS, &[org.as_uuid(), &path.user_id]).await);
    }
    if current == Role::Owner {
        keeps_an_owner(&mut tx, org).await?;
    }
    let row = tx.query_found(SELECT_MEMBER, &[org.as_uuid(), &path.user_id]).await?;
    let entry = AuditEntry::allowed("member.update", "user", path.user_id, &meta)
        .with_details(serde_json::json!({"from": current, "to": body.role, "custom_role_id": custom_role}));
    record(&mut tx, &principal, entry).await?;
    tx.commit().await?;
    Ok(tagged(HttpResponse::Ok(), row.get("row_version"), &member_from_row(&row)?))
}

/// Remove a member from the organization.
#[utoipa::path(
    tag = "members",
    params(MemberPath),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such member", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Would leave the organization without an owner", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[delete("/orgs/{org_id}/members/{user_id}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn remove_member(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<MemberPath>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let org = OrgId(path.org_id);
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::MembersManage, "member.remove").await?;
    let target = target(&mut tx, org, path.user_id).await?;
    let current = target.role;
    authorize_target(&mut tx, &principal, &meta, &membership, &target, "member.remove").await?;
    // Recorded first: a member removing themselves can no longer write in the organization's
    // name afterwards. Either way the entry commits or rolls back with the removal.
    let entry = AuditEntry::allowed("member.remove", "user", path.user_id, &meta)
        .with_details(serde_json::json!({"role": current}));
    record(&mut tx, &principal, entry).await?;
    let removed = tx
        .execute(
            "delete from memberships m where organization_id = $1 and user_id = $2 \
               and ($3::bigint[] is null \
                    or m.row_version + (select p.row_version from member_profiles p where p.organization_id = m.organization_id and p.user_id = m.user_id) = any($3))",
            &[org.as_uuid(), &path.user_id, &preconditions.versions()],
        )
        .await?;
    if removed != 1 {
        return Err(preconditions.missed(&mut tx, MEMBER_EXISTS, &[org.as_uuid(), &path.user_id]).await);
    }
    if current == Role::Owner {
        keeps_an_owner(&mut tx, org).await?;
    }
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The last-owner rule, asked before committing a change to an owner's membership. The database
/// holds it at commit (app.memberships_keep_an_owner(), deferred), but on Citus that check runs
/// on a worker inside the two-phase commit, whose refusal arrives as a failed commit; asked
/// here, the answer is a 409 `last_owner` on both.
async fn keeps_an_owner(tx: &mut TenantTx, org: OrgId) -> Result<(), ApiError> {
    let row = tx
        .query_found(
            "select exists (select 1 from memberships where organization_id = $1 and role = 'owner')",
            &[org.as_uuid()],
        )
        .await?;
    if row.get::<_, bool>(0) { Ok(()) } else { Err(DbError::LastOwner.into()) }
}

/// A member acted upon: their role and restriction as they stand.
struct Target {
    user_id: UserId,
    role: Role,
    custom_role_id: Option<Uuid>,
}

async fn target(tx: &mut TenantTx, org: OrgId, user: Uuid) -> Result<Target, ApiError> {
    let row = tx
        .query_found(
            "select role, custom_role_id from memberships where organization_id = $1 and user_id = $2",
            &[org.as_uuid(), &user],
        )
        .await?;
    Ok(Target {
        user_id: UserId(user),
        role: Role::from_db(row.get("role"))
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("unexpected role")))?,
        custom_role_id: row.get("custom_role_id"),
    })
}

pub(super) fn sorted(mut ids: Vec<Uuid>) -> Vec<Uuid> {
    ids.sort();
    ids.dedup();
    ids
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"workspace_ids": ["01936f7e-9a4c-7d11-8b22-3c4d5e6f7a8b"]}))]
pub struct MemberWorkspacesRequest {
    /// The only workspaces the member may see and work in; empty removes the restriction.
    pub workspace_ids: Vec<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberWorkspacesResponse {
    pub user_id: UserId,
    /// False: the member works in every workspace of the organization.
    pub restricted: bool,
    pub workspace_ids: Vec<Uuid>,
}

const MEMBER_WORKSPACES: &str = "select workspace_id from member_workspaces \
     where organization_id = $1 and user_id = $2 order by workspace_id";

/// A member's workspace restriction (permission `members:read`).
#[utoipa::path(
    tag = "members",
    params(MemberPath),
    responses(
        (status = 200, description = "The restriction", body = MemberWorkspacesResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission members:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such member", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/members/{user_id}/workspaces")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn get_member_workspaces(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<MemberPath>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let org = OrgId(path.org_id);
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::MembersRead, "member.get_workspaces")
        .await?;
    let row = tx
        .query_found(
            "select restricted, row_version from memberships where organization_id = $1 and user_id = $2",
            &[org.as_uuid(), &path.user_id],
        )
        .await?;
    let rows = tx.query(MEMBER_WORKSPACES, &[org.as_uuid(), &path.user_id]).await?;
    tx.commit().await?;
    let workspace_ids: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
    let body = MemberWorkspacesResponse {
        user_id: UserId(path.user_id),
        restricted: row.get("restricted"),
        workspace_ids,
    };
    Ok(preconditions.respond(row.get("row_version"), &body))
}

/// Restrict a member to specific workspaces, or lift the restriction (permission `members:manage`).
#[utoipa::path(
    tag = "members",
    params(MemberPath),
    request_body = MemberWorkspacesRequest,
    responses(
        (status = 200, description = "The new restriction", body = MemberWorkspacesResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission members:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such member", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown workspace", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[put("/orgs/{org_id}/members/{user_id}/workspaces")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn update_member_workspaces(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<MemberPath>,
    body: ApiJson<MemberWorkspacesRequest>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let org = OrgId(path.org_id);
    let ids = sorted(body.workspace_ids.clone());
    let action = "member.update_workspaces";
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::MembersManage, action).await?;
    let target = target(&mut tx, org, path.user_id).await?;
    authorize_target(&mut tx, &principal, &meta, &membership, &target, action).await?;
    if ids.is_empty() {
        // Lifting the restriction: only for a caller who is not restricted itself.
        if restriction(&mut tx).await?.is_some() {
            return deny_restricted(&mut tx, &principal, &meta, action).await;
        }
    } else {
        authorize_workspaces(&mut tx, &principal, &meta, Some(ids.clone()), action).await?;
        check_workspaces(&mut tx, org, &ids).await?;
    }
    tx.execute(
        "delete from member_workspaces where organization_id = $1 and user_id = $2",
        &[org.as_uuid(), &path.user_id],
    )
    .await?;
    tx.execute(INSERT_MEMBER_WORKSPACES, &[org.as_uuid(), &path.user_id, &ids]).await?;
    // Always an update, so the restriction's version moves even when only the list changed.
    let version = tx
        .query_opt(
            "update memberships set restricted = $3 where organization_id = $1 and user_id = $2 \
               and ($4::bigint[] is null or row_version = any($4)) \
             returning row_version",
            &[org.as_uuid(), &path.user_id, &!ids.is_empty(), &preconditions.versions()],
        )
        .await?;
    let Some(version) = version.map(|r| r.get::<_, i64>(0)) else {
        return Err(preconditions.missed(&mut tx, MEMBER_EXISTS, &[org.as_uuid(), &path.user_id]).await);
    };
    let entry = AuditEntry::allowed("member.update_workspaces", "user", path.user_id, &meta)
        .with_details(serde_json::json!({"workspace_ids": ids}));
    record(&mut tx, &principal, entry).await?;
    tx.commit().await?;
    let body = MemberWorkspacesResponse {
        user_id: UserId(path.user_id),
        restricted: !ids.is_empty(),
        workspace_ids: ids,
    };
    Ok(tagged(HttpResponse::Ok(), version, &body))
}
