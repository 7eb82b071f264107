//! Workflows: a YAML definition edited as a draft, published as immutable versions 1, 2, 3, ...
//! The draft is parsed and validated on every write (errors name the line, column and field);
//! publishing goes through `app.publish_workflow`, which numbers versions without gaps under
//! concurrency; the database refuses any change to a published version.

use actix_web::http::header;
use actix_web::{HttpResponse, get, patch, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::Row;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::audit::{AuditEntry, record};
use super::authz::{authorize, authorize_in};
use super::conditional::{Preconditions, etag, tagged};
use super::extract::{ApiJson, Patch, RequestMeta};
use super::pagination::{COUNT_FETCH, Key, Keyset, Page, PageQuery, prefix_pattern, total};
use super::workspaces::WorkspacePath;
use super::{AppState, require_user};
use crate::api::ApiError;
use crate::api::problem::Problem;
use crate::auth::Principal;
use crate::db::{TenantTx, tenant};
use crate::domain::{FieldError, Name, OrgId, Permission, UserId};
use crate::{keyset, sorts};

/// The shape a workflow definition must have.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSpec {
    #[serde(default)]
    pub description: Option<String>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub id: String,
    pub uses: String,
    #[serde(default)]
    pub with: Option<Value>,
    #[serde(default)]
    pub needs: Vec<String>,
}

fn is_identifier(s: &str, extra: &[u8]) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra.contains(&b))
}

/// Nodes a definition may expand to, counting every alias as the nodes it repeats.
const MAX_NODES: usize = 20_000;
/// How deeply sequences and mappings may nest.
const MAX_DEPTH: usize = 64;

/// Walks a YAML document without building it, counting the nodes that aliases expand to, so
/// a "billion laughs" document is refused after `MAX_NODES` instead of filling memory. The
/// YAML parser itself bounds the events it reads by the input's size (256 KiB at most).
struct Bounded<'a> {
    nodes_left: &'a std::cell::Cell<usize>,
    depth: usize,
}

impl Bounded<'_> {
    fn child(&self) -> Self {
        Bounded { nodes_left: self.nodes_left, depth: self.depth + 1 }
    }

    fn count<E: serde::de::Error>(&self) -> Result<(), E> {
        let left = self.nodes_left.get();
        if left == 0 {
            return Err(E::custom(format!("expands to more than {MAX_NODES} nodes (check its aliases)")));
        }
        if self.depth > MAX_DEPTH {
            return Err(E::custom(format!("nests deeper than {MAX_DEPTH} levels")));
        }
        self.nodes_left.set(left - 1);
        Ok(())
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Bounded<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Bounded<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a YAML document")
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        self.count()
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        self.count()
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        self.count()
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        self.count()
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        self.count()
    }
    fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<(), E> {
        self.count()
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.count()
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        self.count()
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        self.count()?;
        de.deserialize_any(self.child())
    }
    fn visit_newtype_struct<D: serde::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        self.count()?;
        de.deserialize_any(self.child())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.count()?;
        while seq.next_element_seed(self.child())?.is_some() {}
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.count()?;
        while map.next_key_seed(self.child())?.is_some() {
            map.next_value_seed(self.child())?;
        }
        Ok(())
    }
    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(serde::de::Error::custom("YAML tags are not supported"))
    }
}

fn yaml_error(e: serde_path_to_error::Error<serde_norway::Error>) -> FieldError {
    let path = e.path().to_string();
    let field =
        if path == "." || path.is_empty() { "definition".to_owned() } else { format!("definition.{path}") };
    let inner = e.into_inner();
    let message = match inner.location() {
        Some(at) => format!("line {}, column {}: {inner}", at.line(), at.column()),
        None => inner.to_string(),
    };
    FieldError::new(field, message)
}

