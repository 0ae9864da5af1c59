//! The IO toolbox every feature shares: a stream that replays bytes read
//! ahead of it ([`Prefixed`]), the hop-by-hop header rules
//! ([`strip_hop_by_hop`]), the canonical form of request paths
//! ([`path::normalise`]), the open-file limit ([`limits`]), a stream that
//! can be broken from outside ([`Killable`]), one that counts what passes
//! ([`Metered`]), a two-way copy that holds no buffer while idle
//! ([`relay`]), the socket under a tunnel's TLS ([`carrier`]), and who
//! may hold a connection ([`admission`]) taken by the one accept step
//! every listener uses ([`Acceptor`]), run on every serving thread
//! ([`Cores`]). Nothing here knows about snapshots or features.

mod accept;
pub mod admission;
pub mod carrier;
mod cores;
mod hop_by_hop;
mod killable;
pub mod limits;
mod metered;
pub mod path;
#[cfg(test)]
mod path_props;
mod prefixed;
pub mod relay;

pub use accept::{Accepted, Acceptor};
pub use admission::{Caps, Connections};
pub use cores::Cores;
pub use hop_by_hop::strip_hop_by_hop;
pub use killable::{Kill, Killable};
pub use metered::{Metered, Tally};
pub use prefixed::Prefixed;
pub use relay::{Moved, relay};
