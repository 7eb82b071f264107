//! Master key rotation (`tenantry keys rotate-master`): every organization's data key is
//! unwrapped with the master key version it was wrapped by and wrapped again with the newest, one
//! row at a time through owner-only definer functions. Servers keep serving throughout: a
//! reader sees either the old wrapping or the new one, and decrypts either as long as its key
//! file holds both versions (add the new version everywhere first; retire the old one after).

use anyhow::Context as _;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::crypto::MasterKeys;

/// Re-wraps every data key not yet under the newest master key; returns how many it changed.
pub async fn rotate_master(client: &Client, keys: &MasterKeys, batch: i32) -> anyhow::Result<u64> {
    let current = keys.current_version();
    let list = client.prepare("select * from app.data_keys_to_rewrap($1, $2)").await?;
    let swap = client.prepare("select app.rewrap_data_key($1, $2, $3, $4, $5)").await?;
    let mut rewrapped = 0;
    loop {
        let rows = client.query(&list, &[&current, &batch]).await?;
        if rows.is_empty() {
            return Ok(rewrapped);
        }
        for row in rows {
            let (org, id): (Uuid, Uuid) = (row.get("organization_id"), row.get("id"));
            let version: i32 = row.get("master_key_version");
            let (to, wrapped) = keys.rewrap(org, id, version, row.get("wrapped_key")).with_context(|| {
                format!("the data key of organization {org} (master key version {version})")
            })?;
            if client.query_one(&swap, &[&org, &id, &version, &wrapped, &to]).await?.get::<_, bool>(0) {
                rewrapped += 1;
            }
        }
    }
}

/// How many data keys are still wrapped by a version other than `current` (through the same
/// definer function, so it works on an owner connection subject to FORCE RLS).
pub async fn remaining(client: &Client, current: i32) -> anyhow::Result<i64> {
    let row =
        client.query_one("select count(*) from app.data_keys_to_rewrap($1, 2147483647)", &[&current]).await?;
    Ok(row.get(0))
}
