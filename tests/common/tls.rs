//! A test certificate authority made with openssl at test time, a server
//! certificate it signs (for `localhost` and 127.0.0.1), and clients that
//! verify the gateway against it (no client here skips verification).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A CA and one server certificate, as PEM files in a directory of their own.
pub struct TestCa {
    pub dir: PathBuf,
    /// The CA certificate (what clients trust).
    pub ca_pem: Vec<u8>,
}

/// `openssl ARGS` run in `dir`; its standard output.
pub fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (tests/run --setup installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

impl TestCa {
    /// A new CA named `name` and a server certificate (`server.pem`,
    /// `server.key`) it signs.
    pub fn new(name: &str) -> TestCa {
        let dir = std::env::temp_dir().join(format!(
            "ticker-tls-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        let subject = format!("/CN={name}");
        let mut ca = vec!["req", "-x509", "-days", "2", "-subj", &subject];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
        openssl(&dir, &ca);
        let mut csr = vec!["req", "-subj", "/CN=localhost"];
        csr.extend(ec);
        csr.extend(["-keyout", "server.key", "-out", "server.csr"]);
        openssl(&dir, &csr);
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             extendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-days",
                "2",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-extfile",
                "ext.cnf",
                "-out",
                "server.pem",
            ],
        );
        let ca_pem = std::fs::read(dir.join("ca.pem")).unwrap();
        TestCa { dir, ca_pem }
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// The `[tls]` settings that serve this CA's server certificate.
    pub fn settings(&self) -> String {
        format!(
            "[tls]\ncert = {:?}\nkey = {:?}\n",
            self.cert().to_str().unwrap(),
            self.key().to_str().unwrap()
        )
    }

    /// A client configuration that trusts this CA only.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.ca_pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    /// An HTTPS client that trusts this CA only.
    pub fn http_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&self.ca_pem).unwrap())
            .build()
            .unwrap()
    }

    /// A TLS connection over `tcp` to `localhost`, verified against this CA.
    pub async fn connect(&self, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        tokio_rustls::TlsConnector::from(self.client_config())
            .connect(name, tcp)
            .await
    }
}

/// A wss connection to `url` (ticker.v1 JSON) that trusts `ca` only, with
/// extra upgrade request headers; the handshake's error when it fails.
pub async fn wss_client(
    url: &str,
    ca: &TestCa,
    protocols: &[&str],
    headers: &[(&'static str, &str)],
) -> Result<super::Client, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    if !protocols.is_empty() {
        let offered = protocols.join(", ").parse().unwrap();
        req.headers_mut().insert("Sec-WebSocket-Protocol", offered);
    }
    for (name, value) in headers {
        req.headers_mut().insert(*name, value.parse().unwrap());
    }
    let connector = tokio_tungstenite::Connector::Rustls(ca.client_config());
    let (ws, _) =
        tokio_tungstenite::connect_async_tls_with_config(req, None, false, Some(connector)).await?;
    let msgpack = protocols.contains(&"ticker.v1.msgpack");
    Ok(super::Client::from_ws(ws, msgpack, None))
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
