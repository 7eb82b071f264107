//! The API key format: `tnty_` + key id (32 hex) + secret (64 hex) + CRC-32 (8 hex), 109
//! characters. The fixed prefix lets secret scanners find leaked keys; the checksum lets a
//! mistyped or truncated key be refused without touching the database. Only SHA-256 of the
//! secret is stored, and the comparison is constant-time.

use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use uuid::Uuid;

pub const PREFIX: &str = "tnty_";
const LEN: usize = PREFIX.len() + 32 + 64 + 8;

pub struct GeneratedKey {
    pub id: Uuid,
    pub secret_hash: [u8; 32],
    /// Shown to the creator once; never stored or logged.
    pub plaintext: String,
}

pub struct PresentedKey {
    pub id: Uuid,
    pub secret_hash: [u8; 32],
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Constant-time equality of two hashes.
pub fn hashes_equal(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    SystemRandom::new().fill(&mut out).expect("the system random generator failed");
    out
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2)
        || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

/// An opaque credential: `<prefix><id: 32 hex>_<secret: 64 hex>`. Only SHA-256 of the secret
/// is stored; the id finds the stored hash. Used for refresh tokens and invitation tokens.
pub struct OpaqueToken {
    pub id: Uuid,
    pub hash: [u8; 32],
    /// Shown once; never stored or logged.
    pub plaintext: String,
}

pub fn new_opaque(prefix: &str) -> OpaqueToken {
    let id = Uuid::new_v4();
    let secret = random_bytes::<32>();
    OpaqueToken { id, hash: sha256(&secret), plaintext: format!("{prefix}{}_{}", id.simple(), hex(&secret)) }
}

/// Parses an opaque credential with `prefix`; `None` for anything malformed.
pub fn parse_opaque(prefix: &str, token: &str) -> Option<(Uuid, [u8; 32])> {
    let rest = token.strip_prefix(prefix)?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 32 || secret.len() != 64 {
        return None;
    }
    let id = Uuid::from_slice(&unhex(id)?).ok()?;
    Some((id, sha256(&unhex(secret)?)))
}

pub fn generate() -> GeneratedKey {
    let id = Uuid::now_v7(); // time-ordered, so keys list in creation order
    let secret = random_bytes::<32>();
    let body = format!("{PREFIX}{}{}", id.simple(), hex(&secret));
    let checksum = crc32fast::hash(body.as_bytes());
    GeneratedKey { id, secret_hash: sha256(&secret), plaintext: format!("{body}{checksum:08x}") }
}

pub fn looks_like_api_key(credential: &str) -> bool {
    credential.starts_with(PREFIX)
}

/// Parses a presented key; `None` for anything malformed or with a bad checksum.
pub fn parse(credential: &str) -> Option<PresentedKey> {
    if credential.len() != LEN || !credential.starts_with(PREFIX) || !credential.is_ascii() {
        return None;
    }
    let (body, checksum) = credential.split_at(LEN - 8);
    let checksum = u32::from_str_radix(checksum, 16).ok()?;
    if crc32fast::hash(body.as_bytes()) != checksum {
        return None;
    }
    let id = Uuid::from_slice(&unhex(&body[PREFIX.len()..PREFIX.len() + 32])?).ok()?;
    let secret = unhex(&body[PREFIX.len() + 32..])?;
    Some(PresentedKey { id, secret_hash: sha256(&secret) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_any_change_is_refused() {
        let key = generate();
        assert_eq!(key.plaintext.len(), LEN);
        let parsed = parse(&key.plaintext).expect("parses");
        assert_eq!(parsed.id, key.id);
        assert!(hashes_equal(&parsed.secret_hash, &key.secret_hash));

        let mut flipped = key.plaintext.clone().into_bytes();
        let i = PREFIX.len() + 40;
        flipped[i] = if flipped[i] == b'a' { b'b' } else { b'a' };
        assert!(parse(std::str::from_utf8(&flipped).unwrap()).is_none(), "checksum catches a typo");
        assert!(parse(&key.plaintext[..LEN - 1]).is_none());
        assert!(parse(&key.plaintext.to_uppercase()).is_none());
        assert!(parse("tnty_").is_none());
    }
}
