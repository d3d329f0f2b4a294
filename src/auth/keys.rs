//! API keys: the settings hold only each key's SHA-256; a presented key is
//! hashed and compared with every configured hash in constant time.

use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};

use super::principal::{check_pattern, Principal, Source};
use super::settings::KeySettings;

/// A hash is 32 bytes.
type Hash = [u8; 32];

/// The configured keys.
#[derive(Debug, Default)]
pub struct KeyTable {
    keys: Vec<(Hash, Principal)>,
}

impl KeyTable {
    /// The table of `keys`, or what is wrong with one of them (`auth.keys[i]…`).
    pub fn new(keys: &[KeySettings]) -> Result<KeyTable, (String, String)> {
        let mut table = Vec::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            let at = |field: &str| format!("auth.keys[{i}].{field}");
            let hash = parse_hash(&k.sha256).ok_or_else(|| {
                (
                    at("sha256"),
                    "must be 64 hex digits (the SHA-256 of the key; see `ticker-gateway keygen`)"
                        .to_owned(),
                )
            })?;
            if k.sub.trim().is_empty() {
                return Err((at("sub"), "must name the principal".into()));
            }
            for p in &k.syms {
                check_pattern(p).map_err(|e| (at("syms"), e))?;
            }
            if table.iter().any(|(h, _)| *h == hash) {
                return Err((at("sha256"), "the same key is configured twice".into()));
            }
            let principal = Principal::with_limits(k.sub.clone(), k.syms.clone(), k.limits, None)
                .from_source(Source::Key(hash));
            table.push((hash, principal));
        }
        Ok(KeyTable { keys: table })
    }

    /// The principal of `key`, if it is one of ours.
    pub fn find(&self, key: &str) -> Option<Principal> {
        self.find_hash(&sha256(key.as_bytes()))
    }

    /// The principal of the key whose SHA-256 is `presented`.
    pub fn find_hash(&self, presented: &Hash) -> Option<Principal> {
        // Every hash is compared in full, so the time taken does not tell how
        // many bytes matched or which entry did.
        let mut found = None;
        for (hash, principal) in &self.keys {
            if constant_time_eq(hash, presented) {
                found = Some(principal.clone());
            }
        }
        found
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> Hash {
    let d = digest(&SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Lower-case hex.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hash(hex: &str) -> Option<Hash> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Equality whose time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A fresh random secret (32 bytes from the operating system's generator, in
/// hex) behind `prefix`.
pub fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).expect(
        "the operating system's random generator failed (getrandom): no secret can be made",
    );
    format!("{prefix}{}", to_hex(&bytes))
}

/// `ticker-gateway keygen`: a new key and the settings lines that accept it.
pub fn keygen(sub: &str, syms: &[String]) -> (String, String) {
    let key = random_secret("tk_");
    let hash = to_hex(&sha256(key.as_bytes()));
    let syms = syms
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let lines = format!("[[auth.keys]]\nsub = {sub:?}\nsha256 = \"{hash}\"\nsyms = [{syms}]\n");
    (key, lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::settings::LimitSettings;

    fn key(sub: &str, sha256: String) -> KeySettings {
        KeySettings {
            sub: sub.into(),
            sha256,
            syms: vec!["A*".into()],
            limits: LimitSettings::default(),
        }
    }

    #[test]
    fn a_generated_key_is_found_by_its_hash_only() {
        let (k, lines) = keygen("desk-7", &["A*".into()]);
        let hash = to_hex(&sha256(k.as_bytes()));
        assert!(lines.contains(&hash) && !lines.contains(&k));
        let table = KeyTable::new(&[key("other", to_hex(&[7; 32])), key("desk-7", hash)]).unwrap();
        assert_eq!(table.find(&k).unwrap().sub(), Some("desk-7"));
        assert!(table.find("tk_wrong").is_none());
        assert!(table.find("").is_none());
    }

    #[test]
    fn bad_key_settings_are_named() {
        let e = KeyTable::new(&[key("a", "abc".into())]).unwrap_err();
        assert_eq!(e.0, "auth.keys[0].sha256");
        let h = to_hex(&[1; 32]);
        let e = KeyTable::new(&[key("a", h.clone()), key("b", h)]).unwrap_err();
        assert_eq!(e.0, "auth.keys[1].sha256");
        let mut k = key("a", to_hex(&[2; 32]));
        k.syms = vec!["A*B".into()];
        assert_eq!(KeyTable::new(&[k]).unwrap_err().0, "auth.keys[0].syms");
    }
}
