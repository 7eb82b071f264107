//! Security events: one structured log line each, under the `tenantry::security` target, so a
//! subscriber (and later the audit log) can route them without parsing messages. Never carries a
//! token, key or secret: only ids.

use uuid::Uuid;

use crate::domain::{OrgId, UserId};

#[derive(Debug, Clone, Copy)]
pub enum SecurityEvent<'a> {
    SignIn {
        user: UserId,
        session: Uuid,
        provider: &'a str,
    },
    SignInFailed {
        provider: &'a str,
        reason: &'a str,
    },
    SessionRefreshed {
        user: UserId,
        session: Uuid,
    },
    RefreshTokenReuse {
        user: UserId,
        session: Uuid,
    },
    RefreshFailed {
        reason: &'a str,
    },
    SessionExpired {
        user: UserId,
        session: Uuid,
    },
    Logout {
        user: UserId,
        session: Uuid,
    },
    SessionRevoked {
        user: UserId,
        session: Uuid,
    },
    ApiKeyCreated {
        org: OrgId,
        key: Uuid,
        by: UserId,
    },
    ApiKeyRevoked {
        org: OrgId,
        key: Uuid,
        by: UserId,
    },
    ApiKeyRefused {
        reason: &'a str,
    },
    /// A stored provider key (or its organization's data key) did not decrypt: tampering,
    /// corruption, or a master key missing from this process.
    ProviderKeyUnreadable {
        org: OrgId,
        workspace: Uuid,
        provider: &'a str,
        reason: &'a str,
    },
}

impl SecurityEvent<'_> {
    pub fn name(&self) -> &'static str {
        match self {
            SecurityEvent::SignIn { .. } => "auth.sign_in",
            SecurityEvent::SignInFailed { .. } => "auth.sign_in_failed",
            SecurityEvent::SessionRefreshed { .. } => "auth.session_refreshed",
            SecurityEvent::RefreshTokenReuse { .. } => "auth.refresh_token_reuse",
            SecurityEvent::RefreshFailed { .. } => "auth.refresh_failed",
            SecurityEvent::SessionExpired { .. } => "auth.session_expired",
            SecurityEvent::Logout { .. } => "auth.logout",
            SecurityEvent::SessionRevoked { .. } => "auth.session_revoked",
            SecurityEvent::ApiKeyCreated { .. } => "api_key.created",
            SecurityEvent::ApiKeyRevoked { .. } => "api_key.revoked",
            SecurityEvent::ApiKeyRefused { .. } => "api_key.refused",
            SecurityEvent::ProviderKeyUnreadable { .. } => "provider_key.unreadable",
        }
    }
}

pub fn emit(event: SecurityEvent<'_>) {
    let name = event.name();
    match event {
        SecurityEvent::SignIn { user, session, provider } => {
            tracing::info!(target: "tenantry::security", event = name, user.id = %user, session.id = %session, provider)
        }
        SecurityEvent::SignInFailed { provider, reason } => {
            tracing::warn!(target: "tenantry::security", event = name, provider, reason)
        }
        SecurityEvent::SessionRefreshed { user, session }
        | SecurityEvent::SessionExpired { user, session }
        | SecurityEvent::Logout { user, session }
        | SecurityEvent::SessionRevoked { user, session } => {
            tracing::info!(target: "tenantry::security", event = name, user.id = %user, session.id = %session)
        }
        SecurityEvent::RefreshTokenReuse { user, session } => {
            tracing::warn!(target: "tenantry::security", event = name, user.id = %user, session.id = %session)
        }
        SecurityEvent::RefreshFailed { reason } | SecurityEvent::ApiKeyRefused { reason } => {
            tracing::info!(target: "tenantry::security", event = name, reason)
        }
        SecurityEvent::ApiKeyCreated { org, key, by } | SecurityEvent::ApiKeyRevoked { org, key, by } => {
            tracing::info!(target: "tenantry::security", event = name, org.id = %org, api_key.id = %key, user.id = %by)
        }
        SecurityEvent::ProviderKeyUnreadable { org, workspace, provider, reason } => {
            tracing::error!(target: "tenantry::security", event = name, org.id = %org, workspace.id = %workspace, provider, reason)
        }
    }
}
