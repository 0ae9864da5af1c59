//! Connections to backends: TCP with a connect timeout, an optional PROXY
//! protocol header, then TLS (verified, with ALPN) for https backends. Used
//! by hyper-util's pooled client, which asks [`Connected`] whether ALPN
//! chose h2.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Why a backend connection could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    #[error("connect timed out")]
    Timeout,
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Tls(String),
    #[error("{0}")]
    Config(String),
}

/// TLS towards one backend.
#[derive(Clone)]
pub struct TlsSetup {
    config: Arc<ClientConfig>,
    /// Overrides the URL's host as SNI and verified name.
    server_name: Option<ServerName<'static>>,
}

impl TlsSetup {
    /// A verifying client config: the PEM CA if given, else the system's
    /// roots; ALPN offers only what the backend is configured to speak.
    pub fn new(
        ca_pem: Option<&str>,
        server_name: Option<&str>,
        h2: bool,
    ) -> Result<Self, ConnectError> {
        let roots = match ca_pem {
            Some(pem) => Arc::new(private_roots(pem)?),
            None => SYSTEM_ROOTS.clone(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ConnectError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = if h2 {
            vec![b"h2".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        let server_name = server_name
            .map(|n| {
                ServerName::try_from(n.to_string())
                    .map_err(|e| ConnectError::Config(format!("server name {n}: {e}")))
            })
            .transpose()?;
        Ok(TlsSetup {
            config: Arc::new(config),
            server_name,
        })
    }
}

fn private_roots(pem: &str) -> Result<rustls::RootCertStore, ConnectError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| ConnectError::Config(format!("backend CA: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| ConnectError::Config(format!("backend CA: {e}")))?;
    }
    if roots.is_empty() {
        return Err(ConnectError::Config(
            "backend CA holds no certificate".into(),
        ));
    }
    Ok(roots)
}

/// The system's trust roots, loaded once per process.
static SYSTEM_ROOTS: LazyLock<Arc<rustls::RootCertStore>> = LazyLock::new(|| {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!(error = %e, "cannot load some system CA certificates");
    }
    let (added, _) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, "loaded system CA certificates for https backends");
    Arc::new(roots)
});

/// Makes backend connections; cheap to clone (the pool clones it).
#[derive(Clone)]
pub struct Connector {
    pub connect_timeout: Duration,
    pub tls: Option<TlsSetup>,
    /// Written first on every connection (PROXY protocol).
    pub preamble: Option<Arc<[u8]>>,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<BackendStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let limit = this.connect_timeout;
            match tokio::time::timeout(limit, this.connect(uri)).await {
                Ok(result) => result.map(TokioIo::new),
                Err(_) => Err(ConnectError::Timeout),
            }
        })
    }
}

impl Connector {
    async fn connect(self, uri: Uri) -> Result<BackendStream, ConnectError> {
        let host = uri
            .host()
            .ok_or_else(|| ConnectError::Config(format!("no host in {uri}")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let default_port = if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        };
        let port = uri.port_u16().unwrap_or(default_port);
        let mut tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| ConnectError::Io(format!("{host}:{port}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        if let Some(preamble) = &self.preamble {
            tcp.write_all(preamble)
                .await
                .map_err(|e| ConnectError::Io(format!("{host}:{port}: {e}")))?;
        }
        let Some(tls) = self.tls else {
            return Ok(BackendStream::Plain(tcp));
        };
        let name = match tls.server_name {
            Some(name) => name,
            None => ServerName::try_from(host.clone())
                .map_err(|e| ConnectError::Config(format!("server name {host}: {e}")))?,
        };
        let stream = TlsConnector::from(tls.config)
            .connect(name, tcp)
            .await
            .map_err(|e| ConnectError::Tls(format!("{host}:{port}: {e}")))?;
        Ok(BackendStream::Tls(Box::new(stream)))
    }
}

/// A backend connection, plain or TLS.
pub enum BackendStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for BackendStream {
    fn connected(&self) -> Connected {
        match self {
            BackendStream::Plain(_) => Connected::new(),
            BackendStream::Tls(tls) => {
                if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                    Connected::new().negotiated_h2()
                } else {
                    Connected::new()
                }
            }
        }
    }
}

impl AsyncRead for BackendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_flush(cx),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            BackendStream::Plain(s) => s.is_write_vectored(),
            BackendStream::Tls(s) => s.is_write_vectored(),
        }
    }
}
