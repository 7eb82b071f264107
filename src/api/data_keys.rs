//! Each organization's data key for envelope encryption (`crate::crypto`): created and wrapped
//! by the newest master key on first use, unwrapped when a secret of the organization is sealed
//! or opened (provider keys, webhook signing secrets). Crypto failures are returned to the caller,
//! which reports them for its own kind of secret.

use uuid::Uuid;

use crate::api::ApiError;
use crate::crypto::{CryptoError, DataKey, MasterKeys};
use crate::db::TenantTx;
use crate::domain::OrgId;

/// The organization's data key, created (and wrapped by the newest master key) on first use.
pub async fn data_key_or_create(
    tx: &mut TenantTx,
    keys: &MasterKeys,
    org: OrgId,
) -> Result<Result<(Uuid, DataKey), CryptoError>, ApiError> {
    const SELECT: &str =
        "select id, wrapped_key, master_key_version from organization_data_keys where organization_id = $1";
    let row = match tx.query_opt(SELECT, &[org.as_uuid()]).await? {
        Some(row) => row,
        None => {
            let id = Uuid::now_v7();
            let data_key = DataKey::generate().map_err(|e| ApiError::Internal(e.into()))?;
            let (version, wrapped) =
                keys.wrap(org.0, id, &data_key).map_err(|e| ApiError::Internal(e.into()))?;
            let inserted = tx
                .query_opt(
                    "insert into organization_data_keys (organization_id, id, wrapped_key, master_key_version) \
                     values ($1, $2, $3, $4) on conflict (organization_id) do nothing returning id",
                    &[org.as_uuid(), &id, &wrapped, &version],
                )
                .await?;
            if inserted.is_some() {
                return Ok(Ok((id, data_key)));
            }
            // A concurrent first write created it: use theirs.
            tx.query_found(SELECT, &[org.as_uuid()]).await?
        }
    };
    let id: Uuid = row.get("id");
    Ok(keys.unwrap(org.0, id, row.get("master_key_version"), row.get("wrapped_key")).map(|key| (id, key)))
}

/// The data key `key_id` of the organization (a stored secret names the key it was sealed with).
pub async fn data_key(
    tx: &mut TenantTx,
    keys: &MasterKeys,
    org: OrgId,
    key_id: Uuid,
) -> Result<Result<DataKey, CryptoError>, ApiError> {
    let row = tx
        .query_found(
            "select wrapped_key, master_key_version from organization_data_keys where organization_id = $1 and id = $2",
            &[org.as_uuid(), &key_id],
        )
        .await?;
    Ok(keys.unwrap(org.0, key_id, row.get("master_key_version"), row.get("wrapped_key")))
}
