//! TLS (`[tls]`): the certificate chain and key from PEM files, a rustls
//! server configuration whose certificate can be swapped while the server runs
//! (SIGHUP: new connections get the new one, open ones keep theirs), and the
//! acceptor the server runs before HTTP. With `[tls]` set the port serves only
//! https and wss.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix_web::rt::net::TcpStream;
use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::http::ApiError;

/// `[tls]`: off unless `cert` and `key` are set.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, the server's certificate first.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// How long a client may take over its handshake.
    #[serde(with = "crate::duration", default = "default_handshake_timeout")]
    pub handshake_timeout: Duration,
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(5)
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            cert: None,
            key: None,
            handshake_timeout: default_handshake_timeout(),
        }
    }
}

impl TlsSettings {
    pub fn enabled(&self) -> bool {
        self.cert.is_some() || self.key.is_some()
    }
}

/// The server's certificate, replaceable while it runs.
pub struct Certificates {
    current: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Certificates")
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The crypto the gateway uses (ring: already in the tree, no C build).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Certificates {
    /// Loads `[tls]` (`None` when TLS is off), or the setting at fault and
    /// what is wrong with it.
    pub fn load(s: &TlsSettings) -> Result<Option<Arc<Certificates>>, (String, String)> {
        if !s.enabled() {
            return Ok(None);
        }
        if s.handshake_timeout.is_zero() {
            return Err(("tls.handshake_timeout".into(), "must be above zero".into()));
        }
        let key = certified_key(s)?;
        Ok(Some(Arc::new(Certificates {
            current: ArcSwap::from_pointee(key),
        })))
    }

    /// Reads the files again; on an error the current certificate stays.
    pub fn reload(&self, s: &TlsSettings) -> Result<(), (String, String)> {
        self.current.store(Arc::new(certified_key(s)?));
        Ok(())
    }

    /// A server configuration (HTTP/1.1 only) resolving to these certificates.
    pub fn server_config(self: &Arc<Self>) -> Arc<ServerConfig> {
        // unwrap: ring's default provider supports the safe default versions.
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("unwrap: ring supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// The TLS handshake on a new connection, within `timeout`. A client that
/// speaks plain HTTP to the port is told so (a 400 with a JSON error) instead
/// of a TLS alert it cannot read.
pub async fn accept(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    timeout: Duration,
) -> io::Result<TlsStream<TcpStream>> {
    let handshake = async {
        let mut first = [0u8; 1];
        tcp.peek(&mut first).await?;
        // Every TLS connection starts with a handshake record.
        if first[0] != 0x16 {
            let body = serde_json::to_string(&ApiError::bad_request(
                "this port serves https and wss only",
            ))
            .unwrap_or_default();
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let mut tcp = tcp;
            tcp.write_all(answer.as_bytes()).await?;
            let _ = tcp.shutdown().await;
            return Err(io::Error::new(io::ErrorKind::InvalidData, "plain HTTP"));
        }
        acceptor.accept(tcp).await
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

fn certified_key(s: &TlsSettings) -> Result<CertifiedKey, (String, String)> {
    let (Some(cert), Some(key)) = (&s.cert, &s.key) else {
        let missing = if s.cert.is_none() { "cert" } else { "key" };
        return Err((
            format!("tls.{missing}"),
            "tls.cert and tls.key are set together (or neither)".into(),
        ));
    };
    let chain = read_chain(cert).map_err(|e| ("tls.cert".to_owned(), e))?;
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        (
            "tls.key".to_owned(),
            format!("no private key in {}: {e}", key.display()),
        )
    })?;
    CertifiedKey::from_der(chain, der, &provider()).map_err(|e| {
        (
            "tls.key".to_owned(),
            format!("{} does not fit tls.cert: {e}", key.display()),
        )
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("no certificate in {}", path.display()));
    }
    Ok(chain)
}
