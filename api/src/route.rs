//! Route: a path (and method) rule within a ProxyTarget.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{AuthPolicy, Backend, LocalRef};

/// A rule that sends some requests of a ProxyTarget elsewhere, or guards them
/// differently. Higher priority wins, then the longer match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec {
    /// The ProxyTarget (same namespace) whose hosts this Route applies to.
    pub target_ref: LocalRef,
    /// Which requests the Route matches.
    #[serde(rename = "match")]
    pub matches: RouteMatch,
    /// Higher wins; equal priorities are ordered by the longer path value.
    #[serde(default)]
    #[schemars(range(min = 0, max = 10000))]
    pub priority: i32,
    /// Override of the target's backend. Absent: the target's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,
    /// Override of the target's auth policy. Absent: the target's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthPolicy>,
}

/// A path match and an optional method list; both must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RouteMatch {
    /// The request path to match.
    pub path: PathMatch,
    /// HTTP methods (uppercase). Absent or empty: every method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), inner(regex(pattern = r"^[A-Z]{1,16}$")))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub methods: Option<Vec<String>>,
}

/// How a path is compared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PathMatchType {
    /// Segment-aware prefix: `/v1` matches `/v1` and `/v1/x`, not `/v10`.
    #[default]
    Prefix,
    /// The whole path, exactly.
    Exact,
    /// A regular expression (RE2 syntax) anchored at both ends.
    RegularExpression,
}

/// A path match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.type == 'RegularExpression' || self.value.startsWith('/')", "message": "Prefix and Exact values must start with /"}
]))]
pub struct PathMatch {
    /// Prefix, Exact or RegularExpression.
    #[serde(rename = "type")]
    pub kind: PathMatchType,
    /// The path, prefix or expression.
    #[schemars(length(min = 1, max = 1024))]
    pub value: String,
}
