//! `tenantry check` on a correct database, and on databases broken in each way it must catch.

use tenantry::db::check;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::helpers::{admin_url, connect, fresh_database, installer_url, test_settings};

async fn scratch() -> (String, Client) {
    let db = fresh_database().await;
    let client = connect(&admin_url(&db)).await;
    (db, client)
}

fn rules_for<'a>(violations: &'a [check::Violation], object: &str) -> Vec<&'a str> {
    violations.iter().filter(|v| v.object.contains(object)).map(|v| v.rule).collect()
}

#[tokio::test]
async fn a_freshly_migrated_database_passes_the_check() {
    let (_, client) = scratch().await;
    let violations = check::run(&client, "tenantry_app").await.unwrap();
    assert!(violations.is_empty(), "unexpected violations: {violations:#?}");
}

#[tokio::test]
async fn dropping_force_row_level_security_is_reported() {
    let (_, client) = scratch().await;
    client.batch_execute("alter table workspaces no force row level security").await.unwrap();
    let violations = check::run(&client, "tenantry_app").await.unwrap();
    assert_eq!(rules_for(&violations, "workspaces"), vec!["rls_not_forced"]);
}

#[tokio::test]
async fn disabling_row_level_security_is_reported() {
    let (_, client) = scratch().await;
    client.batch_execute("alter table memberships disable row level security").await.unwrap();
    let violations = check::run(&client, "tenantry_app").await.unwrap();
    assert!(rules_for(&violations, "memberships").contains(&"rls_disabled"), "{violations:#?}");
}

#[tokio::test]
async fn a_using_true_policy_is_reported() {
    let (_, client) = scratch().await;
    client
        .batch_execute("create policy peek on workspaces for select to tenantry_app using (true)")
        .await
        .unwrap();
    let violations = check::run(&client, "tenantry_app").await.unwrap();
    assert_eq!(rules_for(&violations, "workspaces.peek"), vec!["policy_always_true"]);
}

#[tokio::test]
async fn a_policy_that_reads_another_table_is_reported() {
    let (_, client) = scratch().await;
    // The shape every policy had before issue 18, which Citus refuses, and a policy calling a
    // function that queries a table (app.role_grants reads the role's permissions): a shard
    // could evaluate neither.
    client
        .batch_execute(
            "create policy peek on workspaces for select to tenantry_app \
             using (organization_id = (select app.current_org_id())); \
             create policy grants on roles for select to tenantry_app \
             using (organization_id = app.current_org_id() and app.role_grants('custom', id) <> '{}')",
        )
        .await
        .unwrap();
    let violations = check::run(&client, "tenantry_app").await.unwrap();
    assert_eq!(rules_for(&violations, "workspaces.peek"), vec!["policy_subquery"]);
    assert_eq!(rules_for(&violations, "roles.grants"), vec!["policy_calls_unlisted_function"]);
    let grants = violations.iter().find(|v| v.object == "roles.grants").unwrap();
    assert!(grants.message.contains("app.role_grants(text,uuid)"), "{grants:#?}");
    assert_eq!(violations.len(), 2, "{violations:#?}");
}

#[tokio::test]
async fn a_table_named_like_a_citus_shard_is_reported() {
    let (_, client) = scratch().await;
    // On a worker, triggers tell a table by its shard's name with the shard id cut off
    // (app.logical_table_name()); `audit_2024` would read as a shard of `audit`.
    client
        .batch_execute("create table public.audit_2024 (id int); create table public.audit_v2 (id int)")
        .await
        .unwrap();
    let violations = check::run(&client, "tenantry_app").await.unwrap();
    let shard_like: Vec<&str> = violations
        .iter()
        .filter(|v| v.rule == "table_named_like_a_shard")
        .map(|v| v.object.as_str())
        .collect();
    assert_eq!(shard_like, vec!["audit_2024"], "{violations:#?}");
}

