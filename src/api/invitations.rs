//! Invitations: an organization invites an email address with a role; the invitee signs in and
//! accepts with the single-use token (shown once at creation, stored only as SHA-256). Expired,
//! revoked and used invitations are refused clearly. Delivering the token (email) is the
//! caller's: tenantry returns it and never logs it.

use actix_web::http::header;
use actix_web::{HttpResponse, delete, get, post, web};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::audit::{AuditEntry, record};
use super::authz::{authorize, authorize_grant, authorize_in, authorize_workspaces};
use super::conditional::{Preconditions, etag};
use super::extract::{ApiJson, RequestMeta};
use super::members::{check_custom_role, check_workspaces, custom_role_of, sorted};
use super::orgs::OrgPath;
use super::pagination::{COUNT_FETCH, Key, Keyset, Page, PageQuery, total};
use super::{AppState, require_user};
use crate::api::ApiError;
use crate::api::problem::Problem;
use crate::auth::Principal;
use crate::auth::api_keys::{new_opaque, parse_opaque};
use crate::db::{TenantTx, tenant};
use crate::domain::{FieldError, Membership, OrgId, Permission, Role, UserId};
use crate::{keyset, sorts};

const PREFIX: &str = "tnty_inv_";

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct InvitationPath {
    /// Organization id.
    pub org_id: Uuid,
    /// Invitation id.
    pub invitation_id: Uuid,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "new.hire@example.com", "role": "editor", "expires_in_hours": 72}))]
pub struct CreateInvitationRequest {
    #[schema(example = "new.hire@example.com")]
    pub email: String,
    pub role: Role,
    /// Required when `role` is `custom`.
    pub custom_role_id: Option<Uuid>,
    /// Hours until the invitation expires: 1 to 720 (default 168, a week).
    pub expires_in_hours: Option<i64>,
    /// Restrict the new member to these workspaces. A restricted inviter may name only its own,
    /// and its invitations are always restricted (by default to the inviter's workspaces).
    pub workspace_ids: Option<Vec<Uuid>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"token": "tnty_inv_01J8Z3YQ4W8V2N6M0K5T1R7H9C.Xq3b8Jm2Kp5Lw9Rt4Vz7Yc1Nf6Gh0Sd"}))]
