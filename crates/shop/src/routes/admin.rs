//! Administration. The secure default checks the caller's role on every route; `bfla` checks
//! only that the caller is logged in.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use crate::auth::AuthUser;
use crate::config::Vuln;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path};
use crate::routes::users::{USER_COLUMNS, UserRow};
use crate::state::AppState;

fn require_admin(state: &AppState, user: &AuthUser) -> ApiResult<()> {
    if user.is_admin() || state.config.vulns.has(Vuln::Bfla) {
        Ok(())
    } else {
        Err(ApiError::forbidden())
    }
}

pub async fn list_users(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<impl IntoResponse> {
    require_admin(&state, &user)?;
    let rows = state
        .db
        .call(|c| {
            let sql =
                format!("SELECT {USER_COLUMNS} FROM users ORDER BY created_at, id LIMIT 1000");
            let mut stmt = c.prepare(&sql).map_err(|e| ApiError::db(&sql, &e))?;
            stmt.query_map([], UserRow::from_row)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(|e| ApiError::db(&sql, &e))
        })
        .await?;
    let exposed = state.config.vulns.has(Vuln::DataExposure);
    let items: Vec<_> = rows.iter().map(|u| u.view(exposed)).collect();
    Ok(Json(json!({ "items": items })))
}

pub async fn delete_user(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    require_admin(&state, &user)?;
    if id == user.id {
        return Err(ApiError::conflict(
            "administrators cannot delete themselves",
        ));
    }
    let n = state
        .db
        .call(move |c| {
            const SQL: &str = "DELETE FROM users WHERE id = ?1";
            c.execute(SQL, [id]).map_err(|e| ApiError::db(SQL, &e))
        })
        .await?;
    if n == 0 {
        return Err(ApiError::not_found());
    }
    Ok(StatusCode::NO_CONTENT)
}
