//! The admin API's OpenAPI 3.1 document, served at `/api/v1/openapi.json`
//! by both the data plane and the operator (each answers the paths it
//! has; the document marks which). CI checks it against the live servers
//! (`e2e/admin/openapi_check.py`): every documented path answers and every
//! answer validates against its schema.

use http::{Response, StatusCode};

use crate::reply::{self, Body};

pub const PATH: &str = "/api/v1/openapi.json";

const DOCUMENT: &str = include_str!("../openapi.json");

pub fn document() -> Response<Body> {
    reply::bytes(StatusCode::OK, "application/json", DOCUMENT)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_is_json_with_paths() {
        let doc: serde_json::Value = serde_json::from_str(super::DOCUMENT).expect("json");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        assert!(doc["paths"].as_object().is_some_and(|p| p.len() > 5));
    }
}
