//! `direct://`: we resolve the name and connect ourselves, judging every
//! resolved address against the guard and the user's rules before
//! connecting to it. The address judged is the address dialled: a name
//! whose answers change between lookups (DNS rebinding) gains nothing.

use std::net::SocketAddr;

use tokio::net::TcpStream;

use super::io_reason;
use crate::forward::errors::ForwardError;
use crate::forward::guard::Guard;
use crate::forward::rules::NameVerdict;
use crate::forward::table::UserEntry;
use crate::forward::target::{Host, Target};

pub async fn connect(
    target: &Target,
    user: &UserEntry,
    verdict: NameVerdict,
    guard: &Guard,
) -> Result<TcpStream, ForwardError> {
    let addrs: Vec<_> = match &target.host {
        Host::Ip(ip) => vec![SocketAddr::new(*ip, target.port)],
        Host::Name(name) => tokio::net::lookup_host((name.as_str(), target.port))
            .await
            .map_err(|_| ForwardError::unreachable(target.to_string(), "name does not resolve"))?
            .collect(),
    };
    let mut last = None;
    for addr in admitted(target, addrs, user, verdict, guard)? {
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

/// The resolved addresses we may connect to, in resolver order. None left:
/// the guard's refusal of the first it refused, else the rules' denial.
fn admitted(
    target: &Target,
    addrs: Vec<SocketAddr>,
    user: &UserEntry,
    verdict: NameVerdict,
    guard: &Guard,
) -> Result<Vec<SocketAddr>, ForwardError> {
    let mut guarded = None;
    let mut allowed = Vec::with_capacity(addrs.len());
    for addr in addrs {
        match guard.judge(addr, &user.internal_allow) {
            Err(reason) => {
                guarded.get_or_insert(ForwardError::guarded(target, Some(addr), reason));
            }
            Ok(()) if user.rules.admits(verdict, addr.ip(), addr.port()) => allowed.push(addr),
            Ok(()) => {}
        }
    }
    match (allowed.is_empty(), guarded) {
        (false, _) => Ok(allowed),
        (true, Some(e)) => Err(e),
        (true, None) => Err(ForwardError::Denied(target.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::guard::Reason;
    use crate::forward::table::Table;
    use postern_snapshot::{DestinationRules, PasswordHash, ProxyUser, Snapshot, Upstream};

    fn user(allow_internal: &[&str]) -> std::sync::Arc<UserEntry> {
        let snapshot = Snapshot {
            users: vec![ProxyUser {
                id: "ns/u".into(),
                user: "u".into(),
                password: PasswordHash::new("salt", b"pw"),
                upstream: Upstream::Direct,
                destinations: DestinationRules::default(),
                allow_internal_networks: allow_internal.iter().map(|s| s.to_string()).collect(),
                max_connections: None,
                revision: "r".into(),
            }],
            ..Snapshot::default()
        };
        Table::build(&snapshot).get("u").cloned().expect("user")
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().expect("addr")).collect()
    }

    #[test]
    fn a_name_answering_loopback_among_others_reaches_only_the_others() {
        let guard = Guard::new(&[]);
        let target = Target::parse("rebind.example:80", None).expect("target");
        let u = user(&[]);
        let verdict = u.rules.check(&target, true).expect("rules");
        let answers = addrs(&["127.0.0.1:80", "192.0.2.7:80", "[::ffff:127.0.0.1]:80"]);
        assert_eq!(
            admitted(&target, answers, &u, verdict, &guard),
            Ok(addrs(&["192.0.2.7:80"]))
        );
        let only_loopback = addrs(&["127.0.0.1:80", "[::1]:80"]);
        assert_eq!(
            admitted(&target, only_loopback.clone(), &u, verdict, &guard),
            Err(ForwardError::Guarded {
                destination: "rebind.example:80".into(),
                address: Some(only_loopback[0]),
                reason: Reason::Loopback,
            })
        );
        let allowed = user(&["127.0.0.0/8"]);
        assert_eq!(
            admitted(&target, only_loopback, &allowed, verdict, &guard),
            Ok(addrs(&["127.0.0.1:80"]))
        );
    }
}
