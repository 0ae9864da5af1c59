//! The IO toolbox every feature shares: a stream that replays bytes read
//! ahead of it ([`Prefixed`]), the hop-by-hop header rules
//! ([`strip_hop_by_hop`]), the canonical form of request paths
//! ([`path::normalise`]), the open-file limit ([`limits`]) and a stream
//! that can be broken from outside ([`Killable`]). Nothing here knows about
//! snapshots or features.

mod hop_by_hop;
mod killable;
pub mod limits;
pub mod path;
mod prefixed;

pub use hop_by_hop::strip_hop_by_hop;
pub use killable::{Kill, Killable};
pub use prefixed::Prefixed;
