//! Envelope encryption for secrets tenants hand us (their LLM provider keys), with aws-lc-rs
//! AES-256-GCM. Each organization has one random 256-bit data key; the database stores it only
//! wrapped by a master key, which lives in configuration or a file, never in the database.
//! Master keys are versioned, so a new one can be introduced and every data key re-wrapped
//! (`tenantry keys rotate-master`) while servers keep decrypting with either version.
//!
//! Every ciphertext carries associated data naming where it belongs (organization and data key
//! for a wrapped key; organization, workspace and provider for a provider key). A ciphertext
//! moved to another row, or altered by a single bit, does not decrypt: it fails closed.

use std::collections::BTreeMap;
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use uuid::Uuid;
use zeroize::Zeroizing;

pub const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// Wrapped by a master key version this process does not hold.
    #[error("master key version {0} is not configured")]
    UnknownMasterKey(i32),
    /// Altered, moved or truncated ciphertext, or the wrong key. Deliberately says no more.
    #[error("decryption failed")]
    Decrypt,
    #[error("the system random number generator failed")]
    Random,
}

/// N bytes from the system's secure random number generator.
pub fn random<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut bytes = [0u8; N];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| CryptoError::Random)?;
    Ok(bytes)
}

fn aead_key(bytes: &[u8]) -> LessSafeKey {
    // The only failure is a wrong length, excluded by the callers' fixed-size arrays.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("a 32-byte AES-256 key"))
}

/// Encrypts with a fresh random nonce: (nonce, ciphertext || tag).
fn seal(key: &LessSafeKey, aad: &[u8], plaintext: &[u8]) -> Result<([u8; NONCE_LEN], Vec<u8>), CryptoError> {
    let nonce = random::<NONCE_LEN>()?;
    let mut in_out = plaintext.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut in_out)
        .map_err(|_| CryptoError::Decrypt)?;
    Ok((nonce, in_out))
}

fn open(
    key: &LessSafeKey,
    aad: &[u8],
    nonce: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Decrypt)?;
    let mut in_out = Zeroizing::new(ciphertext.to_vec());
    let len = key.open_in_place(nonce, Aad::from(aad), &mut in_out).map_err(|_| CryptoError::Decrypt)?.len();
    in_out.truncate(len);
    Ok(in_out)
}

/// An organization's data key, in memory only while it is used (zeroed when dropped).
pub struct DataKey(Zeroizing<[u8; KEY_LEN]>);

impl DataKey {
    pub fn generate() -> Result<DataKey, CryptoError> {
        Ok(DataKey(Zeroizing::new(random::<KEY_LEN>()?)))
    }

    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<([u8; NONCE_LEN], Vec<u8>), CryptoError> {
        seal(&aead_key(self.0.as_ref()), aad, plaintext)
    }

    pub fn open(
        &self,
        aad: &[u8],
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        open(&aead_key(self.0.as_ref()), aad, nonce, ciphertext)
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

fn wrap_aad(org: Uuid, key_id: Uuid) -> Vec<u8> {
    format!("tenantry/data-key/v1/{org}/{key_id}").into_bytes()
}

/// The master keys this process holds, by version; new data keys are wrapped by the newest.
pub struct MasterKeys {
    keys: BTreeMap<i32, LessSafeKey>,
}

impl std::fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKeys").field("versions", &self.keys.keys().collect::<Vec<_>>()).finish()
    }
}

impl MasterKeys {
    /// Parses `VERSION:BASE64` entries (32-byte keys), one per line or separated by commas;
    /// `#` starts a comment. Never echoes key material in errors.
    pub fn parse(text: &str) -> anyhow::Result<MasterKeys> {
        let mut keys = BTreeMap::new();
        for (i, entry) in text
            .lines()
            .map(|l| l.split('#').next().unwrap_or_default())
            .flat_map(|l| l.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let (version, key) = entry
                .split_once(':')
                .ok_or_else(|| anyhow::anyhow!("master key entry {} is not VERSION:BASE64", i + 1))?;
            let version: i32 = version.trim().parse().ok().filter(|v| *v >= 1).ok_or_else(|| {
                anyhow::anyhow!("master key entry {}: the version must be a positive number", i + 1)
            })?;
            let bytes = Zeroizing::new(STANDARD.decode(key.trim()).unwrap_or_default());
            anyhow::ensure!(
                bytes.len() == KEY_LEN,
                "master key version {version}: the key must be 32 bytes, base64-encoded"
            );
            anyhow::ensure!(
                keys.insert(version, aead_key(&bytes)).is_none(),
                "master key version {version} is given twice"
            );
        }
        anyhow::ensure!(!keys.is_empty(), "no master key configured");
        Ok(MasterKeys { keys })
    }

