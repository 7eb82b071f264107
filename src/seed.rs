//! `tenantry seed`: a demo to explore in Swagger UI. Two organizations, users in every role, a
//! few workspaces. It goes through the same app role, definer functions and policies as the
//! API (no bypass), and is idempotent: organizations that exist are left alone.

use crate::db::Db;

use crate::db::{Actor, TenantTx};
use crate::domain::{OrgId, Role, UserId};

pub struct DemoUser {
    pub email: &'static str,
    pub memberships: &'static str,
}

struct DemoOrg {
    /// Fixed, so demo configuration (such as an identity provider's role mapping) can name it.
    id: uuid::Uuid,
    name: &'static str,
    slug: &'static str,
    region: &'static str,
    owner: &'static str,
    members: &'static [(&'static str, Role)],
    workspaces: &'static [&'static str],
    /// Roles the demo identity provider (`demo`, in `make run`) may grant here.
    provider_roles: &'static [&'static str],
}

/// The demo Acme organization's id.
pub const ACME_ID: uuid::Uuid = uuid::Uuid::from_u128(0x0a00_0000_0000_4000_8000_0000_0000_0001);

pub const USERS: &[DemoUser] = &[
    DemoUser { email: "alice@acme.test", memberships: "owner of Acme, viewer in Globex" },
    DemoUser { email: "bob@acme.test", memberships: "admin of Acme" },
    DemoUser { email: "carol@acme.test", memberships: "editor in Acme" },
    DemoUser { email: "dave@acme.test", memberships: "viewer in Acme" },
    DemoUser { email: "erin@globex.test", memberships: "owner of Globex" },
];

const ORGS: &[DemoOrg] = &[
    DemoOrg {
        id: ACME_ID,
        name: "Acme Inc.",
        slug: "acme",
        region: "us",
        owner: "alice@acme.test",
        members: &[
            ("bob@acme.test", Role::Admin),
            ("carol@acme.test", Role::Editor),
            ("dave@acme.test", Role::Viewer),
        ],
        workspaces: &["Production", "Staging"],
        provider_roles: &["admin"],
    },
    DemoOrg {
        id: uuid::Uuid::from_u128(0x0a00_0000_0000_4000_8000_0000_0000_0002),
        name: "Globex Corporation",
        slug: "globex",
        region: "eu",
        owner: "erin@globex.test",
        members: &[("alice@acme.test", Role::Viewer)],
        workspaces: &["Research"],
        provider_roles: &[],
    },
];

/// Development tokens use the email as subject under our own issuer.
pub fn subject_for(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

pub async fn run(pool: &Db, issuer: &str) -> anyhow::Result<()> {
    let mut ids = std::collections::HashMap::new();
    for user in USERS {
        let id = crate::db::identity::provision_user(
            pool,
            issuer,
            &subject_for(user.email),
            Some(user.email),
            None,
        )
        .await?;
        ids.insert(user.email, UserId(id.0));
    }
    for org in ORGS {
        let owner = ids[org.owner];
        // Each demo organization is written in its own region's context.
        let region = crate::domain::Region::from_db(org.region)
            .ok_or_else(|| anyhow::anyhow!("bad demo region {}", org.region))?;
        let db = pool.in_region(region);
        let pool = &db;
        let mut tx = TenantTx::begin_user(pool, Actor::user(owner)).await?;
        let existing =
            tx.query_opt("select id from app.caller_organizations() where slug = $1", &[&org.slug]).await?;
        if existing.is_some() {
            tx.commit().await?;
            continue;
        }
        let org_id = OrgId(org.id);
        tx.query_found(
            "select app.create_organization($1, $2, $3, $4, 'metadata_only')",
            &[org_id.as_uuid(), &org.name, &org.slug, &org.region],
        )
        .await?;
        tx.commit().await?;
        let (mut tx, _) = TenantTx::begin_org(pool, Actor::user(owner), org_id).await?;
        for (email, role) in org.members {
            tx.execute(
                "insert into memberships (organization_id, user_id, role) values ($1, $2, $3)",
                &[org_id.as_uuid(), ids[email].as_uuid(), &role.as_str()],
            )
            .await?;
        }
        // `make run`'s demo identity provider maps its `acme-admins` group to admin of Acme; the
        // organization consents to that, as an owner would through the API.
        for role in org.provider_roles {
            tx.execute(
                "insert into provider_grants (organization_id, id, provider, role, granted_by) \
                 values ($1, gen_random_uuid(), 'demo', $2, $3) on conflict do nothing",
                &[org_id.as_uuid(), role, owner.as_uuid()],
            )
            .await?;
        }
        for name in org.workspaces {
            tx.execute(
                "insert into workspaces (organization_id, id, name) values ($1, $2, $3)",
                &[org_id.as_uuid(), crate::domain::WorkspaceId::new().as_uuid(), name],
            )
            .await?;
        }
        tx.commit().await?;
        tracing::info!(slug = org.slug, "seeded organization");
    }
    Ok(())
}
