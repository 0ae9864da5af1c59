//! PROXY protocol v1 and v2 (parsed by the `ppp` crate): read inbound from
//! trusted peers only, so the real client address drives logs and
//! X-Forwarded-For; written outbound to backends that ask for it.
//!
//! A peer in a trusted CIDR must send a header (that is how a load
//! balancer in front is configured); from anyone else the first bytes are
//! the protocol itself and a PROXY header is never believed.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use postern_snapshot::ProxyProtocol;
use ppp::{HeaderResult, PartialResult, v1, v2};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest header accepted: v1 is at most 107 bytes; v2 carries TLVs.
const MAX_HEADER: usize = 4096;
/// How long a trusted peer may take to send its header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest v1 line, CRLF included.
const V1_MAX: usize = 107;

/// Why a trusted peer's connection was dropped.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("no valid PROXY protocol header: {0}")]
    Invalid(String),
    #[error("PROXY protocol header larger than {MAX_HEADER} bytes")]
    TooLong,
    #[error("timed out waiting for the PROXY protocol header")]
    Timeout,
    #[error("connection closed before the PROXY protocol header")]
    Closed,
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] io::Error),
}

/// The CIDRs PROXY headers are accepted from.
#[derive(Clone, Debug, Default)]
pub struct Trusted(pub Vec<IpNet>);

impl Trusted {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The addresses a header announced: `None` for LOCAL / UNKNOWN (health
/// checks), where the connection's own addresses stand.
pub type Announced = Option<(SocketAddr, SocketAddr)>;

/// Reads one header from `io`; returns what it announced and the bytes
/// read past it, which belong to the next protocol.
pub async fn read_header<S: AsyncRead + Unpin>(
    io: &mut S,
) -> Result<(Announced, Vec<u8>), HeaderError> {
    match tokio::time::timeout(HEADER_TIMEOUT, read_inner(io)).await {
        Ok(result) => result,
        Err(_) => Err(HeaderError::Timeout),
    }
}

async fn read_inner<S: AsyncRead + Unpin>(io: &mut S) -> Result<(Announced, Vec<u8>), HeaderError> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(HeaderError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse(&buf) {
            Parsed::Incomplete if buf.len() >= MAX_HEADER => return Err(HeaderError::TooLong),
            Parsed::Incomplete => continue,
            Parsed::Invalid(why) => return Err(HeaderError::Invalid(why)),
            Parsed::Done { len, announced } => return Ok((announced, buf.split_off(len))),
        }
    }
}

enum Parsed {
    Incomplete,
    Invalid(String),
    Done { len: usize, announced: Announced },
}

fn parse(buf: &[u8]) -> Parsed {
    // A v1 header is one line: judge it only once its CRLF is in. `ppp`
    // calls some prefixes of a valid line invalid rather than incomplete
    // (one ending in the space before the destination port), which would
    // drop a header that TCP happened to split there.
    let v1_line_open = buf.starts_with(b"PROXY ") && !buf.windows(2).any(|w| w == b"\r\n");
    if v1_line_open && buf.len() < V1_MAX {
        return Parsed::Incomplete;
    }
    let result = HeaderResult::parse(buf);
    if result.is_incomplete() {
        return Parsed::Incomplete;
    }
    match result {
        HeaderResult::V1(Ok(h)) => Parsed::Done {
            len: h.header.len(),
            announced: match h.addresses {
                v1::Addresses::Tcp4(a) => Some((
                    SocketAddr::new(a.source_address.into(), a.source_port),
                    SocketAddr::new(a.destination_address.into(), a.destination_port),
                )),
                v1::Addresses::Tcp6(a) => Some((
                    SocketAddr::new(a.source_address.into(), a.source_port),
                    SocketAddr::new(a.destination_address.into(), a.destination_port),
                )),
                v1::Addresses::Unknown => None,
            },
        },
        HeaderResult::V2(Ok(h)) => Parsed::Done {
            len: h.header.len(),
            announced: match (h.command, h.addresses) {
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => Some((
                    SocketAddr::new(a.source_address.into(), a.source_port),
                    SocketAddr::new(a.destination_address.into(), a.destination_port),
                )),
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => Some((
                    SocketAddr::new(a.source_address.into(), a.source_port),
                    SocketAddr::new(a.destination_address.into(), a.destination_port),
                )),
                _ => None,
            },
        },
        HeaderResult::V1(Err(e)) => Parsed::Invalid(e.to_string()),
        HeaderResult::V2(Err(e)) => Parsed::Invalid(e.to_string()),
    }
}

/// The header announcing `client` connected to `server`, for a backend.
pub fn outbound(version: ProxyProtocol, client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let (client, server) = same_family(client, server);
    match version {
        ProxyProtocol::V1 => {
            let addresses = match (client, server) {
                (SocketAddr::V4(c), SocketAddr::V4(s)) => {
                    v1::Addresses::new_tcp4(*c.ip(), *s.ip(), c.port(), s.port())
                }
                (c, s) => v1::Addresses::new_tcp6(v6(c.ip()), v6(s.ip()), c.port(), s.port()),
            };
            addresses.to_string().into_bytes()
        }
        ProxyProtocol::V2 => v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (client, server),
        )
        .build()
        // Building into a Vec cannot fail; an empty header would be refused
        // by the backend, which is the right failure.
        .unwrap_or_default(),
    }
}