    /// Reads the key file; in development a missing file is created with a random version 1.
    pub fn load_or_generate(path: &Path, allow_generate: bool) -> anyhow::Result<MasterKeys> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && allow_generate => {
                let line = Zeroizing::new(format!("1:{}\n", STANDARD.encode(random::<KEY_LEN>()?)));
                match write_new_private(path, line.as_bytes()) {
                    Ok(()) => {
                        tracing::info!(path = %path.display(), "generated a development master key");
                        Self::parse(&line)
                    }
                    // A server and a worker started together: the first one's key is everyone's.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::load_or_generate(path, false)
                    }
                    Err(e) => Err(anyhow::anyhow!("writing the master key file {}: {e}", path.display())),
                }
            }
            Err(e) => Err(anyhow::anyhow!("cannot read the master key file {}: {e}", path.display())),
        }
    }

    /// Appends a new random version to a key file; returns the version.
    pub fn add_version_to_file(path: &Path) -> anyhow::Result<i32> {
        let existing = std::fs::read_to_string(path).unwrap_or_default();
        let next = if existing.trim().is_empty() { 1 } else { Self::parse(&existing)?.current_version() + 1 };
        let mut text = Zeroizing::new(existing);
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("{next}:{}\n", STANDARD.encode(random::<KEY_LEN>()?)));
        write_private(path, text.as_bytes())?;
        Ok(next)
    }

    pub fn current_version(&self) -> i32 {
        self.keys.keys().next_back().copied().unwrap_or(0)
    }

    pub fn versions(&self) -> Vec<i32> {
        self.keys.keys().copied().collect()
    }

    /// Wraps `data_key` for `org` under the newest master key: (version, nonce || ciphertext).
    pub fn wrap(&self, org: Uuid, key_id: Uuid, data_key: &DataKey) -> Result<(i32, Vec<u8>), CryptoError> {
        let version = self.current_version();
        self.wrap_with(version, org, key_id, data_key).map(|wrapped| (version, wrapped))
    }

    fn wrap_with(
        &self,
        version: i32,
        org: Uuid,
        key_id: Uuid,
        data_key: &DataKey,
    ) -> Result<Vec<u8>, CryptoError> {
        let master = self.keys.get(&version).ok_or(CryptoError::UnknownMasterKey(version))?;
        let (nonce, ciphertext) = seal(master, &wrap_aad(org, key_id), data_key.0.as_ref())?;
        let mut wrapped = nonce.to_vec();
        wrapped.extend_from_slice(&ciphertext);
        Ok(wrapped)
    }

    pub fn unwrap(
        &self,
        org: Uuid,
        key_id: Uuid,
        version: i32,
        wrapped: &[u8],
    ) -> Result<DataKey, CryptoError> {
        let master = self.keys.get(&version).ok_or(CryptoError::UnknownMasterKey(version))?;
        if wrapped.len() < NONCE_LEN {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, ciphertext) = wrapped.split_at(NONCE_LEN);
        let plain = open(master, &wrap_aad(org, key_id), nonce, ciphertext)?;
        let bytes: [u8; KEY_LEN] = plain.as_slice().try_into().map_err(|_| CryptoError::Decrypt)?;
        Ok(DataKey(Zeroizing::new(bytes)))
    }

    /// Unwraps with the key's version and wraps again with the newest: for rotation.
    pub fn rewrap(
        &self,
        org: Uuid,
        key_id: Uuid,
        version: i32,
        wrapped: &[u8],
    ) -> Result<(i32, Vec<u8>), CryptoError> {
        let data_key = self.unwrap(org, key_id, version, wrapped)?;
        self.wrap(org, key_id, &data_key)
    }
}

