//! `direct://`: we resolve the name and connect ourselves, judging every
//! resolved address against the user's rules before connecting to it.

use tokio::net::TcpStream;

use super::io_reason;
use crate::forward::errors::ForwardError;
use crate::forward::rules::{NameVerdict, Rules};
use crate::forward::target::{Host, Target};

pub async fn connect(
    target: &Target,
    rules: &Rules,
    verdict: NameVerdict,
) -> Result<TcpStream, ForwardError> {
    let addrs: Vec<_> = match &target.host {
        Host::Ip(ip) => vec![std::net::SocketAddr::new(*ip, target.port)],
        Host::Name(name) => tokio::net::lookup_host((name.as_str(), target.port))
            .await
            .map_err(|_| ForwardError::unreachable(target.to_string(), "name does not resolve"))?
            .collect(),
    };
    let allowed: Vec<_> = addrs
        .into_iter()
        .filter(|a| rules.admits(verdict, a.ip(), a.port()))
        .collect();
    if allowed.is_empty() {
        return Err(ForwardError::Denied(target.to_string()));
    }
    let mut last = None;
    for addr in allowed {
        match TcpStream::connect(addr).await {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Err(e) => last = Some(e),
        }
    }
    let reason = last.map_or_else(|| "no address".to_string(), |e| io_reason(&e));
    Err(ForwardError::unreachable(target.to_string(), reason))
}
