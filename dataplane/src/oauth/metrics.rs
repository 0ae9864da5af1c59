//! The oauth capability's metrics. Labels are fixed words from this module
//! (endpoints, grants, outcomes), never anything a client sent.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// `metadata`, `authorize`, `token`, `register`, ... or `other`.
    pub endpoint: &'static str,
    /// The HTTP status class answered: `2xx`, `3xx`, `4xx`, `5xx`.
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// `authorization_code`, `refresh_token`, `client_credentials`.
    pub grant: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GuardLabels {
    /// `bearer`, `session`, `login_redirect`, `challenge`, `invalid_token`,
    /// `insufficient_scope`, `forbidden`, `unavailable`, `preflight`.
    pub result: &'static str,
}

#[derive(Clone, Default)]
pub struct OauthMetrics {
    pub requests: Family<EndpointLabels, Counter>,
    pub tokens: Family<TokenLabels, Counter>,
    pub guard: Family<GuardLabels, Counter>,
    pub rate_limited: Counter,
}

impl OauthMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("oauth");
        r.register(
            "requests",
            "Requests to the authorization server, by endpoint and status class",
            self.requests.clone(),
        );
        r.register(
            "tokens_issued",
            "Access tokens issued, by grant type",
            self.tokens.clone(),
        );
        r.register(
            "guard_decisions",
            "Decisions of the guard on protected hosts, by result",
            self.guard.clone(),
        );
        r.register(
            "rate_limited",
            "Requests to token, registration and login endpoints refused with 429",
            self.rate_limited.clone(),
        );
    }

    pub fn request(&self, endpoint: &'static str, status: http::StatusCode) {
        let class = match status.as_u16() {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests
            .get_or_create(&EndpointLabels { endpoint, class })
            .inc();
    }

    pub fn guard(&self, result: &'static str) {
        self.guard.get_or_create(&GuardLabels { result }).inc();
    }

    pub fn token(&self, grant: &'static str) {
        self.tokens.get_or_create(&TokenLabels { grant }).inc();
    }
}
