//! The admin surface the data plane and the operator share: tokens with
//! roles ([`tokens`]), dashboard sessions ([`sessions`]), the gate every
//! endpoint asks ([`gate`]), the embedded dashboard ([`ui`]), the OpenAPI
//! document ([`openapi`]) and one response shape ([`reply`]). Routing and
//! what each endpoint reads stay with each binary: they own their state.

pub mod gate;
pub mod openapi;
pub mod reply;
pub mod sessions;
pub mod sso;
pub mod tokens;
pub mod ui;

pub use gate::{Denied, Gate, Principal, Via};
pub use reply::Body;
pub use sso::{Sso, SsoArgs, SsoError};
pub use tokens::{Role, TokenError, Tokens};
