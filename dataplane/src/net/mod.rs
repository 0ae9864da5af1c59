//! The IO toolbox every feature shares: a stream that replays bytes read
//! ahead of it ([`Prefixed`]), the hop-by-hop header rules
//! ([`strip_hop_by_hop`]) and the canonical form of request paths
//! ([`path::normalise`]). Nothing here knows about snapshots or features.

mod hop_by_hop;
pub mod path;
mod prefixed;

pub use hop_by_hop::strip_hop_by_hop;
pub use prefixed::Prefixed;