/// Writes `contents` to a temporary file of this process only (mode 0600), complete and synced.
fn write_temporary(path: &Path, contents: &[u8]) -> std::io::Result<std::path::PathBuf> {
    use std::io::Write as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp.{}.{}", std::process::id(), hex_suffix()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(tmp)
}

fn hex_suffix() -> String {
    random::<4>().map(|b| b.iter().map(|x| format!("{x:02x}")).collect()).unwrap_or_default()
}

/// Replaces `path` with `contents` atomically.
fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let tmp = write_temporary(path, contents)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(())
}

/// Creates `path` with `contents`, complete or not at all; `AlreadyExists` when another
/// process created it first (a hard link, unlike a rename, never replaces a file).
fn write_new_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = write_temporary(path, contents)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str) -> MasterKeys {
        MasterKeys::parse(text).unwrap()
    }

    #[test]
    fn processes_generating_the_development_key_at_once_all_get_the_same_one() {
        let dir = std::env::temp_dir().join(format!("tenantry-mk-{}-{}", std::process::id(), hex_suffix()));
        let path = dir.join("master-keys");
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || {
                    MasterKeys::load_or_generate(&path, true).map(|k| k.current_version())
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(results.iter().all(|r| matches!(r, Ok(1))), "every caller got the key: {results:?}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "one key, written once");
        let leftovers: Vec<_> =
            std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn data_keys_round_trip_and_fail_closed_when_moved_or_altered() {
        let v1 = format!("1:{}", STANDARD.encode([1u8; 32]));
        let both = format!("{v1}\n2:{}", STANDARD.encode([2u8; 32]));
        let (org, other_org, id) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let data_key = DataKey::generate().unwrap();
        let (version, wrapped) = keys(&v1).wrap(org, id, &data_key).unwrap();
        assert_eq!(version, 1);
        let (nonce, sealed) = data_key.seal(b"aad", b"sk-secret").unwrap();

        // Rotation: version 2 is newest; the re-wrapped key still opens the same ciphertext.
        let (version, rewrapped) = keys(&both).rewrap(org, id, 1, &wrapped).unwrap();
        assert_eq!(version, 2);
        let reopened = keys(&both).unwrap(org, id, 2, &rewrapped).unwrap();
        assert_eq!(reopened.open(b"aad", &nonce, &sealed).unwrap().as_slice(), b"sk-secret");

        assert!(matches!(keys(&v1).unwrap(org, id, 2, &rewrapped), Err(CryptoError::UnknownMasterKey(2))));
        assert!(matches!(keys(&v1).unwrap(other_org, id, 1, &wrapped), Err(CryptoError::Decrypt)));
        let mut flipped = wrapped.clone();
        flipped[20] ^= 1;
        assert!(matches!(keys(&v1).unwrap(org, id, 1, &flipped), Err(CryptoError::Decrypt)));
        assert!(reopened.open(b"other aad", &nonce, &sealed).is_err());
        let mut tampered = sealed.clone();
        tampered[0] ^= 0x80;
        assert!(reopened.open(b"aad", &nonce, &tampered).is_err());
    }

    #[test]
    fn master_key_files_are_validated_without_echoing_keys() {
        let secret = STANDARD.encode([7u8; 31]);
        let err = MasterKeys::parse(&format!("1:{secret}")).unwrap_err().to_string();
        assert!(err.contains("32 bytes") && !err.contains(&secret), "{err}");
        assert!(MasterKeys::parse("").is_err());
        assert!(MasterKeys::parse("0:AAAA").is_err());
        let one = STANDARD.encode([1u8; 32]);
        assert!(MasterKeys::parse(&format!("1:{one}, 1:{one}")).is_err());
        let parsed = MasterKeys::parse(&format!("# comment\n3:{one}\n1:{one} # old\n")).unwrap();
        assert_eq!((parsed.current_version(), parsed.versions()), (3, vec![1, 3]));
    }
}
