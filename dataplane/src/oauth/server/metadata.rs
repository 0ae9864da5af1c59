//! RFC 8414 metadata (and the same document as OIDC discovery) and JWKS.

use http::{HeaderValue, Response, StatusCode, header};

use super::Ctx;
use crate::oauth::web;
use crate::reverse::ProxyBody;

pub fn document(ctx: &Ctx, oidc: bool) -> Response<ProxyBody> {
    let issuer = ctx.issuer();
    let config = &ctx.server.config;
    let mut doc = serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        "introspection_endpoint": format!("{issuer}/introspect"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "scopes_supported": config.scopes,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "authorization_response_iss_parameter_supported": true,
        "client_id_metadata_document_supported": config.client_id_metadata_documents,
    });
    if config.dynamic_registration {
        doc["registration_endpoint"] = format!("{issuer}/register").into();
    }
    if oidc {
        doc["subject_types_supported"] = serde_json::json!(["public"]);
        doc["id_token_signing_alg_values_supported"] = serde_json::json!(["ES256", "RS256"]);
        doc["claims_supported"] = serde_json::json!([
            "sub",
            "iss",
            "aud",
            "exp",
            "iat",
            "preferred_username",
            "email",
            "name",
            "groups"
        ]);
    }
    let mut r = web::with_cors(web::json(StatusCode::OK, &doc));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

pub fn jwks(ctx: &Ctx) -> Response<ProxyBody> {
    let mut r = web::with_cors(web::json(StatusCode::OK, ctx.server.keys.jwks()));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}
