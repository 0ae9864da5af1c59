//! The IO toolbox every feature shares: a stream that replays bytes read
//! ahead of it ([`Prefixed`]), the hop-by-hop header rules
//! ([`strip_hop_by_hop`]), the canonical form of request paths
//! ([`path::normalise`]) and the open-file limit ([`limits`]). Nothing here knows about snapshots or features.

mod hop_by_hop;
pub mod limits;
pub mod path;
mod prefixed;

pub use hop_by_hop::strip_hop_by_hop;
pub use prefixed::Prefixed;
