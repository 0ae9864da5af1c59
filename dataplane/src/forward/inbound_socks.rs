//! The SOCKS5 inbound (RFC 1928) with username/password authentication
//! (RFC 1929) only: a client that offers no username/password method is
//! refused, so it is never an open proxy. CONNECT only; names are passed
//! on unresolved, like the HTTP inbound's. The same users, rules, limits
//! and upstreams as the HTTP inbound, through the same [`Forward`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::net::admission::Permit;

use super::Forward;
use super::auth::Presented;
use super::errors::ForwardError;
use super::relay::{self, Bytes, Watch};
use super::target::{Host, Target};
use super::upstream::Stream;

const VERSION: u8 = 5;
const METHOD_PASSWORD: u8 = 2;
const NO_METHOD: u8 = 0xff;
const CMD_CONNECT: u8 = 1;
const REPLY_OK: u8 = 0;
const REPLY_COMMAND: u8 = 7;
const REPLY_ADDRESS_TYPE: u8 = 8;

/// Why a handshake stopped before a request could be answered.
pub(crate) enum Stop {
    /// The client is not speaking SOCKS5, went away or took too long.
    Gone,
    /// Refused with this reply code already sent.
    Replied(ForwardError),
}

/// Serves one client connection, holding its `permit` until it closes.
pub async fn serve(fwd: Arc<Forward>, mut tcp: TcpStream, peer: SocketAddr, permit: Permit) {
    let _permit = permit;
    let handshake = tokio::time::timeout(fwd.config().handshake_timeout, handshake(&fwd, &mut tcp));
    let (presented, user, target) = match handshake.await {
        Ok(Ok(found)) => found,
        Ok(Err(Stop::Replied(e))) => return fwd.refused("socks5", peer, "", "", &e),
        Ok(Err(Stop::Gone)) | Err(_) => {
            tracing::debug!(%peer, "SOCKS5 client left during the handshake");
            return;
        }
    };
    let dest = target.to_string();
    let admitted = match fwd.admit(user, &presented, &target) {
        Ok(a) => a,
        Err(e) => return refuse(&fwd, &mut tcp, peer, &presented.user, &dest, e).await,
    };
    let upstream = match fwd.dial(&admitted, &target).await {
        Ok(s) => s,
        Err(e) => return refuse(&fwd, &mut tcp, peer, &presented.user, &dest, e).await,
    };
    let record = fwd.record("socks5", peer, &admitted, &dest);
    let bytes = Bytes::default();
    let outcome = match reply(&mut tcp, REPLY_OK).await {
        Ok(()) => {
            let watch = Watch {
                idle: fwd.config().idle_timeout,
                cut: admitted.lease.cut(),
                shutdown: fwd.shutdown_token(),
            };
            relay::relay(
                Stream::tcp(tcp),
                upstream,
                watch,
                &bytes,
                fwd.metrics(),
                &admitted.user.user,
            )
            .await
        }
        Err(e) => relay::Outcome::Failed(super::upstream::io_reason(&e)),
    };
    fwd.finish(&record, &outcome, &bytes, admitted.lease);
}

/// Greeting, RFC 1929 sub-negotiation and the request: the credentials, their
/// user and the destination. Generic over the stream so that the fuzzing
/// surface ([`crate::fuzzing`]) drives it from memory.
pub(crate) async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    fwd: &Forward,
    tcp: &mut S,
) -> Result<(Presented, Arc<super::table::UserEntry>, Target), Stop> {
    let gone = |_| Stop::Gone;
    let [version, n] = read_array(tcp).await.map_err(gone)?;
    if version != VERSION {
        return Err(Stop::Gone);
    }
    let methods = read_vec(tcp, n as usize).await.map_err(gone)?;
    if !methods.contains(&METHOD_PASSWORD) {
        let _ = tcp.write_all(&[VERSION, NO_METHOD]).await;
        return Err(Stop::Replied(ForwardError::Auth("no credentials")));
    }
    tcp.write_all(&[VERSION, METHOD_PASSWORD])
        .await
        .map_err(gone)?;
    let presented = read_credentials(tcp).await.map_err(gone)?;
    let user = match fwd.authenticate(&presented) {
        Ok(user) => user,
        Err(e) => {
            let _ = tcp.write_all(&[1, 1]).await;
            return Err(Stop::Replied(e));
        }
    };
    tcp.write_all(&[1, 0]).await.map_err(gone)?;
    let target = read_request(tcp).await?;
    Ok((presented, user, target))
}

