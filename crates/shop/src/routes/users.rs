//! The caller's own profile and avatar.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use rusqlite::{OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::AuthUser;
use crate::config::Vuln;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, RawJson, parse_json};
use crate::routes::plain_text;
use crate::ssrf::FetchError;
use crate::state::AppState;

/// Every column of a user: what `data-exposure` sends.
#[derive(Debug, Serialize)]
pub struct UserRow {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub name: String,
    pub role: String,
    pub balance_cents: i64,
    pub avatar_url: Option<String>,
    pub internal_notes: String,
    pub last_login_ip: Option<String>,
    pub created_at: i64,
}

pub const USER_COLUMNS: &str = "id, email, password_hash, name, role, balance_cents, avatar_url, internal_notes, last_login_ip, created_at";

impl UserRow {
    pub fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            email: r.get(1)?,
            password_hash: r.get(2)?,
            name: r.get(3)?,
            role: r.get(4)?,
            balance_cents: r.get(5)?,
            avatar_url: r.get(6)?,
            internal_notes: r.get(7)?,
            last_login_ip: r.get(8)?,
            created_at: r.get(9)?,
        })
    }

    /// The allowlisted view: what the contract promises, nothing else.
    pub fn view(&self, exposed: bool) -> serde_json::Value {
        if exposed {
            return serde_json::to_value(self).unwrap_or_default();
        }
        json!({
            "id": self.id,
            "email": self.email,
            "name": self.name,
            "role": self.role,
            "balance_cents": self.balance_cents,
            "avatar_url": self.avatar_url,
            "created_at": self.created_at,
        })
    }
}

pub(crate) async fn load_user(state: &AppState, id: String) -> ApiResult<UserRow> {
    state
        .db
        .call(move |c| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1");
            c.query_row(&sql, [id], UserRow::from_row)
                .optional()
                .map_err(|e| ApiError::db(&sql, &e))
        })
        .await?
        .ok_or_else(ApiError::not_found)
}

pub async fn me(State(state): State<AppState>, user: AuthUser) -> ApiResult<impl IntoResponse> {
    let row = load_user(&state, user.id).await?;
    Ok(Json(row.view(state.config.vulns.has(Vuln::DataExposure))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateMe {
    name: Option<String>,
}

/// What `mass-assignment` binds: every column a client can name.
#[derive(Debug, Deserialize)]
pub struct UpdateMeOpen {
    name: Option<String>,
    role: Option<String>,
    balance_cents: Option<i64>,
}

pub async fn update_me(
    State(state): State<AppState>,
    user: AuthUser,
    RawJson(body): RawJson,
) -> ApiResult<impl IntoResponse> {
    let req = if state.config.vulns.has(Vuln::MassAssignment) {
        parse_json::<UpdateMeOpen>(&body)?
    } else {
        let r = parse_json::<UpdateMe>(&body)?;
        UpdateMeOpen {
            name: r.name,
            role: None,
            balance_cents: None,
        }
    };
    if let Some(name) = &req.name {
        // `no-rate-limit` also drops the length bound (API4).
        let max = if state.config.vulns.has(Vuln::NoRateLimit) {
            usize::MAX
        } else {
            100
        };
        plain_text("name", name, max)?;
    }
    let id = user.id.clone();
    let new_name = req.name.clone();
    state
        .db
        .call(move |c| {
            const SQL: &str =
                "UPDATE users SET name = COALESCE(?2, name), role = COALESCE(?3, role),
                balance_cents = COALESCE(?4, balance_cents) WHERE id = ?1";
            c.execute(
                SQL,
                rusqlite::params![id, req.name, req.role, req.balance_cents],
            )
            .map_err(|e| ApiError::db(SQL, &e))
        })
        .await?;
    if let (Some(name), true) = (&new_name, state.config.vulns.has(Vuln::Cmdi)) {
        greet_shell(name).await;
    }
    let row = load_user(&state, user.id).await?;
    Ok(Json(row.view(state.config.vulns.has(Vuln::DataExposure))))
}

/// The `cmdi` weakness: a "notify the mail system" step that splices the new display name
/// into a shell command line. Bounded by a timeout; its output is discarded.
async fn greet_shell(name: &str) {
    let line = format!("printf '%s\\n' Welcome {name} >/dev/null");
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(line)
        .current_dir(std::env::temp_dir())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    if let Ok(mut child) = child {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait()).await;
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AvatarReq {
    url: String,
}

pub async fn avatar(
    State(state): State<AppState>,
    user: AuthUser,
    Json(req): Json<AvatarReq>,
) -> ApiResult<impl IntoResponse> {
    if req.url.len() > 2048 {
        return Err(ApiError::unprocessable(
            "`url` must have at most 2048 characters",
        ));
    }
    let fetched = state.avatar.fetch(&req.url).await.map_err(|e| match e {
        FetchError::Blocked(why) => {
            tracing::info!(reason = why.reason(), "avatar URL refused");
            ApiError::unprocessable(format!("`url` refused: {why}"))
        }
        FetchError::Refused(why) => ApiError::unprocessable(format!("`url` refused: {why}")),
        FetchError::Failed(msg) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "Bad Gateway",
            "the image could not be fetched",
        )
        .with_internal(msg),
    })?;
    let (id, url) = (user.id, req.url.clone());
    state
        .db
        .call(move |c| {
            const SQL: &str = "UPDATE users SET avatar_url = ?2 WHERE id = ?1";
            c.execute(SQL, [id, url]).map_err(|e| ApiError::db(SQL, &e))
        })
        .await?;
    Ok(Json(json!({
        "avatar_url": req.url,
        "content_type": fetched.content_type,
        "size": fetched.size,
    })))
}
