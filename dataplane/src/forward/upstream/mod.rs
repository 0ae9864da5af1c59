//! Opening a byte stream to a destination through a user's upstream:
//! `direct`, `socks5` (RFC 1928/1929, via `tokio-socks`), `http` CONNECT and
//! `https` CONNECT (TLS to the proxy, verified).
//!
//! The whole establishment (resolution, TCP, TLS, proxy handshake) runs
//! under one connect timeout, reported as [`ForwardError::Timeout`]. This
//! module never logs or returns upstream credentials.

mod direct;
mod http;
mod socks5;
mod stream;
mod tls;

use std::future::Future;
use std::time::Duration;

use postern_snapshot::Upstream;
use tokio::net::TcpStream;

use super::ForwardConfig;
use super::errors::{ConfigError, ForwardError};
use super::guard::Guard;
use super::rules::NameVerdict;
use super::table::{UserEntry, upstream_label};
use super::target::Target;

pub use http::basic as basic_auth;
pub use stream::{Io, Prefixed, Stream};

/// Opens streams; one per process, shared by every connection.
pub struct Dialer {
    connect_timeout: Duration,
    tls: tls::Tls,
    guard: Guard,
}

impl Dialer {
    pub fn new(config: &ForwardConfig) -> Result<Dialer, ConfigError> {
        Ok(Dialer {
            connect_timeout: config.connect_timeout,
            tls: tls::Tls::new(&config.upstream_ca_files)?,
            guard: Guard::new(&config.deny_cidrs),
        })
    }

    /// The guard every dialled address passes.
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// A tunnel to `target` through the user's upstream. The caller has
    /// checked the name against the user's rules (`verdict`) and the guard;
    /// for `direct`, every resolved address is checked again by both. Over
    /// plain TCP upstreams the result is a [`Stream::Tcp`], which tunnels
    /// splice.
    pub async fn tunnel(
        &self,
        user: &UserEntry,
        target: &Target,
        verdict: NameVerdict,
    ) -> Result<Stream, ForwardError> {
        // Labels are formatted only when needed: a direct tunnel that opens
        // in time formats none.
        let what = || match user.upstream {
            Upstream::Direct => target.to_string(),
            ref up => upstream_label(up),
        };
        self.timed(what, async {
            let label = || upstream_label(&user.upstream);
            match &user.upstream {
                Upstream::Direct => Ok(Stream::tcp(
                    direct::connect(target, user, verdict, &self.guard).await?,
                )),
                Upstream::Socks5 { credentials, .. } => match self.proxy(&user.upstream).await? {
                    Stream::Tcp(p) => {
                        let (_, tcp) = p.into_parts();
                        let tcp =
                            socks5::connect(tcp, target, credentials.as_ref(), &label()).await?;
                        Ok(Stream::tcp(tcp))
                    }
                    Stream::Other(io) => {
                        let io =
                            socks5::connect(io, target, credentials.as_ref(), &label()).await?;
                        Ok(Stream::other(io))
                    }
                },
                Upstream::Http { credentials, .. } | Upstream::Https { credentials, .. } => {
                    match self.proxy(&user.upstream).await? {
                        Stream::Tcp(p) => {
                            let (_, tcp) = p.into_parts();
                            let (tcp, rest) =
                                http::connect(tcp, target, credentials.as_ref(), &label()).await?;
                            Ok(Stream::Tcp(Prefixed::new(rest, tcp)))
                        }
                        Stream::Other(io) => {
                            let (io, rest) =
                                http::connect(io, target, credentials.as_ref(), &label()).await?;
                            Ok(Stream::other(Prefixed::new(rest, io)))
                        }
                    }
                }
            }
        })
        .await
    }

    /// A connection to an `http`/`https` upstream proxy itself (TLS done),
    /// for forwarding absolute-form requests; timed like a tunnel.
    pub async fn proxy_timed(&self, upstream: &Upstream) -> Result<Stream, ForwardError> {
        self.timed(|| upstream_label(upstream), self.proxy(upstream))
            .await
    }

    async fn proxy(&self, upstream: &Upstream) -> Result<Stream, ForwardError> {
        let label = upstream_label(upstream);
        // `tls`: `Some(extra CA)` for https upstreams.
        let (host, port, tls) = match upstream {
            Upstream::Direct => return Err(ForwardError::BadRequest("no upstream proxy".into())),
            Upstream::Socks5 { host, port, .. } | Upstream::Http { host, port, .. } => {
                (host, *port, None)
            }
            Upstream::Https {
                host, port, ca_pem, ..
            } => (host, *port, Some(ca_pem.as_deref())),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = self.connect_upstream(host, port, &label).await?;
        let _ = tcp.set_nodelay(true);
        match tls {
            Some(ca) => Ok(Stream::other(
                self.tls.connect(tcp, host, ca, &label).await?,
            )),
            None => Ok(Stream::tcp(tcp)),
        }
    }

    /// TCP to an upstream proxy, each resolved address judged first: an
    /// upstream that is this gateway would loop (or reach the admin port).
    async fn connect_upstream(
        &self,
        host: &str,
        port: u16,
        label: &str,
    ) -> Result<TcpStream, ForwardError> {
        let addrs = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| ForwardError::unreachable(label, io_reason(&e)))?;
        let mut last: Option<ForwardError> = None;
        for addr in addrs {
            if let Err(reason) = self.guard.judge_upstream(addr) {
                last.get_or_insert(ForwardError::Guarded {
                    destination: label.to_string(),
                    address: Some(addr),
                    reason,
                });
                continue;
            }
            match TcpStream::connect(addr).await {
                Ok(tcp) => return Ok(tcp),
                Err(e) => last = Some(ForwardError::unreachable(label, io_reason(&e))),
            }
        }
        Err(last.unwrap_or_else(|| ForwardError::unreachable(label, "no address")))
    }

    async fn timed<T>(
        &self,
        what: impl FnOnce() -> String,
        fut: impl Future<Output = Result<T, ForwardError>>,
    ) -> Result<T, ForwardError> {
        tokio::time::timeout(self.connect_timeout, fut)
            .await
            .unwrap_or_else(|_| Err(ForwardError::Timeout(what())))
    }
}

/// A short reason for an I/O failure, without the OS error number.
pub(crate) fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset".into(),
        UnexpectedEof => "connection closed".into(),
        TimedOut => "timed out".into(),
        _ => {
            let text = e.to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_string(),
                None => text,
            }
        }
    }
}
