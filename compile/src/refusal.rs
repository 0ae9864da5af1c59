//! How a pass says no: a [`Reason`] and a sentence naming what is wrong.
//! A leaf every pass and check imports; it imports no pass.

use crate::Reason;

/// A refusal: the reason and a sentence naming what is wrong.
pub(crate) type Refusal = (Reason, String);

/// A field the schema cannot fully check is wrong (`InvalidSpec`).
pub(crate) fn invalid(message: String) -> Refusal {
    (Reason::InvalidSpec, message)
}