/// Both addresses in one family (IPv4 when both can be), as the header needs.
fn same_family(client: SocketAddr, server: SocketAddr) -> (SocketAddr, SocketAddr) {
    let c = SocketAddr::new(canonical(client.ip()), client.port());
    let s = SocketAddr::new(canonical(server.ip()), server.port());
    match (c, s) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) | (SocketAddr::V6(_), SocketAddr::V6(_)) => (c, s),
        _ => (
            SocketAddr::new(IpAddr::V6(v6(c.ip())), c.port()),
            SocketAddr::new(IpAddr::V6(v6(s.ip())), s.port()),
        ),
    }
}

fn v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[tokio::test]
    async fn v1_and_v2_round_trip_and_leave_the_rest() {
        let (c, s) = (addr("192.0.2.7:5555"), addr("10.0.0.1:443"));
        for version in [ProxyProtocol::V1, ProxyProtocol::V2] {
            let mut bytes = outbound(version, c, s);
            bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
            let mut io = &bytes[..];
            let (announced, rest) = read_header(&mut io).await.expect("parses");
            assert_eq!(announced, Some((c, s)), "{version:?}");
            let mut all = rest;
            io.read_to_end(&mut all).await.expect("read");
            assert_eq!(all, b"GET / HTTP/1.1\r\n");
        }
    }

    #[tokio::test]
    async fn mixed_families_become_v6_and_local_announces_nothing() {
        let bytes = outbound(
            ProxyProtocol::V1,
            addr("192.0.2.7:1"),
            addr("[2001:db8::1]:443"),
        );
        let mut io = &bytes[..];
        let (announced, _) = read_header(&mut io).await.expect("parses");
        let (client, _) = announced.expect("addresses");
        assert_eq!(canonical(client.ip()), addr("192.0.2.7:1").ip());
        let unknown = b"PROXY UNKNOWN\r\nrest".to_vec();
        let mut io = &unknown[..];
        let (announced, rest) = read_header(&mut io).await.expect("parses");
        assert_eq!(announced, None);
        assert_eq!(rest, b"rest");
    }

    /// Hands out one part per read, as TCP segments arrive.
    struct Parts(Vec<Vec<u8>>);

    impl AsyncRead for Parts {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            if !self.0.is_empty() {
                let part = self.0.remove(0);
                buf.put_slice(&part);
            }
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// A header split across reads at any byte parses as it does whole
    /// (found by the proxy_protocol fuzz target: a v1 line cut after the
    /// space before the destination port was refused).
    #[tokio::test]
    async fn a_header_split_anywhere_still_parses() {
        let (c, s) = (addr("192.0.2.7:5555"), addr("10.0.0.1:443"));
        let (c6, s6) = (addr("[2001:db8::7]:5555"), addr("[2001:db8::1]:443"));
        for (version, c, s) in [
            (ProxyProtocol::V1, c, s),
            (ProxyProtocol::V1, c6, s6),
            (ProxyProtocol::V2, c, s),
        ] {
            let header = outbound(version, c, s);
            for cut in 1..header.len() {
                let (first, second) = header.split_at(cut);
                let mut io = Parts(vec![first.to_vec(), second.to_vec(), b"GET".to_vec()]);
                let (announced, _) = read_header(&mut io)
                    .await
                    .unwrap_or_else(|e| panic!("{version:?} cut at {cut}: {e}"));
                assert_eq!(announced, Some((c, s)), "{version:?} cut at {cut}");
            }
        }
    }

    #[tokio::test]
    async fn a_v1_line_without_its_crlf_is_refused_past_its_longest() {
        let mut long = b"PROXY TCP4 ".to_vec();
        long.resize(200, b'1');
        let mut io = &long[..];
        assert!(matches!(
            read_header(&mut io).await,
            Err(HeaderError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn plain_http_from_a_trusted_peer_is_refused() {
        let mut io = &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..];
        assert!(matches!(
            read_header(&mut io).await,
            Err(HeaderError::Invalid(_))
        ));
    }

    #[test]
    fn trust_is_by_cidr_and_sees_through_mapped_addresses() {
        let t = Trusted(vec!["127.0.0.1/32".parse().expect("net")]);
        assert!(t.contains("127.0.0.1".parse().expect("ip")));
        assert!(t.contains("::ffff:127.0.0.1".parse().expect("ip")));
        assert!(!t.contains("127.0.0.2".parse().expect("ip")));
    }
}