/// Parses and validates a YAML definition; errors name the field and, for YAML and shape
/// errors, the line and column. The document is first walked within a node budget, and only
/// then deserialized into its shape.
pub fn parse_definition(source: &str) -> Result<WorkflowSpec, FieldError> {
    if source.len() > 262_144 {
        return Err(FieldError::new("definition", "is larger than 256 KiB"));
    }
    let nodes_left = std::cell::Cell::new(MAX_NODES);
    let walk = Bounded { nodes_left: &nodes_left, depth: 0 };
    serde::de::DeserializeSeed::deserialize(walk, serde_norway::Deserializer::from_str(source)).map_err(
        |inner: serde_norway::Error| {
            let message = match inner.location() {
                Some(at) => format!("line {}, column {}: {inner}", at.line(), at.column()),
                None => inner.to_string(),
            };
            FieldError::new("definition", message)
        },
    )?;
    let de = serde_norway::Deserializer::from_str(source);
    let spec: WorkflowSpec = serde_path_to_error::deserialize(de).map_err(yaml_error)?;
    if spec.steps.is_empty() {
        return Err(FieldError::new("definition.steps", "at least one step is required"));
    }
    let mut seen: Vec<&str> = Vec::new();
    for (i, step) in spec.steps.iter().enumerate() {
        if !is_identifier(&step.id, b"_-") {
            return Err(FieldError::new(
                format!("definition.steps[{i}].id"),
                "use 1-64 lowercase letters, digits, _ or -",
            ));
        }
        if seen.contains(&step.id.as_str()) {
            return Err(FieldError::new(
                format!("definition.steps[{i}].id"),
                format!("{:?} is used twice", step.id),
            ));
        }
        if !is_identifier(&step.uses, b"_-.") {
            return Err(FieldError::new(
                format!("definition.steps[{i}].uses"),
                "is not an action name (e.g. http.get)",
            ));
        }
        if let Some(missing) = step.needs.iter().find(|n| !seen.contains(&n.as_str())) {
            return Err(FieldError::new(
                format!("definition.steps[{i}].needs"),
                format!("{missing:?} is not an earlier step"),
            ));
        }
        seen.push(&step.id);
    }
    Ok(spec)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct WorkflowPath {
    /// Organization id.
    pub org_id: Uuid,
    /// Workspace id.
    pub workspace_id: Uuid,
    /// Workflow id.
    pub workflow_id: Uuid,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct VersionPath {
    /// Organization id.
    pub org_id: Uuid,
    /// Workspace id.
    pub workspace_id: Uuid,
    /// Workflow id.
    pub workflow_id: Uuid,
    /// Version number, from 1.
    pub version: i32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "daily-digest", "definition": "steps:\n  - id: fetch\n    uses: http.get\n    with: {url: \"https://example.com\"}\n"}))]
pub struct CreateWorkflowRequest {
    pub name: String,
    /// The YAML definition: `steps: [{id, uses, with?, needs?}]`, optional `description`.
    #[schema(
        example = "steps:\n  - id: fetch\n    uses: http.get\n    with: {url: \"https://example.com\"}\n"
    )]
    pub definition: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"definition": "steps:\n  - id: fetch\n    uses: http.get\n"}))]
