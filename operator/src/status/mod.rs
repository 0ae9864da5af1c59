//! Status: `Accepted` and `Programmed` conditions and `observedGeneration`
//! on every object, written by the leader only.
//!
//! [`conditions`] decides what a status should say (pure); [`writer`]
//! patches the difference and remembers what it wrote.

pub mod conditions;
pub mod events;
pub mod writer;

pub use writer::StatusWriter;
