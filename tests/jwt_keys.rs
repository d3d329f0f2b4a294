//! JWT with public keys (PROTOCOL.md section 9): RS256 and ES256 from a PEM
//! public key and from a JWKS file, with keys openssl makes at test time, and
//! settings that name bad key material stopping start-up with one line.

mod common;

use std::path::{Path, PathBuf};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use ticker_gateway::auth::{AuthSettings, Authenticator, Refusal};
use ticker_gateway::settings::Settings;

fn openssl(args: &[&str]) -> Vec<u8> {
    common::tls::openssl(&std::env::temp_dir(), args)
}

/// A fresh key pair: (private PEM path, public PEM path).
fn key_pair(dir: &Path, name: &str, genpkey: &[&str]) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    let mut args = vec!["genpkey", "-out", private.to_str().unwrap()];
    args.extend_from_slice(genpkey);
    openssl(&args);
    openssl(&[
        "pkey",
        "-in",
        private.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    (private, public)
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn settings(jwt: &str) -> AuthSettings {
    let toml = format!("[auth]\nenabled = true\n[auth.jwt]\n{jwt}");
    Settings::load_with(None, &["feeds = []\n", &toml])
        .expect("settings")
        .auth
}

fn claims() -> Value {
    json!({"sub": "desk-3", "exp": common_exp(), "syms": ["AAPL"]})
}

fn common_exp() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300
}

fn sign(alg: Algorithm, kid: Option<&str>, private_pem: &Path) -> String {
    let pem = std::fs::read(private_pem).unwrap();
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
        _ => EncodingKey::from_ec_pem(&pem).unwrap(),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, &claims(), &key).unwrap()
}

#[test]
fn rs256_and_es256_tokens_verify_with_pem_keys_and_a_jwks() {
    let dir = common::temp_file("keep", "").parent().unwrap().to_owned();
    let (rsa, rsa_pub) = key_pair(
        &dir,
        "rsa",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let (ec, ec_pub) = key_pair(
        &dir,
        "ec",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let (other, _) = key_pair(
        &dir,
        "other",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );

    for (alg, name, private, public) in [
        (Algorithm::RS256, "RS256", &rsa, &rsa_pub),
        (Algorithm::ES256, "ES256", &ec, &ec_pub),
    ] {
        let s = settings(&format!(
            "algorithm = {name:?}\npublic_key_file = {:?}\n",
            public.to_str().unwrap()
        ));
        let auth = Authenticator::load(&s).unwrap().unwrap();
        let p = auth.verify(&sign(alg, None, private)).expect(name);
        assert_eq!(p.sub(), Some("desk-3"));
        assert!(p.may_see("AAPL") && !p.may_see("MSFT"));
        if alg == Algorithm::RS256 {
            // HS256 keyed with the public key (the algorithm confusion attack).
            let pem = std::fs::read(public).unwrap();
            let hs = encode(
                &Header::default(),
                &claims(),
                &EncodingKey::from_secret(&pem),
            )
            .unwrap();
            assert_eq!(auth.verify(&hs).unwrap_err(), Refusal::Invalid);
            assert_eq!(
                auth.verify(&sign(alg, None, &other)).unwrap_err(),
                Refusal::Invalid,
                "another key's signature"
            );
        }
    }

    // A JWKS with two RSA keys: the token's kid picks one.
    let modulus = |pem: &Path| {
        let text = String::from_utf8(openssl(&[
            "rsa",
            "-pubin",
            "-in",
            pem.to_str().unwrap(),
            "-noout",
            "-modulus",
        ]))
        .unwrap();
        b64url(&hex_bytes(text.trim().strip_prefix("Modulus=").unwrap()))
    };
    let other_pub = dir.join("other.pub2");
    openssl(&[
        "pkey",
        "-in",
        other.to_str().unwrap(),
        "-pubout",
        "-out",
        other_pub.to_str().unwrap(),
    ]);
    let jwks = json!({"keys": [
        {"kty": "RSA", "kid": "k1", "alg": "RS256", "n": modulus(&rsa_pub), "e": "AQAB"},
        {"kty": "RSA", "kid": "k2", "alg": "RS256", "n": modulus(&other_pub), "e": "AQAB"},
    ]});
    let jwks_file = dir.join("jwks.json");
    std::fs::write(&jwks_file, jwks.to_string()).unwrap();
    let s = settings(&format!(
        "algorithm = \"RS256\"\njwks_file = {:?}\n",
        jwks_file.to_str().unwrap()
    ));
    let auth = Authenticator::load(&s).unwrap().unwrap();
    assert!(auth
        .verify(&sign(Algorithm::RS256, Some("k1"), &rsa))
        .is_ok());
    assert!(auth
        .verify(&sign(Algorithm::RS256, Some("k2"), &other))
        .is_ok());
    assert_eq!(
        auth.verify(&sign(Algorithm::RS256, Some("k2"), &rsa))
            .unwrap_err(),
        Refusal::Invalid
    );
    assert_eq!(
        auth.verify(&sign(Algorithm::RS256, Some("k9"), &rsa))
            .unwrap_err(),
        Refusal::UnknownKey
    );
}

#[test]
fn bad_key_material_stops_start_up_naming_the_setting() {
    let bad_pem = common::temp_file("bad.pem", "not a key");
    let short = common::temp_file("short-secret", "too short");
    for (jwt, key) in [
        (
            format!(
                "algorithm = \"RS256\"\npublic_key_file = {:?}\n",
                bad_pem.to_str().unwrap()
            ),
            "auth.jwt.public_key_file",
        ),
        (
            "algorithm = \"RS256\"\npublic_key_file = \"/nonexistent.pem\"\n".to_owned(),
            "auth.jwt.public_key_file",
        ),
        (
            format!(
                "algorithm = \"RS256\"\njwks_file = {:?}\n",
                bad_pem.to_str().unwrap()
            ),
            "auth.jwt.jwks_file",
        ),
        (
            format!(
                "algorithm = \"HS256\"\nsecret_file = {:?}\n",
                short.to_str().unwrap()
            ),
            "auth.jwt",
        ),
        (
            "algorithm = \"HS256\"\nsecret_env = \"TICKER_TEST_UNSET_VARIABLE\"\n".to_owned(),
            "auth.jwt.secret_env",
        ),
        ("algorithm = \"none\"\n".to_owned(), "auth.jwt.algorithm"),
    ] {
        let toml = format!("[auth]\nenabled = true\n[auth.jwt]\n{jwt}");
        let e = Settings::load_with(None, &["feeds = []\n", &toml])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!("invalid setting {key}:")),
            "{jwt} -> {e}"
        );
        assert!(!e.contains('\n'), "one line: {e}");
    }
    let e = Settings::load_with(None, &["feeds = []\n", "[auth]\nenabled = true\n"]).unwrap_err();
    assert!(
        e.to_string().contains("no [[auth.keys]] or [auth.jwt]"),
        "{e}"
    );
}