#[tokio::test]
async fn a_definer_view_must_stay_a_security_barrier_owned_by_the_definer() {
    let (_, client) = scratch().await;
    client
        .batch_execute(
            "alter view app.member_profiles reset (security_barrier); \
             alter view app.user_organizations owner to tenantry_owner",
        )
        .await
        .unwrap();
    let violations = check::run(&client, "tenantry_app").await.unwrap();
    assert_eq!(rules_for(&violations, "member_profiles"), vec!["view_not_security_invoker"]);
    assert_eq!(rules_for(&violations, "user_organizations"), vec!["view_not_security_invoker"]);
    assert_eq!(violations.len(), 2, "{violations:#?}");
}

#[tokio::test]
async fn an_app_role_with_bypassrls_or_superuser_is_reported() {
    // Roles are cluster-wide, so the mutation is made on a copy of the app role rather than on
    // the role every other test is using.
    let (_, client) = scratch().await;
    let role = format!("tt_app_{}", Uuid::new_v4().simple());
    client
        .batch_execute(&format!("create role {role} login bypassrls; grant tenantry_app to {role}"))
        .await
        .unwrap();
    let violations = check::run(&client, &role).await.unwrap();
    assert!(violations.iter().any(|v| v.rule == "app_role_bypassrls"), "{violations:#?}");

    client
        .batch_execute(&format!(
            "alter role {role} nobypassrls; create role {role}_su superuser; grant {role}_su to {role}"
        ))
        .await
        .unwrap();
    let violations = check::run(&client, &role).await.unwrap();
    assert!(violations.iter().any(|v| v.rule == "app_role_privileged_member"), "{violations:#?}");
    client.batch_execute(&format!("drop role {role}; drop role {role}_su")).await.unwrap();

    let violations = check::run(&client, "tenantry_app").await.unwrap();
    assert!(violations.is_empty(), "the real app role is untouched: {violations:#?}");
}

#[tokio::test]
async fn a_foreign_key_without_organization_id_is_reported() {
    let (_, client) = scratch().await;
    client
        .batch_execute(
            "alter table workspaces add constraint workspaces_id_key unique (id);
             create table notes (
               organization_id uuid not null references organizations (id),
               id uuid not null,
               workspace_id uuid not null,
               primary key (organization_id, id),
               constraint notes_workspace_fkey foreign key (workspace_id) references workspaces (id));
             alter table notes enable row level security;
             alter table notes force row level security;",
        )
        .await
        .unwrap();
    let violations = check::run(&client, "tenantry_app").await.unwrap();
    assert_eq!(rules_for(&violations, "notes_workspace_fkey"), vec!["fk_without_tenant"]);
    assert_eq!(rules_for(&violations, "workspaces_id_key"), vec!["unique_without_tenant"]);

    // The same key done right passes.
    client
        .batch_execute(
            "alter table notes drop constraint notes_workspace_fkey;
             alter table notes add constraint notes_workspace_fkey foreign key (organization_id, workspace_id)
               references workspaces (organization_id, id);
             alter table workspaces drop constraint workspaces_id_key;",
        )
        .await
        .unwrap();
    let violations = check::run(&client, "tenantry_app").await.unwrap();
    assert!(violations.is_empty(), "{violations:#?}");
}

#[tokio::test]
async fn a_granted_command_without_a_policy_and_a_bad_primary_key_are_reported() {
    let (_, client) = scratch().await;
    client
        .batch_execute(
            "create table secrets (id uuid primary key, organization_id uuid not null);
             alter table secrets enable row level security;
             alter table secrets force row level security;
             grant select, insert on secrets to tenantry_app;
             create policy secrets_select on secrets for select to tenantry_app
               using (organization_id = app.current_org_id());",
        )
        .await
        .unwrap();
    let violations = check::run(&client, "tenantry_app").await.unwrap();
    let mut rules = rules_for(&violations, "secrets");
    rules.sort();
    assert_eq!(
        rules,
        vec!["missing_policy", "pk_not_tenant_leading", "unique_without_tenant"],
        "{violations:#?}"
    );
}

