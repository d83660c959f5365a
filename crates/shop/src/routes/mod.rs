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
