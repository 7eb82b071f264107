//! Feature flag evaluation and its in-process cache.
//!
//! The rules, in the order they decide (the first that applies is the reason given):
//! 1. the platform's kill switch: off for everyone;
//! 2. the organization's deny list, then its allow list (by user id);
//! 3. the organization's on/off;
//! 4. the organization's percentage rollout: a user is in when the bucket of
//!    SHA-256(flag key, user id), 0..9999, is below percentage × 100 (sticky: the same user
//!    always lands in the same bucket, and raising the percentage only adds users);
//! 5. the platform's targeting of this organization;
//! 6. the flag's default.
//!
//! Two caches serve evaluation without a database round trip. `FlagCache` holds each
//! organization's rules as read under that organization's RLS context (never across tenants).
//! `StandingCache` holds a caller's standing (role and permissions) in an organization, exactly
//! as `app.enter_context()` reported it; it is used by flag evaluation only (every other
//! request asks the database) and is invalidated through `NOTIFY tenantry_standing`, sent by
//! every change that could alter a standing: memberships, custom role permissions, API key and
//! session revocation, suspension, region moves, user erasure. Its time-to-live (5 s) bounds the
//! one thing no row change announces: an API key reaching its `expires_at`. It is invalidated through `NOTIFY tenantry_flags` (the organization's id, or
//! `*` for a platform change), locally at once by the handler that made a change, wholesale when
//! the LISTEN connection is re-established, and otherwise after a minute as a safety net. An
//! epoch guards the race where a change lands between a cache miss's read and its store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::Row;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::db::Actor;
use crate::domain::{Membership, OrgId};

/// One flag as it applies to one organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagRule {
    pub key: String,
    pub default_enabled: bool,
    pub kill_switch: bool,
    pub org: Option<OrgConfig>,
    /// The platform's targeting of this organization.
    pub target: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OrgConfig {
    pub enabled: Option<bool>,
    pub rollout_percentage: Option<i32>,
    pub allow_users: Vec<Uuid>,
    pub deny_users: Vec<Uuid>,
}

/// The rule that decided a flag's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    KillSwitch,
    UserDenied,
    UserAllowed,
    OrganizationOff,
    OrganizationOn,
    PercentageRollout,
    OrganizationTargeted,
    Default,
}

/// The SQL a cache miss runs (in the organization's context): every platform flag with this
/// organization's configuration and targeting. `$1` is the organization.
pub const RULES_SQL: &str = "select f.key, f.default_enabled, f.kill_switch, \
       c.flag_key is not null as configured, c.enabled, c.rollout_percentage, c.allow_users, c.deny_users, \
       t.enabled as targeted \
     from feature_flags f \
     left join organization_flags c on c.organization_id = $1 and c.flag_key = f.key \
     left join feature_flag_targets t on t.organization_id = $1 and t.flag_key = f.key \
     order by f.key";

pub fn rule_from_row(row: &Row) -> FlagRule {
    FlagRule {
        key: row.get("key"),
        default_enabled: row.get("default_enabled"),
        kill_switch: row.get("kill_switch"),
        org: row.get::<_, bool>("configured").then(|| OrgConfig {
            enabled: row.get("enabled"),
            rollout_percentage: row.get("rollout_percentage"),
            allow_users: row.get("allow_users"),
            deny_users: row.get("deny_users"),
        }),
        target: row.get("targeted"),
    }
}

/// The user's sticky bucket for a flag, 0..9999.
pub fn bucket(flag_key: &str, subject: Uuid) -> u32 {
    let mut input = Vec::with_capacity(flag_key.len() + 17);
    input.extend_from_slice(flag_key.as_bytes());
    input.push(0); // a separator no key contains
    input.extend_from_slice(subject.as_bytes());
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &input);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    (u64::from_be_bytes(first) % 10_000) as u32
}

/// A flag's value for a caller: `user` for the allow and deny lists (none for an API key),
/// `subject` (the user, or the API key) for the percentage.
pub fn evaluate(rule: &FlagRule, user: Option<Uuid>, subject: Uuid) -> (bool, Reason) {
    if rule.kill_switch {
        return (false, Reason::KillSwitch);
    }
    if let Some(config) = &rule.org {
        if let Some(user) = user {
            if config.deny_users.contains(&user) {
                return (false, Reason::UserDenied);
            }
            if config.allow_users.contains(&user) {
                return (true, Reason::UserAllowed);
            }
        }
        match config.enabled {
            Some(false) => return (false, Reason::OrganizationOff),
            Some(true) => return (true, Reason::OrganizationOn),
            None => {}
        }
        if let Some(percentage) = config.rollout_percentage {
            let threshold = u32::try_from(percentage.clamp(0, 100)).unwrap_or(0) * 100;
            return (bucket(&rule.key, subject) < threshold, Reason::PercentageRollout);
        }
    }
    if let Some(enabled) = rule.target {
        return (enabled, Reason::OrganizationTargeted);
    }
    (rule.default_enabled, Reason::Default)
}

/// One organization's rules, shared by the requests that evaluate them.
pub type Rules = Arc<Vec<FlagRule>>;

/// Organizations' rules, by organization.
pub struct FlagCache {
    entries: RwLock<HashMap<OrgId, (Instant, Rules)>>,
    epoch: AtomicU64,
    ttl: Duration,
    capacity: usize,
}