#[tokio::test]
async fn definer_functions_without_search_path_and_owner_rights_views_are_reported() {
    let (_, client) = scratch().await;
    client
        .batch_execute(
            "create function leaky() returns bigint language sql security definer as $$ select count(*) from workspaces $$;
             create view all_workspaces as select * from workspaces;
             create view my_workspaces with (security_invoker = true) as select * from workspaces;",
        )
        .await
        .unwrap();
    let violations = check::run(&client, "tenantry_app").await.unwrap();
    assert_eq!(rules_for(&violations, "leaky"), vec!["definer_without_search_path"]);
    assert_eq!(rules_for(&violations, "all_workspaces"), vec!["view_not_security_invoker"]);
    assert!(rules_for(&violations, "my_workspaces").is_empty());
}

#[tokio::test]
async fn an_app_role_that_owns_a_table_is_reported() {
    let (_, client) = scratch().await;
    let role = format!("tt_app_{}", Uuid::new_v4().simple());
    client
        .batch_execute(&format!("create role {role} login; create table owned_by_app (x int); alter table owned_by_app owner to {role}"))
        .await
        .unwrap();
    let violations = check::run(&client, &role).await.unwrap();
    assert!(
        violations.iter().any(|v| v.rule == "app_role_owns_object" && v.object.contains("owned_by_app")),
        "{violations:#?}"
    );
    client.batch_execute(&format!("drop table owned_by_app; drop role {role}")).await.unwrap();
}

#[tokio::test]
async fn the_server_refuses_to_start_as_a_role_that_bypasses_rls() {
    let (db, _) = scratch().await;
    let dir = std::env::temp_dir().join(format!("tenantry-test-{}", Uuid::new_v4().simple()));
    let mut settings = test_settings(&db, dir.join("key.pem"));
    settings.database_url = Some(admin_url(&db).into()); // the superuser
    let err = tenantry::startup::Application::build(settings).await.err().expect("must refuse");
    let message = format!("{err:#}");
    assert!(message.contains("refusing to start"), "{message}");
    assert!(message.contains("app_role_superuser"), "{message}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn migrating_twice_changes_nothing() {
    let (db, client) = scratch().await;
    let before: i64 = client.query_one("select count(*) from pg_policy", &[]).await.unwrap().get(0);
    tenantry::db::migrate::run(&tenantry::db::Connector::from_url(&installer_url(&db)).unwrap())
        .await
        .unwrap();
    let after: i64 = client.query_one("select count(*) from pg_policy", &[]).await.unwrap().get(0);
    assert_eq!(before, after);
    let versions: i64 =
        client.query_one("select count(*) from refinery_schema_history", &[]).await.unwrap().get(0);
    assert_eq!(versions, tenantry::db::migrate::latest_version());
    assert!(check::run(&client, "tenantry_app").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_standing_change_that_sends_no_notification_is_reported() {
    let (_, client) = scratch().await;
    client.batch_execute("drop trigger memberships_standing_notify on memberships").await.unwrap();
    client.batch_execute("alter table api_keys disable trigger api_keys_standing_notify").await.unwrap();
    let violations = check::run(&client, "tenantry_app").await.unwrap();
    assert_eq!(rules_for(&violations, "public.memberships"), vec!["standing_change_unannounced"]);
    assert_eq!(rules_for(&violations, "public.api_keys"), vec!["standing_change_unannounced"]);
}

#[tokio::test]
async fn a_backup_role_that_can_write_is_reported() {
    let (_, client) = scratch().await;
    client.batch_execute("grant insert on workspaces to tenantry_backup").await.unwrap();
    let violations = check::run(&client, "tenantry_app").await.unwrap();
    assert_eq!(rules_for(&violations, "workspaces"), vec!["backup_role_writes"]);
}