/// RFC 1929: VER=1, ULEN, UNAME, PLEN, PASSWD.
async fn read_credentials<S: AsyncRead + Unpin>(tcp: &mut S) -> std::io::Result<Presented> {
    let [_version, ulen] = read_array(tcp).await?;
    let user = read_vec(tcp, ulen as usize).await?;
    let [plen] = read_array(tcp).await?;
    let password = read_vec(tcp, plen as usize).await?;
    Ok(Presented {
        // A name that is not UTF-8 matches no user.
        user: String::from_utf8(user).unwrap_or_default(),
        password,
    })
}

/// VER, CMD, RSV, ATYP, DST.ADDR, DST.PORT; CONNECT only.
async fn read_request<S: AsyncRead + AsyncWrite + Unpin>(tcp: &mut S) -> Result<Target, Stop> {
    let gone = |_| Stop::Gone;
    let [version, cmd, _rsv, atyp] = read_array(tcp).await.map_err(gone)?;
    if version != VERSION {
        return Err(Stop::Gone);
    }
    let host = match atyp {
        1 => Some(Host::Ip(IpAddr::V4(Ipv4Addr::from(
            read_array::<4, _>(tcp).await.map_err(gone)?,
        )))),
        4 => Some(Host::Ip(IpAddr::V6(Ipv6Addr::from(
            read_array::<16, _>(tcp).await.map_err(gone)?,
        )))),
        3 => {
            let [len] = read_array(tcp).await.map_err(gone)?;
            let name = read_vec(tcp, len as usize).await.map_err(gone)?;
            std::str::from_utf8(&name).ok().and_then(Host::parse)
        }
        _ => {
            let _ = reply(tcp, REPLY_ADDRESS_TYPE).await;
            return Err(Stop::Replied(ForwardError::BadRequest(format!(
                "address type {atyp}"
            ))));
        }
    };
    let port = u16::from_be_bytes(read_array(tcp).await.map_err(gone)?);
    if cmd != CMD_CONNECT {
        let _ = reply(tcp, REPLY_COMMAND).await;
        return Err(Stop::Replied(ForwardError::BadRequest(format!(
            "SOCKS5 command {cmd}"
        ))));
    }
    match host {
        Some(host) if port != 0 => Ok(Target { host, port }),
        _ => {
            let e = ForwardError::BadRequest("invalid destination".into());
            let _ = reply(tcp, e.socks_reply()).await;
            Err(Stop::Replied(e))
        }
    }
}

async fn refuse(
    fwd: &Forward,
    tcp: &mut TcpStream,
    peer: SocketAddr,
    user: &str,
    dest: &str,
    e: ForwardError,
) {
    fwd.refused("socks5", peer, user, dest, &e);
    let _ = reply(tcp, e.socks_reply()).await;
}

/// A reply with an unspecified bound address.
async fn reply<S: AsyncWrite + Unpin>(tcp: &mut S, code: u8) -> std::io::Result<()> {
    tcp.write_all(&[VERSION, code, 0, 1, 0, 0, 0, 0, 0, 0])
        .await
}

async fn read_array<const N: usize, S: AsyncRead + Unpin>(tcp: &mut S) -> std::io::Result<[u8; N]> {
    let mut buf = [0u8; N];
    tcp.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn read_vec<S: AsyncRead + Unpin>(tcp: &mut S, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    tcp.read_exact(&mut buf).await?;
    Ok(buf)
}