pub struct AcceptInvitationRequest {
    /// The token from the invitation.
    pub token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationResponse {
    pub id: Uuid,
    pub organization_id: OrgId,
    pub email: String,
    pub role: Role,
    pub custom_role_id: Option<Uuid>,
    /// The workspaces the new member will be restricted to (null: unrestricted).
    pub workspace_ids: Option<Vec<Uuid>>,
    pub invited_by: Option<UserId>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub accepted_by: Option<UserId>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedInvitationResponse {
    #[serde(flatten)]
    pub invitation: InvitationResponse,
    /// Send this to the invitee; it is shown only now.
    pub token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedInvitationResponse {
    pub organization_id: OrgId,
}

fn invitation_from_row(row: &Row) -> Result<InvitationResponse, ApiError> {
    Ok(InvitationResponse {
        id: row.get("id"),
        organization_id: OrgId(row.get("organization_id")),
        email: row.get("email"),
        role: Role::from_db(row.get("role"))
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("unexpected role")))?,
        custom_role_id: row.get("custom_role_id"),
        workspace_ids: row.get("workspace_ids"),
        invited_by: row.get::<_, Option<Uuid>>("invited_by").map(UserId),
        created_at: row.get("created_at"),
        expires_at: row.get("expires_at"),
        accepted_at: row.get("accepted_at"),
        accepted_by: row.get::<_, Option<Uuid>>("accepted_by").map(UserId),
        revoked_at: row.get("revoked_at"),
    })
}

fn normalized_email(raw: &str) -> Result<String, ApiError> {
    let email = raw.trim().to_lowercase();
    let ok = email.len() <= 320
        && !email.chars().any(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
    if ok { Ok(email) } else { Err(FieldError::new("email", "is not an email address").into()) }
}

/// One invitation as asked for, validated before any database work.
struct Invite {
    email: String,
    role: Role,
    custom_role: Option<Uuid>,
    hours: i64,
    workspaces: Option<Vec<Uuid>>,
}

/// Checks one invitation's fields; errors name them under `prefix` (`invitations[3].`).
fn validate(item: &CreateInvitationRequest, prefix: &str) -> Result<Invite, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut named = |field: &str, e: ApiError| match e {
        ApiError::Validation(list) => errors
            .extend(list.into_iter().map(|f| FieldError::new(format!("{prefix}{}", f.field), f.message))),
        _ => errors.push(FieldError::new(format!("{prefix}{field}"), "is invalid")),
    };
    let email = normalized_email(&item.email).map_err(|e| named("email", e)).ok();
    let hours = item.expires_in_hours.unwrap_or(168);
    if !(1..=720).contains(&hours) {
        named("expires_in_hours", FieldError::new("expires_in_hours", "must be between 1 and 720").into());
    }
    let custom_role =
        custom_role_of(item.role, item.custom_role_id).map_err(|e| named("custom_role_id", e)).ok();
    let workspaces = item.workspace_ids.clone().map(sorted);
    if workspaces.as_ref().is_some_and(Vec::is_empty) {
        named(
            "workspace_ids",
            FieldError::new("workspace_ids", "name at least one workspace, or leave it out").into(),
        );
    }
    match (email, custom_role) {
        (Some(email), Some(custom_role)) if errors.is_empty() => {
            Ok(Invite { email, role: item.role, custom_role, hours, workspaces })
        }
        _ => Err(errors),
    }
}

/// Checks that the caller may give this invitation (role, custom role, workspaces): a denial is
/// recorded and answered before anything is written. Returns the workspaces to restrict to.
async fn authorize_invite(
    tx: &mut TenantTx,
    principal: &Principal,
    meta: &RequestMeta,
    membership: &Membership,
    org: OrgId,
    invite: &Invite,
    action: &'static str,
) -> Result<Option<Vec<Uuid>>, ApiError> {
    check_custom_role(tx, org, invite.custom_role).await?;
    authorize_grant(tx, principal, meta, membership, (invite.role, invite.custom_role), action).await?;
    let workspaces = authorize_workspaces(tx, principal, meta, invite.workspaces.clone(), action).await?;
    if let Some(ids) = &workspaces {
        check_workspaces(tx, org, ids).await?;
    }
    Ok(workspaces)
}

/// Stores one authorized invitation and its audit entry; returns it with its one-time token.
async fn store_invite(
    tx: &mut TenantTx,
    principal: &Principal,
    meta: &RequestMeta,
    inviter: UserId,
    org: OrgId,
    invite: &Invite,
    workspaces: Option<Vec<Uuid>>,
) -> Result<(Row, String), ApiError> {
    let token = new_opaque(PREFIX);
    let expires_at = Utc::now() + Duration::hours(invite.hours);
    let row = tx
        .query_found(
            "insert into invitations (organization_id, id, email, role, custom_role_id, token_hash, invited_by, expires_at, \
               workspace_ids) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             returning organization_id, id, email, role, custom_role_id, workspace_ids, invited_by, created_at, expires_at, \
                       accepted_at, accepted_by, revoked_at, row_version",
            &[
                org.as_uuid(),
                &token.id,
                &invite.email,
                &invite.role.as_str(),
                &invite.custom_role,
                &token.hash.as_slice(),
                inviter.as_uuid(),
                &expires_at,
                &workspaces,
            ],
        )
        .await?;
    let entry = AuditEntry::allowed("invitation.create", "invitation", token.id, meta).with_details(
        serde_json::json!({"email": invite.email, "role": invite.role, "custom_role_id": invite.custom_role,
                           "workspace_ids": workspaces}),
    );
    record(tx, principal, entry).await?;
    Ok((row, token.plaintext))
}

/// Invite someone (permission `members:manage`; an owner invitation also `owners:manage`, a
/// custom role every permission it grants).
#[utoipa::path(
    tag = "members",
    params(OrgPath),
    request_body = CreateInvitationRequest,
    responses(
        (status = 201, description = "Created; `token` is shown only in this response", body = CreatedInvitationResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[post("/orgs/{org_id}/invitations")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn create_invitation(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
    body: ApiJson<CreateInvitationRequest>,
) -> Result<HttpResponse, ApiError> {
    let user = require_user(&principal)?;
    let org = OrgId(path.org_id);
    let invite = validate(&body, "").map_err(ApiError::Validation)?;
    let action = "invitation.create";
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::MembersManage, action).await?;
    let workspaces = authorize_invite(&mut tx, &principal, &meta, &membership, org, &invite, action).await?;
    let (row, token) =
        store_invite(&mut tx, &principal, &meta, user.user_id, org, &invite, workspaces).await?;
    tx.commit().await?;
    let id: Uuid = row.get("id");
    let mut response = HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/api/v1/orgs/{org}/invitations/{id}")))
        .insert_header((header::ETAG, etag(row.get("row_version"))))
        .json(CreatedInvitationResponse { invitation: invitation_from_row(&row)?, token });
    // Never kept for an idempotent replay: the token exists in plaintext only in this response.
    response.extensions_mut().insert(super::OneTimeSecret);
    Ok(response)
}

/// Most invitations one bulk request may carry.
pub const MAX_BULK_INVITATIONS: usize = 500;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"invitations": [
    {"email": "ada@example.com", "role": "editor"},
    {"email": "grace@example.com", "role": "viewer", "expires_in_hours": 72}
]}))]
pub struct BulkInvitationRequest {
    /// 1 to 500 invitations, each as `POST /invitations` takes it; no address twice.
    pub invitations: Vec<CreateInvitationRequest>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BulkInvitationResponse {
    /// One per requested invitation, in the order asked; each `token` is shown only now.
    pub invitations: Vec<CreatedInvitationResponse>,
}

/// Invite many people at once (permissions as for one invitation, for each). All or nothing, in
/// one transaction: if any invitation is invalid the answer is a 422 naming each bad field by
/// its index (`invitations[3].email`) and none is created; if the caller may not give any one
/// of them, a 403 and none is created; otherwise all are, and the answer lists them in order.
#[utoipa::path(
    tag = "members",
    params(OrgPath),
    request_body = BulkInvitationRequest,
    responses(
        (status = 201, description = "All created; each `token` is shown only in this response", body = BulkInvitationResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission for at least one invitation; none was created", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid invitations, each field named by index; none was created", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[post("/orgs/{org_id}/invitations/bulk")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn create_invitations(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
    body: ApiJson<BulkInvitationRequest>,
) -> Result<HttpResponse, ApiError> {
    let user = require_user(&principal)?;
    let org = OrgId(path.org_id);
    if body.invitations.is_empty() || body.invitations.len() > MAX_BULK_INVITATIONS {
        return Err(FieldError::new(
            "invitations",
            format!("must hold 1 to {MAX_BULK_INVITATIONS} invitations"),
        )
        .into());
    }
    let mut errors = Vec::new();
    let mut invites = Vec::with_capacity(body.invitations.len());
    let mut seen = std::collections::HashSet::new();
    for (i, item) in body.invitations.iter().enumerate() {
        match validate(item, &format!("invitations[{i}].")) {
            Ok(invite) if !seen.insert(invite.email.clone()) => errors
                .push(FieldError::new(format!("invitations[{i}].email"), "appears twice in this request")),
            Ok(invite) => invites.push(invite),
            Err(item_errors) => errors.extend(item_errors),
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let action = "invitation.create";
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::MembersManage, action).await?;
    // Every invitation is authorized before any is written: a denial commits only its entry.
    let mut authorized = Vec::with_capacity(invites.len());
    for invite in &invites {
        authorized
            .push(authorize_invite(&mut tx, &principal, &meta, &membership, org, invite, action).await?);
    }
    let mut created = Vec::with_capacity(invites.len());
    for (invite, workspaces) in invites.iter().zip(authorized) {
        let (row, token) =
            store_invite(&mut tx, &principal, &meta, user.user_id, org, invite, workspaces).await?;
        created.push(CreatedInvitationResponse { invitation: invitation_from_row(&row)?, token });
    }
    tx.commit().await?;
    let mut response = HttpResponse::Created().json(BulkInvitationResponse { invitations: created });
    response.extensions_mut().insert(super::OneTimeSecret);
    Ok(response)
}

/// The invitation list's statements: `$1` organization, `$2` limit, `$3` state, `$4` e-mail,
/// then the cursor's key. Indexes: the primary key `(organization_id, id)` (ids are UUIDv7, so
/// creation order), `invitations_email_idx (organization_id, email)` for the e-mail; the state
/// (which depends on the clock) is checked on the rows read.
macro_rules! invitations {
    () => {
        "select organization_id, id, email, role, custom_role_id, workspace_ids, invited_by, created_at, expires_at, \
                accepted_at, accepted_by, revoked_at from invitations \
         where organization_id = $1 \
           and ($3::text is null \
                or ($3 = 'accepted' and accepted_at is not null) \
                or ($3 = 'revoked' and accepted_at is null and revoked_at is not null) \
                or ($3 = 'expired' and accepted_at is null and revoked_at is null and expires_at <= now()) \
                or ($3 = 'pending' and accepted_at is null and revoked_at is null and expires_at > now())) \
           and ($4::text is null or email = lower($4))"
    };
}
macro_rules! invitations_plain {
    () => {
        "select organization_id, id, email, role, custom_role_id, workspace_ids, invited_by, created_at, expires_at, \
                accepted_at, accepted_by, revoked_at from invitations \
         where organization_id = $1 and $3::text is null and $4::text is null"
    };
}
static BY_CREATED: Keyset =
    keyset!(1, Id, asc, invitations, invitations_plain, "", "id", "$5", "id", "id desc", "$2");
static BY_CREATED_DESC: Keyset =
    keyset!(2, Id, desc, invitations, invitations_plain, "", "id", "$5", "id", "id desc", "$2");
const COUNT_INVITATIONS: &str = concat!("select count(*) from (", invitations!(), " limit $2) c");

sorts! {
    /// The order of an invitation list.
    InvitationSort {
        CreatedAt = "created_at" => BY_CREATED,
        CreatedAtDesc = "-created_at" => BY_CREATED_DESC,
    }
}

/// Where an invitation stands.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvitationState {
    Pending,
    Accepted,
    Revoked,
    Expired,
}

impl InvitationState {
    fn as_str(self) -> &'static str {
        match self {
            InvitationState::Pending => "pending",
            InvitationState::Accepted => "accepted",
            InvitationState::Revoked => "revoked",
            InvitationState::Expired => "expired",
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InvitationFilter {
    /// Only invitations in this state.
    #[param(inline)]
    pub state: Option<InvitationState>,
    /// Only invitations to this address (case-insensitive).
    #[param(example = "new.hire@example.com")]
    pub email: Option<String>,
    /// `created_at` (default, oldest first) or `-created_at`.
    #[param(inline)]
    pub sort: Option<InvitationSort>,
}

/// List the organization's invitations (permission `members:manage`), filtered by state and
/// e-mail.
#[utoipa::path(
    tag = "members",
    params(OrgPath, InvitationFilter, PageQuery),
    responses(
        (status = 200, description = "Invitations", body = Page<InvitationResponse>),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission members:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or not a member", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid filter, sort, limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/invitations")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn list_invitations(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<OrgPath>,
    filter: web::Query<InvitationFilter>,
    query: web::Query<PageQuery>,
) -> Result<web::Json<Page<InvitationResponse>>, ApiError> {
    let sort = filter.sort.unwrap_or_default();
    let page = query.parse(sort.keyset())?.filtered(filter.state.is_some() || filter.email.is_some());
    if filter.email.as_ref().is_some_and(|e| e.is_empty() || e.len() > 320) {
        return Err(FieldError::new("email", "must be 1 to 320 characters").into());
    }
    let invitation_state = filter.state.map(InvitationState::as_str);
    let org = OrgId(path.org_id);
    let (membership, rows) = page
        .read(
            &state.db,
            principal.actor(),
            Some(org),
            &page.with_keys(vec![org.as_uuid(), page.fetch(), &invitation_state, &filter.email]),
        )
        .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::MembersManage, "invitation.list").await?;
    let count_params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [org.as_uuid(), &COUNT_FETCH, &invitation_state, &filter.email];
    let total = total(&state.db, &principal, Some(org), &page, COUNT_INVITATIONS, &count_params).await?;
    let items = rows.iter().map(invitation_from_row).collect::<Result<Vec<_>, _>>()?;
    Ok(web::Json(page.page(items, total, |i| Key::Id(i.id))))
}

/// Get one invitation (never its token; permission `members:manage`).
#[utoipa::path(
    tag = "members",
    params(InvitationPath),
    responses(
        (status = 200, description = "The invitation", body = InvitationResponse),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission members:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such invitation", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/invitations/{invitation_id}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn get_invitation(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<InvitationPath>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let (membership, rows) = tenant::read(
        &state.db,
        principal.actor(),
        Some(OrgId(path.org_id)),
        "select organization_id, id, email, role, custom_role_id, workspace_ids, invited_by, created_at, expires_at, \
                accepted_at, accepted_by, revoked_at, row_version \
         from invitations where organization_id = $1 and id = $2",
        &[&path.org_id, &path.invitation_id],
    )
    .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::MembersManage, "invitation.get").await?;
    let row = rows.first().ok_or(ApiError::NotFound)?;
    Ok(preconditions.respond(row.get("row_version"), &invitation_from_row(row)?))
}

/// Revoke an invitation (permission `members:manage`).
#[utoipa::path(
    tag = "members",
    params(InvitationPath),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission members:manage", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such invitation", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[delete("/orgs/{org_id}/invitations/{invitation_id}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn delete_invitation(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<InvitationPath>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let org = OrgId(path.org_id);
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::MembersManage, "invitation.revoke")
        .await?;
    let changed = tx
        .execute(
            // least(), not coalesce(): the first revocation's time stays (least() skips a NULL), and
            // Citus evaluates now() for an UPDATE anywhere but inside CASE or COALESCE.
            "update invitations set revoked_at = least(revoked_at, now()) where organization_id = $1 and id = $2 \
               and ($3::bigint[] is null or row_version = any($3))",
            &[org.as_uuid(), &path.invitation_id, &preconditions.versions()],
        )
        .await?;
    if changed != 1 {
        let exists = "select 1 from invitations where organization_id = $1 and id = $2";
        return Err(preconditions.missed(&mut tx, exists, &[org.as_uuid(), &path.invitation_id]).await);
    }
    record(
        &mut tx,
        &principal,
        AuditEntry::allowed("invitation.revoke", "invitation", path.invitation_id, &meta),
    )
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Accept an invitation as the signed-in user: you become a member with the invited role.
#[utoipa::path(
    tag = "members",
    request_body = AcceptInvitationRequest,
    responses(
        (status = 200, description = "Accepted", body = AcceptedInvitationResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "API keys cannot accept invitations", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such invitation", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already accepted, or already a member", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "Expired or revoked", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[post("/invitations/accept")]
#[tracing::instrument(skip_all)]
pub async fn accept_invitation(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    body: ApiJson<AcceptInvitationRequest>,
) -> Result<web::Json<AcceptedInvitationResponse>, ApiError> {
    require_user(&principal)?;
    let (id, hash) = parse_opaque(PREFIX, body.token.trim()).ok_or(ApiError::NotFound)?;
    let mut tx = TenantTx::begin_user(&state.db, principal.actor()).await?;
    let row = tx
        .query_found(
            "select app.accept_invitation($1, $2, $3, $4, $5)",
            &[&id, &hash.as_slice(), &meta.ip, &meta.user_agent, &meta.request_id],
        )
        .await?;
    tx.commit().await?;
    Ok(web::Json(AcceptedInvitationResponse { organization_id: OrgId(row.get(0)) }))
}
