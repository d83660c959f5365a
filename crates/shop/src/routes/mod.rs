//! Handlers, one module per resource.

pub mod admin;
pub mod auth;
pub mod legacy;
pub mod meta;
pub mod orders;
pub mod products;
pub mod promo;
pub mod users;

use crate::error::{ApiError, ApiResult};

/// Free text that will be shown back to users must not carry markup.
pub(crate) fn plain_text(field: &'static str, value: &str, max_chars: usize) -> ApiResult<()> {
    let n = value.chars().count();
    if n == 0 || n > max_chars {
        return Err(ApiError::unprocessable(format!(
            "`{field}` must have 1 to {max_chars} characters"
        )));
    }
    let lower = value.to_ascii_lowercase();
    if value.contains(['<', '>'])
        || lower.contains("javascript:")
        || value.chars().any(char::is_control)
    {
        return Err(ApiError::unprocessable(format!(
            "`{field}` must be plain text without markup"
        )));
    }
    Ok(())
}

/// The `nosqli` weakness's matcher: a value or an operator object (`{"$ne": x}`, `$gt`,
/// `$in`...), matched against a stored string the way a document store's query would.
pub(crate) fn matches_filter(filter: &serde_json::Value, stored: &str) -> bool {
    use serde_json::Value;
    let Value::Object(ops) = filter else {
        return filter.as_str() == Some(stored);
    };
    !ops.is_empty()
        && ops.iter().all(|(op, v)| {
            let text = v.as_str();
            match op.as_str() {
                "$eq" => text == Some(stored),
                "$ne" => text != Some(stored),
                "$gt" => text.is_some_and(|t| stored > t),
                "$gte" => text.is_some_and(|t| stored >= t),
                "$lt" => text.is_some_and(|t| stored < t),
                "$lte" => text.is_some_and(|t| stored <= t),
                "$exists" => v.as_bool() == Some(true),
                "$in" => v
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(stored))),
                "$nin" => v
                    .as_array()
                    .is_some_and(|a| !a.iter().any(|x| x.as_str() == Some(stored))),
                _ => false,
            }
        })
}
