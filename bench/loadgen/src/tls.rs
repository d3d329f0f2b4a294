//! wss: a rustls client configuration (ring provider) that trusts the CA
//! certificates of one PEM file (`--ca`) and nothing else, and the two stream
//! types a client runs on: the plain `TcpStream` and tokio-tungstenite's rustls
//! stream. Client code is generic over them, so the plain path is compiled as
//! before, with no TLS branch in it.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::client::Plan;

/// A client configuration that verifies the server against the certificates in
/// `ca` (PEM) only. Verification is never skipped.
pub fn client_config(ca: &Path) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("cannot read --ca {}", ca.display()))?
    {
        let cert = cert.with_context(|| format!("bad PEM in --ca {}", ca.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("bad CA certificate in {}", ca.display()))?;
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "--ca {} holds no certificate",
        ca.display()
    );
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("rustls: no protocol version")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The TLS stream over `tcp` for `host` (a name or an IP address), verified
/// with `config`.
pub async fn connect(
    config: Arc<ClientConfig>,
    host: &str,
    tcp: TcpStream,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let name = ServerName::try_from(host.to_owned())
        .with_context(|| format!("{host:?} is not a TLS server name"))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS handshake with {host}"))
}

/// A stream a client runs its WebSocket on: plain TCP (`ws://`) or TLS (`wss://`).
pub trait Conn: AsyncRead + AsyncWrite + Unpin + Send + Sized + 'static {
    /// The WebSocket handshake (after the TLS one, for wss) over a connected socket.
    fn handshake(
        plan: &Plan,
        req: Request,
        tcp: TcpStream,
    ) -> impl Future<Output = Result<WebSocketStream<Self>, WsError>> + Send;

    /// The TCP socket underneath (TCP_QUICKACK, SO_LINGER).
    fn tcp(&self) -> &TcpStream;
}

impl Conn for TcpStream {
    async fn handshake(
        plan: &Plan,
        req: Request,
        tcp: TcpStream,
    ) -> Result<WebSocketStream<Self>, WsError> {
        let (ws, _resp) =
            tokio_tungstenite::client_async_with_config(req, tcp, Some(plan.ws_config)).await?;
        Ok(ws)
    }

    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Conn for MaybeTlsStream<TcpStream> {
    async fn handshake(
        plan: &Plan,
        req: Request,
        tcp: TcpStream,
    ) -> Result<WebSocketStream<Self>, WsError> {
        // `run` picks this type only for wss, which needs `--ca`.
        let connector = plan.tls.clone().map(Connector::Rustls);
        let (ws, _resp) = tokio_tungstenite::client_async_tls_with_config(
            req,
            tcp,
            Some(plan.ws_config),
            connector,
        )
        .await?;
        Ok(ws)
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            MaybeTlsStream::Plain(s) => s,
            MaybeTlsStream::Rustls(s) => s.get_ref().0,
            _ => unreachable!("only plain and rustls streams are made"),
        }
    }
}