pub struct UpdateWorkflowRequest {
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub name: Patch<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub definition: Patch<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowResponse {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub name: String,
    /// The draft's YAML.
    pub definition: String,
    /// 0 until first published.
    pub latest_version: i32,
    pub archived_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionResponse {
    pub workflow_id: Uuid,
    pub version: i32,
    pub definition: String,
    /// The validated definition as JSON.
    pub spec: Value,
    pub published_by: Option<UserId>,
    pub published_at: DateTime<Utc>,
}

fn workflow_from_row(row: &Row) -> WorkflowResponse {
    WorkflowResponse {
        id: row.get("id"),
        workspace_id: row.get("workspace_id"),
        name: row.get("name"),
        definition: row.get("draft"),
        latest_version: row.get("latest_version"),
        archived_at: row.get("archived_at"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    }
}

fn version_from_row(row: &Row) -> VersionResponse {
    VersionResponse {
        workflow_id: row.get("workflow_id"),
        version: row.get("version"),
        definition: row.get("definition"),
        spec: row.get("spec"),
        published_by: row.get::<_, Option<Uuid>>("published_by").map(UserId),
        published_at: row.get("published_at"),
    }
}

/// Whether the workflow exists (for a guarded write that matched nothing: 412 or 404).
const WORKFLOW_EXISTS: &str =
    "select 1 from workflows where organization_id = $1 and workspace_id = $2 and id = $3";

/// A workflow's edit: `$4` name, `$5` draft (NULL: keep), `$6` the versions If-Match allows.
macro_rules! update_workflow {
    ($draft_edited:literal) => {
        concat!(
            "update workflows set name = coalesce($4, name), draft = coalesce($5::text, draft)",
            $draft_edited,
            " where organization_id = $1 and workspace_id = $2 and id = $3 and archived_at is null \
               and ($6::bigint[] is null or row_version = any($6)) \
             returning id, workspace_id, name, draft, latest_version, archived_at, created_at, updated_at, row_version"
        )
    };
}
const UPDATE_WORKFLOW: &str = update_workflow!("");
const UPDATE_WORKFLOW_AND_DRAFT: &str = update_workflow!(", draft_edited_at = now()");

const WORKFLOW_EXISTS_UNARCHIVED: &str = "select 1 from workflows where organization_id = $1 and workspace_id = $2 and id = $3 and archived_at is null";

/// Create a workflow with a draft definition (permission `workflows:write`).
#[utoipa::path(
    tag = "workflows",
    params(WorkspacePath),
    request_body = CreateWorkflowRequest,
    responses(
        (status = 201, description = "Created", body = WorkflowResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission workflows:write", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such workspace", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Name taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid definition (line, column and field named)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[post("/orgs/{org_id}/workspaces/{workspace_id}/workflows")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn create_workflow(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<WorkspacePath>,
    body: ApiJson<CreateWorkflowRequest>,
) -> Result<HttpResponse, ApiError> {
    let org = OrgId(path.org_id);
    let name = Name::parse("name", &body.name)?;
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::WorkflowsWrite, "workflow.create")
        .await?;
    // Parsed only for a member allowed to write: a stranger's YAML costs nothing.
    parse_definition(&body.definition)?;
    let id = Uuid::now_v7();
    let created_by = principal.as_user().map(|u| u.user_id.0);
    let row = tx
        .query_found(
            "insert into workflows (organization_id, workspace_id, id, name, draft, created_by) \
             values ($1, $2, $3, $4, $5, $6) \
             returning id, workspace_id, name, draft, latest_version, archived_at, created_at, updated_at, row_version",
            &[org.as_uuid(), &path.workspace_id, &id, &name.as_str(), &body.definition, &created_by],
        )
        .await?;
    let entry = AuditEntry::allowed("workflow.create", "workflow", id, &meta)
        .with_details(serde_json::json!({"name": name.as_str(), "workspace_id": path.workspace_id}));
    record(&mut tx, &principal, entry).await?;
    tx.commit().await?;
    Ok(HttpResponse::Created()
        .insert_header((
            header::LOCATION,
            format!("/api/v1/orgs/{org}/workspaces/{}/workflows/{id}", path.workspace_id),
        ))
        .insert_header((header::ETAG, etag(row.get("row_version"))))
        .json(workflow_from_row(&row)))
}

/// The workflow list's statements: `$1` organization, `$2` workspace, `$3` limit, `$4` state,
/// `$5` name prefix pattern, then the cursor's keys. Driven by the workspace: no workspace
/// (anyone's) is no row at all, hence a 404; an empty one is one row of NULLs, an empty page.
/// Indexes: `workflows_by_workspace (organization_id, workspace_id, id)` for creation order,
/// `workflows_name_key (organization_id, workspace_id, name)` for names, `workflows_name_prefix`.
macro_rules! workflows {
    () => {
        "select w.id, w.workspace_id, w.name, w.draft, w.latest_version, w.archived_at, w.created_at, w.updated_at \
         from workspaces s left join lateral ( \
           select * from workflows f where f.organization_id = s.organization_id and f.workspace_id = s.id \
             and ($4::text is null or ($4 = 'archived') = (f.archived_at is not null)) \
             and ($5::text is null or lower(f.name) like $5)"
    };
}
macro_rules! workflows_plain {
    () => {
        "select w.id, w.workspace_id, w.name, w.draft, w.latest_version, w.archived_at, w.created_at, w.updated_at \
         from workspaces s left join lateral ( \
           select * from workflows f where f.organization_id = s.organization_id and f.workspace_id = s.id \
             and $4::text is null and $5::text is null"
    };
}
macro_rules! count_workflows {
    () => {
        "select count(*) from (select 1 from workflows f where f.organization_id = $1 and f.workspace_id = $2 \
           and ($4::text is null or ($4 = 'archived') = (f.archived_at is not null)) \
           and ($5::text is null or lower(f.name) like $5) limit $3) c"
    };
}
static BY_CREATED: Keyset = keyset!(
    1,
    Id,
    asc,
    workflows,
    workflows_plain,
    ") w on true where s.organization_id = $1 and s.id = $2",
    "f.id",
    "$6",
    "f.id",
    "f.id desc",
    "$3"
);
static BY_CREATED_DESC: Keyset = keyset!(
    2,
    Id,
    desc,
    workflows,
    workflows_plain,
    ") w on true where s.organization_id = $1 and s.id = $2",
    "f.id",
    "$6",
    "f.id",
    "f.id desc",
    "$3"
);
static BY_NAME: Keyset = keyset!(
    3,
    Text,
    asc,
    workflows,
    workflows_plain,
    ") w on true where s.organization_id = $1 and s.id = $2",
    "(f.name, f.id)",
    "($6, $7)",
    "f.name, f.id",
    "f.name desc, f.id desc",
    "$3"
);
static BY_NAME_DESC: Keyset = keyset!(
    4,
    Text,
    desc,
    workflows,
    workflows_plain,
    ") w on true where s.organization_id = $1 and s.id = $2",
    "(f.name, f.id)",
    "($6, $7)",
    "f.name, f.id",
    "f.name desc, f.id desc",
    "$3"
);

sorts! {
    /// The order of a workflow list.
    WorkflowSort {
        CreatedAt = "created_at" => BY_CREATED,
        CreatedAtDesc = "-created_at" => BY_CREATED_DESC,
        Name = "name" => BY_NAME,
        NameDesc = "-name" => BY_NAME_DESC,
    }
}

/// Whether a workflow can still be edited and published.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowState {
    Active,
    Archived,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WorkflowFilter {
    /// Only active (editable) or archived workflows.
    #[param(inline)]
    pub state: Option<WorkflowState>,
    /// Only workflows whose name starts with this (case-insensitive).
    #[param(example = "daily")]
    pub name_prefix: Option<String>,
    /// `created_at` (default, oldest first), `-created_at`, `name` or `-name`.
    #[param(inline)]
    pub sort: Option<WorkflowSort>,
}

/// List a workspace's workflows (permission `workflows:read`), filtered by state and name
/// prefix.
#[utoipa::path(
    tag = "workflows",
    params(WorkspacePath, WorkflowFilter, PageQuery),
    responses(
        (status = 200, description = "Workflows", body = Page<WorkflowResponse>),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission workflows:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such workspace", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid filter, sort, limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/workspaces/{workspace_id}/workflows")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn list_workflows(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<WorkspacePath>,
    filter: web::Query<WorkflowFilter>,
    query: web::Query<PageQuery>,
) -> Result<web::Json<Page<WorkflowResponse>>, ApiError> {
    let sort = filter.sort.unwrap_or_default();
    let page = query.parse(sort.keyset())?.filtered(filter.state.is_some() || filter.name_prefix.is_some());
    let prefix = prefix_pattern("name_prefix", filter.name_prefix.as_deref())?;
    let workflow_state = filter.state.map(|s| match s {
        WorkflowState::Active => "active",
        WorkflowState::Archived => "archived",
    });
    let org = OrgId(path.org_id);
    let (membership, rows) = page
        .read(
            &state.db,
            principal.actor(),
            Some(org),
            &page.with_keys(vec![&path.org_id, &path.workspace_id, page.fetch(), &workflow_state, &prefix]),
        )
        .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::WorkflowsRead, "workflow.list").await?;
    if rows.is_empty() {
        return Err(ApiError::NotFound);
    }
    let count_params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
        [&path.org_id, &path.workspace_id, &COUNT_FETCH, &workflow_state, &prefix];
    let total = total(&state.db, &principal, Some(org), &page, count_workflows!(), &count_params).await?;
    let items =
        rows.iter().filter(|r| r.get::<_, Option<Uuid>>("id").is_some()).map(workflow_from_row).collect();
    Ok(web::Json(page.page(items, total, |w| match sort {
        WorkflowSort::Name | WorkflowSort::NameDesc => Key::Text(w.name.clone(), w.id),
        _ => Key::Id(w.id),
    })))
}

/// Get a workflow and its draft (permission `workflows:read`).
#[utoipa::path(
    tag = "workflows",
    params(WorkflowPath),
    responses(
        (status = 200, description = "The workflow", body = WorkflowResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission workflows:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such workflow", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/workspaces/{workspace_id}/workflows/{workflow_id}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn get_workflow(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<WorkflowPath>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let (membership, rows) = tenant::read(
        &state.db,
        principal.actor(),
        Some(OrgId(path.org_id)),
        "select id, workspace_id, name, draft, latest_version, archived_at, created_at, updated_at, row_version \
         from workflows where organization_id = $1 and workspace_id = $2 and id = $3",
        &[&path.org_id, &path.workspace_id, &path.workflow_id],
    )
    .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::WorkflowsRead, "workflow.get").await?;
    let row = rows.first().ok_or(ApiError::NotFound)?;
    Ok(preconditions.respond(row.get("row_version"), &workflow_from_row(row)))
}

/// Edit a workflow's name or draft (permission `workflows:write`); archived workflows are frozen.
#[utoipa::path(
    tag = "workflows",
    params(WorkflowPath),
    request_body = UpdateWorkflowRequest,
    responses(
        (status = 200, description = "Updated", body = WorkflowResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission workflows:write", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such (unarchived) workflow", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Name taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid definition (line, column and field named)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[patch("/orgs/{org_id}/workspaces/{workspace_id}/workflows/{workflow_id}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn update_workflow(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<WorkflowPath>,
    body: ApiJson<UpdateWorkflowRequest>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let name = body.name.required("name")?.map(|n| Name::parse("name", &n)).transpose()?;
    let definition = body.definition.required("definition")?;
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), OrgId(path.org_id)).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::WorkflowsWrite, "workflow.update")
        .await?;
    if let Some(definition) = &definition {
        parse_definition(definition)?;
    }
    let key: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
        [&path.org_id, &path.workspace_id, &path.workflow_id];
    // A new draft stamps its edit time. Two statements rather than a CASE around now(): Citus
    // evaluates now() for an UPDATE anywhere but inside CASE or COALESCE.
    let update = if definition.is_some() { UPDATE_WORKFLOW_AND_DRAFT } else { UPDATE_WORKFLOW };
    let row = tx
        .query_opt(
            update,
            &[
                key[0],
                key[1],
                key[2],
                &name.as_ref().map(Name::as_str),
                &definition,
                &preconditions.versions(),
            ],
        )
        .await?;
    let Some(row) = row else {
        return Err(preconditions.missed(&mut tx, WORKFLOW_EXISTS_UNARCHIVED, &key).await);
    };
    let entry = AuditEntry::allowed("workflow.update", "workflow", path.workflow_id, &meta)
        .with_details(serde_json::json!({"name": name.as_ref().map(Name::as_str), "definition_changed": definition.is_some()}));
    record(&mut tx, &principal, entry).await?;
    tx.commit().await?;
    Ok(tagged(HttpResponse::Ok(), row.get("row_version"), &workflow_from_row(&row)))
}

/// Archive a workflow: it can no longer be edited or published (permission `workflows:write`).
#[utoipa::path(
    tag = "workflows",
    params(WorkflowPath),
    responses(
        (status = 200, description = "Archived", body = WorkflowResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission workflows:write", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such workflow", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[post("/orgs/{org_id}/workspaces/{workspace_id}/workflows/{workflow_id}/archive")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn archive_workflow(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<WorkflowPath>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), OrgId(path.org_id)).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::WorkflowsWrite, "workflow.archive")
        .await?;
    let key: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
        [&path.org_id, &path.workspace_id, &path.workflow_id];
    let row = tx
        .query_opt(
            "update workflows set archived_at = coalesce(archived_at, now()) \
             where organization_id = $1 and workspace_id = $2 and id = $3 \
               and ($4::bigint[] is null or row_version = any($4)) \
             returning id, workspace_id, name, draft, latest_version, archived_at, created_at, updated_at, row_version",
            &[key[0], key[1], key[2], &preconditions.versions()],
        )
        .await?;
    let Some(row) = row else {
        return Err(preconditions.missed(&mut tx, WORKFLOW_EXISTS, &key).await);
    };
    record(&mut tx, &principal, AuditEntry::allowed("workflow.archive", "workflow", path.workflow_id, &meta))
        .await?;
    tx.commit().await?;
    Ok(tagged(HttpResponse::Ok(), row.get("row_version"), &workflow_from_row(&row)))
}

/// Publish the draft as the next immutable version (permission `workflows:publish`).
#[utoipa::path(
    tag = "workflows",
    params(WorkflowPath),
    responses(
        (status = 201, description = "Published", body = VersionResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission workflows:publish", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such (unarchived) workflow", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The draft does not validate", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[post("/orgs/{org_id}/workspaces/{workspace_id}/workflows/{workflow_id}/publish")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn create_workflow_version(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<WorkflowPath>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    require_user(&principal)?;
    let org = OrgId(path.org_id);
    let (mut tx, membership) = TenantTx::begin_org(&state.db, principal.actor(), org).await?;
    authorize_in(&mut tx, &principal, &meta, &membership, Permission::WorkflowsPublish, "workflow.publish")
        .await?;
    // Not locked (a publisher need not be an editor, and FOR UPDATE would apply the editors'
    // policy): an edit made after this read is simply not published, as the draft text read
    // here, the one If-Match named, is what app.publish_workflow stores.
    let current = tx
        .query_found(
            "select draft, row_version, draft_edited_at > coalesce( \
               (select max(v.published_at) from workflow_versions v \
                where v.organization_id = w.organization_id and v.workflow_id = w.id), '-infinity') as edited \
             from workflows w where organization_id = $1 and workspace_id = $2 and id = $3 and archived_at is null",
            &[org.as_uuid(), &path.workspace_id, &path.workflow_id],
        )
        .await?;
    if current.get::<_, Option<bool>>("edited") == Some(true) && !preconditions.has_if_match() {
        return Err(ApiError::PreconditionRequired(
            "The draft was edited since it was created or last published: send If-Match with the ETag \
             of the draft that was reviewed, so an edit made since cannot be published unseen.",
        ));
    }
    preconditions.check_write(Some(current.get("row_version")))?;
    let draft: String = current.get("draft");
    let spec = parse_definition(&draft)?;
    let spec = serde_json::to_value(&spec).map_err(|e| ApiError::Internal(e.into()))?;
    // The definer records the publication and returns the new version: on Citus the app role may
    // touch none of the organization's shards once a definer has written them in this transaction.
    let row = tx
        .query_opt(
            "select workflow_id, version, definition, spec, published_by, published_at, row_version \
             from app.publish_workflow_version($1, $2, $3, $4, $5, $6)",
            &[&path.workflow_id, &draft, &spec, &meta.ip, &meta.user_agent, &meta.request_id],
        )
        .await?
        .ok_or(ApiError::NotFound)?;
    let version: i32 = row.get("version");
    tx.commit().await?;
    Ok(HttpResponse::Created()
        .insert_header((
            header::LOCATION,
            format!(
                "/api/v1/orgs/{org}/workspaces/{}/workflows/{}/versions/{version}",
                path.workspace_id, path.workflow_id
            ),
        ))
        .insert_header((header::ETAG, etag(row.get("row_version"))))
        .json(version_from_row(&row)))
}

/// The version list's statements: `$1` organization, `$2` workspace, `$3` workflow, `$4` limit,
/// then the cursor's key. Driven by the workflow, as the workflow list by its workspace: a
/// missing workflow is a 404, not an empty list. Index: the primary key
/// `(organization_id, workflow_id, version)`.
macro_rules! versions {
    () => {
        "select v.workflow_id, v.version, v.definition, v.spec, v.published_by, v.published_at \
         from workflows w left join lateral ( \
           select * from workflow_versions x where x.organization_id = w.organization_id and x.workflow_id = w.id"
    };
}
static BY_VERSION: Keyset = keyset!(
    1,
    Int,
    asc,
    versions,
    versions,
    ") v on true where w.organization_id = $1 and w.workspace_id = $2 and w.id = $3",
    "x.version",
    "$5::bigint",
    "x.version",
    "x.version desc",
    "$4"
);
static BY_VERSION_DESC: Keyset = keyset!(
    2,
    Int,
    desc,
    versions,
    versions,
    ") v on true where w.organization_id = $1 and w.workspace_id = $2 and w.id = $3",
    "x.version",
    "$5::bigint",
    "x.version",
    "x.version desc",
    "$4"
);
const COUNT_VERSIONS: &str = "select count(*) from (select 1 from workflow_versions x \
     join workflows w on w.organization_id = x.organization_id and w.id = x.workflow_id \
     where x.organization_id = $1 and w.workspace_id = $2 and x.workflow_id = $3 limit $4) c";

sorts! {
    /// The order of a version list.
    VersionSort {
        Version = "version" => BY_VERSION,
        VersionDesc = "-version" => BY_VERSION_DESC,
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VersionFilter {
    /// `version` (default, 1 first) or `-version` (the latest first).
    #[param(inline)]
    pub sort: Option<VersionSort>,
}

/// List a workflow's published versions (permission `workflows:read`), paged: none is left out.
#[utoipa::path(
    tag = "workflows",
    params(WorkflowPath, VersionFilter, PageQuery),
    responses(
        (status = 200, description = "Versions", body = Page<VersionResponse>),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission workflows:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such workflow", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid sort, limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/workspaces/{workspace_id}/workflows/{workflow_id}/versions")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn list_workflow_versions(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<WorkflowPath>,
    filter: web::Query<VersionFilter>,
    query: web::Query<PageQuery>,
) -> Result<web::Json<Page<VersionResponse>>, ApiError> {
    let page = query.parse(filter.sort.unwrap_or_default().keyset())?;
    let org = OrgId(path.org_id);
    let (membership, rows) = page
        .read(
            &state.db,
            principal.actor(),
            Some(org),
            &page.with_keys(vec![&path.org_id, &path.workspace_id, &path.workflow_id, page.fetch()]),
        )
        .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::WorkflowsRead, "workflow.list_versions")
        .await?;
    if rows.is_empty() {
        return Err(ApiError::NotFound);
    }
    let count_params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&path.org_id, &path.workspace_id, &path.workflow_id, &COUNT_FETCH];
    let total = total(&state.db, &principal, Some(org), &page, COUNT_VERSIONS, &count_params).await?;
    let versions =
        rows.iter().filter(|r| r.get::<_, Option<i32>>("version").is_some()).map(version_from_row).collect();
    Ok(web::Json(page.page(versions, total, |v| Key::Int(i64::from(v.version)))))
}

/// Get one published version (permission `workflows:read`).
#[utoipa::path(
    tag = "workflows",
    params(VersionPath),
    responses(
        (status = 200, description = "The version", body = VersionResponse),
        (status = 401, description = "Not authenticated", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Missing permission workflows:read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such version", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
#[get("/orgs/{org_id}/workspaces/{workspace_id}/workflows/{workflow_id}/versions/{version}")]
#[tracing::instrument(skip_all, fields(org.id = %path.org_id))]
pub async fn get_workflow_version(
    state: web::Data<AppState>,
    principal: Principal,
    meta: RequestMeta,
    path: web::Path<VersionPath>,
    preconditions: Preconditions,
) -> Result<HttpResponse, ApiError> {
    let (membership, rows) = tenant::read(
        &state.db,
        principal.actor(),
        Some(OrgId(path.org_id)),
        "select v.workflow_id, v.version, v.definition, v.spec, v.published_by, v.published_at, v.row_version \
         from workflow_versions v join workflows w on w.organization_id = v.organization_id and w.id = v.workflow_id \
         where v.organization_id = $1 and w.workspace_id = $2 and v.workflow_id = $3 and v.version = $4",
        &[&path.org_id, &path.workspace_id, &path.workflow_id, &path.version],
    )
    .await?;
    let membership = membership.ok_or(ApiError::NotFound)?;
    authorize(&state, &principal, &meta, &membership, Permission::WorkflowsRead, "workflow.get_version")
        .await?;
    let row = rows.first().ok_or(ApiError::NotFound)?;
    Ok(preconditions.respond(row.get("row_version"), &version_from_row(row)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_are_validated_with_line_and_field() {
        let good = "description: demo\nsteps:\n  - id: fetch\n    uses: http.get\n  - id: summarize\n    uses: llm.chat\n    needs: [fetch]\n";
        assert_eq!(parse_definition(good).unwrap().steps.len(), 2);

        let err = parse_definition("steps:\n  - id: a\n    uses: [unclosed\n").unwrap_err();
        assert!(err.message.contains("line"), "{err:?}");
        let err = parse_definition("steps:\n  - id: a\n").unwrap_err();
        assert_eq!(err.field, "definition.steps[0]");
        assert!(err.message.contains("missing field `uses`") && err.message.contains("line 2"), "{err:?}");
        let err = parse_definition("steps:\n  - id: a\n    uses: x\n    colour: red\n").unwrap_err();
        assert!(err.field.starts_with("definition.steps[0]"), "{err:?}");
        let err = parse_definition("steps: []\n").unwrap_err();
        assert_eq!(err.field, "definition.steps");
        let err = parse_definition("steps:\n  - id: a\n    uses: x\n  - id: a\n    uses: y\n").unwrap_err();
        assert_eq!(err.field, "definition.steps[1].id");
        let err = parse_definition("steps:\n  - id: b\n    uses: x\n    needs: [later]\n").unwrap_err();
        assert_eq!(err.field, "definition.steps[0].needs");
    }

    /// Three levels of 100 aliases expand to a million nodes from 1.5 KB: the walk stops at
    /// the budget instead of building them.
    #[test]
    fn an_alias_bomb_is_refused_at_the_node_budget() {
        let level = |name: &str, of: &str| format!("{name}: &{name} [{}]\n", vec![of; 100].join(","));
        let bomb = format!(
            "{}{}{}steps:\n  - id: a\n    uses: x\n    with: {{boom: *c}}\n",
            level("a", "x"),
            level("b", "*a"),
            level("c", "*b")
        );
        let err = parse_definition(&bomb).unwrap_err();
        assert_eq!(err.field, "definition");
        assert!(err.message.contains("more than 20000 nodes"), "{err:?}");
        // Within the budget, aliases are fine.
        let small = "defaults: &d {url: \"https://example.com\"}\nsteps:\n  - id: a\n    uses: http.get\n    with: *d\n";
        let err = parse_definition(small).unwrap_err();
        assert!(err.message.contains("unknown field"), "only the unknown top-level key is refused: {err:?}");
        let deep =
            format!("steps:\n  - id: a\n    uses: x\n    with: {}1{}\n", "[".repeat(70), "]".repeat(70));
        let err = parse_definition(&deep).unwrap_err();
        assert!(err.message.contains("nests deeper"), "{err:?}");
    }
}
