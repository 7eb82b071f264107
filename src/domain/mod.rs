//! Values that are valid by construction. Anything that reaches a repository function has
//! already been parsed into one of these, so SQL only ever sees well-formed values.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// A field that failed validation, named as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into() }
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
        #[serde(transparent)]
        #[schema(value_type = uuid::Uuid)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new() -> Self {
                // v7: time-ordered, so ids double as a stable pagination order and index well.
                $name(Uuid::now_v7())
            }
            pub fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// An organization (tenant) id.
    OrgId
);
id_type!(
    /// A user id.
    UserId
);
id_type!(
    /// A workspace id.
    WorkspaceId
);

/// A URL-safe organization handle: lowercase letters, digits and inner hyphens, 1 to 63 chars.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", example = "acme")]
pub struct Slug(String);

impl Slug {
    pub fn parse(field: &'static str, raw: &str) -> Result<Slug, FieldError> {
        let ok = (1..=63).contains(&raw.len())
            && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !raw.starts_with('-')
            && !raw.ends_with('-');
        if ok {
            Ok(Slug(raw.to_owned()))
        } else {
            Err(FieldError::new(
                field,
                "must be 1-63 lowercase letters, digits or hyphens, not starting or ending with a hyphen",
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A human-readable name: trimmed, 1 to 200 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, min_length = 1, max_length = 200)]
pub struct Name(String);

impl Name {
    pub fn parse(field: &'static str, raw: &str) -> Result<Name, FieldError> {
        let trimmed = raw.trim();
        let chars = trimmed.chars().count();
        if chars == 0 || chars > 200 {
            return Err(FieldError::new(field, "must be between 1 and 200 characters"));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(FieldError::new(field, "must not contain control characters"));
        }
        Ok(Name(trimmed.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(&self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            /// Parses the database's text form; `None` for anything else.
            pub fn from_db(text: &str) -> Option<$name> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// Where an organization's data lives.
    Region { Us => "us", Eu => "eu" }
);
string_enum!(
    /// Whether content (not just metadata) may be persisted for an organization.
    DataMode { MetadataOnly => "metadata_only", Full => "full" }
);
string_enum!(
    /// A built-in organization role. What each grants is defined once, in SQL
    /// (`builtin_role_permissions`), and read back with the membership on every request.
    Role {
        Owner => "owner",
        Admin => "admin",
        Editor => "editor",
        Approver => "approver",
        Viewer => "viewer",
        Auditor => "auditor",
        BillingAdmin => "billing_admin",
        IntegrationAdmin => "integration_admin",
        Custom => "custom",
    }
);

impl Role {
    /// The built-in roles (everything but `custom`, which names one of the organization's roles).
    pub fn builtin() -> impl Iterator<Item = Role> {
        Role::ALL.iter().copied().filter(|r| *r != Role::Custom)
    }

    /// owner > admin > editor > approver > the specialist roles > viewer. When several rules
    /// grant roles in one organization, the highest wins (ties: the first).
    pub fn rank(&self) -> u8 {
        match self {
            Role::Owner => 5,
            Role::Admin => 4,
            Role::Editor => 3,
            Role::Approver => 2,
            Role::Auditor | Role::BillingAdmin | Role::IntegrationAdmin | Role::Custom => 1,
            Role::Viewer => 0,
        }
    }
}

/// Times a client may name (filters, expiries): 1970 to 9999. Wider values parse, but date
/// arithmetic on them overflows and PostgreSQL refuses some of them, so they are refused here
/// with a 422 before anything else sees them.
pub fn supported_date(field: &str, date: chrono::NaiveDate) -> Result<chrono::NaiveDate, FieldError> {
    use chrono::Datelike as _;
    if (1970..=9999).contains(&date.year()) {
        Ok(date)
    } else {
        Err(FieldError::new(field, "must be a date between 1970-01-01 and 9999-12-31"))
    }
}

/// As `supported_date`, for a point in time.
pub fn supported_time(
    field: &str,
    time: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>, FieldError> {
    supported_date(field, time.date_naive())
        .map(|_| time)
        .map_err(|_| FieldError::new(field, "must be a time between 1970 and 9999"))
}

/// Named operation permissions, as in the `permissions` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    OrgRead,
    OrgUpdate,
    OrgDelete,
    MembersRead,
    MembersManage,
    OwnersManage,
    WorkspacesRead,
    WorkspacesWrite,
    WorkspacesDelete,
    ApiKeysManage,
    AuditRead,
    RolesManage,
    OrgExport,
    WorkflowsRead,
    WorkflowsWrite,
    WorkflowsPublish,
    RunsExecute,
    ProviderKeysManage,
    FlagsRead,
    FlagsWrite,
    BillingRead,
    BillingManage,
    EventsRead,
    WebhooksManage,
}

impl Permission {
    pub fn as_str(&self) -> &'static str {
        match self {
            Permission::OrgRead => "org:read",
            Permission::OrgUpdate => "org:update",
            Permission::OrgDelete => "org:delete",
            Permission::MembersRead => "members:read",
            Permission::MembersManage => "members:manage",
            Permission::OwnersManage => "owners:manage",
            Permission::WorkspacesRead => "workspaces:read",
            Permission::WorkspacesWrite => "workspaces:write",
            Permission::WorkspacesDelete => "workspaces:delete",
            Permission::ApiKeysManage => "api_keys:manage",
            Permission::AuditRead => "audit:read",
            Permission::RolesManage => "roles:manage",
            Permission::OrgExport => "org:export",
            Permission::WorkflowsRead => "workflows:read",
            Permission::WorkflowsWrite => "workflows:write",
            Permission::WorkflowsPublish => "workflows:publish",
            Permission::RunsExecute => "runs:execute",
            Permission::ProviderKeysManage => "provider_keys:manage",
            Permission::FlagsRead => "flags:read",
            Permission::FlagsWrite => "flags:write",
            Permission::BillingRead => "billing:read",
            Permission::BillingManage => "billing:manage",
            Permission::EventsRead => "events:read",
            Permission::WebhooksManage => "webhooks:manage",
        }
    }
}

/// The caller's standing in the organization of the request, as the database reports it: a
/// member's role and its permissions, or an API key's scopes (no role).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub org_id: OrgId,
    pub role: Option<Role>,
    pub permissions: Vec<String>,
}

impl Membership {
    pub fn has(&self, permission: Permission) -> bool {
        self.permissions.iter().any(|p| p == permission.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_validated() {
        assert!(Slug::parse("slug", "acme-2").is_ok());
        for bad in ["", "-acme", "acme-", "Acme", "ac me", "a_b", &"a".repeat(64), "ü"] {
            assert!(Slug::parse("slug", bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(Name::parse("name", "  Acme ").unwrap().as_str(), "Acme");
        assert!(Name::parse("name", "   ").is_err());
        assert!(Name::parse("name", &"x".repeat(201)).is_err());
        assert!(Name::parse("name", "a\u{0}b").is_err());
    }

    #[test]
    fn dates_outside_1970_to_9999_are_refused() {
        let date = |y, m, d| chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap();
        assert!(supported_date("to", date(2026, 12, 1)).is_ok());
        assert!(supported_date("to", date(1970, 1, 1)).is_ok());
        assert!(supported_date("to", date(-262_143, 1, 1)).is_err());
        assert!(supported_date("to", chrono::NaiveDate::MAX).is_err());
        assert!(supported_time("since", chrono::DateTime::<chrono::Utc>::MIN_UTC).is_err());
    }

    #[test]
    fn role_text_round_trips() {
        for role in Role::ALL {
            assert_eq!(Role::from_db(role.as_str()), Some(*role));
        }
        assert_eq!(Role::from_db("superuser"), None);
    }
}
