//! The shop's OpenAPI 3.1 description. The YAML in `examples/shop/openapi.yaml` is the source;
//! `/openapi.json` serves the same document as JSON.

/// The description as written.
pub const YAML: &str = include_str!("../../../examples/shop/openapi.yaml");

/// The description as JSON.
pub fn json() -> Result<String, String> {
    let value: serde_json::Value = serde_saphyr::from_str(YAML).map_err(|e| e.to_string())?;
    serde_json::to_string(&value).map_err(|e| e.to_string())
}
