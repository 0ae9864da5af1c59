//! The IO toolbox every feature shares: a stream that replays bytes read
//! ahead of it ([`Prefixed`]), and the hop-by-hop header rules
//! ([`strip_hop_by_hop`]). Nothing here knows about snapshots or features.

mod hop_by_hop;
mod prefixed;

pub use hop_by_hop::strip_hop_by_hop;
pub use prefixed::Prefixed;