impl Default for FlagCache {
    fn default() -> Self {
        FlagCache::new(Duration::from_secs(60), 100_000)
    }
}

impl FlagCache {
    pub fn new(ttl: Duration, capacity: usize) -> FlagCache {
        FlagCache { entries: RwLock::new(HashMap::new()), epoch: AtomicU64::new(0), ttl, capacity }
    }

    /// Read before a cache miss's database read; pass to `insert`.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn get(&self, org: OrgId) -> Option<Rules> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(&org).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, rules)| rules.clone())
    }

    /// Stores rules read at `epoch`, unless an invalidation happened since (they may be stale).
    pub fn insert(&self, org: OrgId, rules: Rules, epoch: u64) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert(org, (Instant::now(), rules));
    }

    /// Forgets one organization's rules, or everyone's.
    pub fn invalidate(&self, org: Option<OrgId>) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        match org {
            Some(org) => {
                entries.remove(&org);
            }
            None => entries.clear(),
        }
    }

    /// A `tenantry_flags` notification's payload: an organization id, or `*`.
    pub fn on_notification(&self, payload: &str) {
        match payload.parse::<Uuid>() {
            Ok(org) => self.invalidate(Some(OrgId(org))),
            Err(_) => self.invalidate(None),
        }
    }
}

/// Callers' standing in organizations, for flag evaluation only.
pub struct StandingCache {
    entries: RwLock<HashMap<(Actor, OrgId), (Instant, Membership)>>,
    epoch: AtomicU64,
    ttl: Duration,
    capacity: usize,
}

impl Default for StandingCache {
    fn default() -> Self {
        StandingCache {
            entries: RwLock::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            ttl: Duration::from_secs(5),
            capacity: 100_000,
        }
    }
}

impl StandingCache {
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn get(&self, actor: Actor, org: OrgId) -> Option<Membership> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(&(actor, org)).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, m)| m.clone())
    }

    /// Stores a standing the database reported at `epoch`, unless something changed since.
    pub fn insert(&self, actor: Actor, org: OrgId, membership: Membership, epoch: u64) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if self.epoch.load(Ordering::Acquire) != epoch {
            return;
        }
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert((actor, org), (Instant::now(), membership));
    }

    /// A `tenantry_standing` payload: an organization id, or `*` (or the LISTEN connection was
    /// re-established: `None`) for everything.
    pub fn invalidate(&self, payload: Option<&str>) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        match payload.and_then(|p| p.parse::<Uuid>().ok()) {
            Some(org) => entries.retain(|(_, o), _| o.0 != org),
            None => entries.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(org: Option<OrgConfig>) -> FlagRule {
        FlagRule { key: "new-editor".into(), default_enabled: false, kill_switch: false, org, target: None }
    }

    #[test]
    fn rules_apply_in_order_and_the_kill_switch_beats_them_all() {
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let config = OrgConfig {
            enabled: Some(false),
            allow_users: vec![alice],
            deny_users: vec![bob],
            ..Default::default()
        };
        let mut flag = rule(Some(config));
        assert_eq!(evaluate(&flag, Some(alice), alice), (true, Reason::UserAllowed));
        assert_eq!(evaluate(&flag, Some(bob), bob), (false, Reason::UserDenied));
        let carol = Uuid::new_v4();
        assert_eq!(evaluate(&flag, Some(carol), carol), (false, Reason::OrganizationOff));
        flag.kill_switch = true;
        assert_eq!(evaluate(&flag, Some(alice), alice), (false, Reason::KillSwitch));
        let mut flag = rule(None);
        flag.target = Some(true);
        assert_eq!(evaluate(&flag, Some(carol), carol), (true, Reason::OrganizationTargeted));
        assert_eq!(evaluate(&rule(None), None, carol), (false, Reason::Default));
    }

    #[test]
    fn buckets_are_sticky_and_raising_the_percentage_only_adds_users() {
        let users: Vec<Uuid> = (0..2000).map(|_| Uuid::new_v4()).collect();
        let at = |p: i32| {
            let flag = rule(Some(OrgConfig { rollout_percentage: Some(p), ..Default::default() }));
            users.iter().filter(|u| evaluate(&flag, Some(**u), **u).0).copied().collect::<Vec<_>>()
        };
        let (ten, thirty) = (at(10), at(30));
        assert!(ten.iter().all(|u| thirty.contains(u)));
        assert_eq!(at(10), ten);
        assert!(at(0).is_empty());
        assert_eq!(at(100).len(), users.len());
        // Another flag buckets the same user independently.
        let u = users[0];
        let other = (0..64).any(|i| bucket(&format!("flag-{i}"), u) != bucket("new-editor", u));
        assert!(other);
    }

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_stored() {
        let cache = FlagCache::default();
        let org = OrgId(Uuid::new_v4());
        let epoch = cache.epoch();
        cache.on_notification(&org.to_string());
        cache.insert(org, Arc::new(vec![]), epoch);
        assert!(cache.get(org).is_none(), "stale rules were stored");
        cache.insert(org, Arc::new(vec![]), cache.epoch());
        assert!(cache.get(org).is_some());
        cache.on_notification("*");
        assert!(cache.get(org).is_none());
    }
}
