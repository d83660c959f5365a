//! Passwords (Argon2id) and tokens (HS256 JWTs): issuing, verifying, revoking.
//!
//! The secure default pins the algorithm, requires `exp`, `iat`, `sub`, `jti` and `type`,
//! accepts only `type: access` as an access token and checks revocation by `jti` and by
//! refresh family. The switches `jwt-alg-none`, `jwt-weak-secret` and `jwt-no-expiry` each
//! undo one of those.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::Vuln;
use crate::db::{new_id, now};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The claims of every token the shop issues.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    #[serde(rename = "type")]
    pub typ: String,
    pub role: String,
    /// The refresh family: all tokens descending from one login.
    pub fam: String,
}

/// The signing and verification keys.
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(redacted)")
    }
}

impl Keys {
    pub fn hmac(secret: &[u8]) -> Result<Self, jsonwebtoken::errors::Error> {
        Ok(Self {
            encoding: EncodingKey::from_secret(secret)?,
            decoding: DecodingKey::from_secret(secret)?,
        })
    }

    pub fn sign(&self, claims: &Claims) -> ApiResult<String> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| ApiError::internal(format!("token signing failed: {e}")))
    }
}

/// Hashes a password with Argon2id (OWASP parameters: 19 MiB, 2 passes) off the async threads.
pub async fn hash_password(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| ApiError::internal(format!("password hashing failed: {e}")))
    })
    .await
    .map_err(|e| ApiError::internal(format!("hashing task failed: {e}")))?
}

/// Verifies a password against a stored PHC string; with no stored hash (unknown account) it
/// verifies against a dummy so both cases take the same time.
pub async fn verify_password(password: String, stored: Option<String>, dummy: String) -> bool {
    tokio::task::spawn_blocking(move || {
        let known = stored.is_some();
        let phc = stored.unwrap_or(dummy);
        let ok = PasswordHash::new(&phc)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        ok && known
    })
    .await
    .unwrap_or(false)
}

/// An access and a refresh token.
#[derive(Debug, Serialize)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
}

/// Issues a token pair in `family` and records the refresh token.
pub async fn issue_pair(
    state: &AppState,
    user_id: &str,
    role: &str,
    family: &str,
) -> ApiResult<TokenPair> {
    let cfg = &state.config;
    let iat = now();
    let access = Claims {
        sub: user_id.to_owned(),
        iat,
        exp: iat + cfg.access_ttl.as_secs() as i64,
        jti: new_id("at"),
        typ: "access".into(),
        role: role.to_owned(),
        fam: family.to_owned(),
    };
    let refresh = Claims {
        exp: iat + cfg.refresh_ttl.as_secs() as i64,
        jti: new_id("rt"),
        typ: "refresh".into(),
        ..access.clone()
    };
    let pair = TokenPair {
        access_token: state.keys.sign(&access)?,
        refresh_token: state.keys.sign(&refresh)?,
        token_type: "Bearer",
        expires_in: cfg.access_ttl.as_secs(),
    };
    let (jti, fam, sub, exp) = (refresh.jti, refresh.fam, refresh.sub, refresh.exp);
    state
        .db
        .call(move |c| {
            const SQL: &str =
                "INSERT INTO refresh_tokens (jti, family, user_id, exp) VALUES (?1, ?2, ?3, ?4)";
            c.execute(SQL, rusqlite::params![jti, fam, sub, exp])
                .map_err(|e| ApiError::db(SQL, &e))
        })
        .await?;
    Ok(pair)
}

/// Verifies a token's signature and time claims. `expected_type` is enforced unless
/// `jwt-no-expiry` is on.
pub fn decode(state: &AppState, token: &str, expected_type: &str) -> ApiResult<Claims> {
    let vulns = &state.config.vulns;
    let header = jsonwebtoken::decode_header(token).map_err(|_| ApiError::unauthorized());
    if vulns.has(Vuln::JwtAlgNone)
        && let Some(claims) = decode_unsigned(token)
    {
        return Ok(claims);
    }
    let alg = match (vulns.has(Vuln::JwtAlgNone), header) {
        // The weakness: trust the header's choice of algorithm.
        (true, Ok(h)) => h.alg,
        (_, Err(e)) => return Err(e),
        (false, Ok(_)) => Algorithm::HS256,
    };
    let mut validation = Validation::new(alg);
    validation.set_required_spec_claims(&["exp", "iat", "sub", "jti"]);
    validation.leeway = 30;
    if vulns.has(Vuln::JwtNoExpiry) {
        validation.validate_exp = false;
        validation.required_spec_claims.remove("exp");
    }
    let claims = jsonwebtoken::decode::<Claims>(token, &state.keys.decoding, &validation)
        .map_err(|_| ApiError::unauthorized())?
        .claims;
    if claims.typ != expected_type && !vulns.has(Vuln::JwtNoExpiry) {
        return Err(ApiError::unauthorized());
    }
    Ok(claims)
}

/// The `alg: none` weakness: a token whose header says `none` in any casing is taken as is.
fn decode_unsigned(token: &str) -> Option<Claims> {
    let mut parts = token.split('.');
    let (h, p) = (parts.next()?, parts.next()?);
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
    if !header.get("alg")?.as_str()?.eq_ignore_ascii_case("none") {
        return None;
    }
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).ok()?).ok()
}

/// The caller, authenticated by an access token.
#[derive(Clone, Debug)]
pub struct AuthUser {
    pub id: String,
    pub role: String,
    pub claims: Claims,
}

impl AuthUser {
    pub fn is_admin(&self) -> bool {
        self.role == "admin"
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> ApiResult<Self> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(ApiError::unauthorized)?;
        if token.len() > 8192 {
            return Err(ApiError::unauthorized());
        }
        let claims = decode(state, token, "access")?;
        let (jti, fam, sub) = (claims.jti.clone(), claims.fam.clone(), claims.sub.clone());
        // A revoked token, a revoked login family or a deleted account ends the session.
        let valid = state
            .db
            .call(move |c| {
                const SQL: &str = "SELECT NOT EXISTS(SELECT 1 FROM revoked_tokens WHERE jti = ?1)
                    AND NOT EXISTS(SELECT 1 FROM revoked_families WHERE family = ?2)
                    AND EXISTS(SELECT 1 FROM users WHERE id = ?3)";
                c.query_row(SQL, rusqlite::params![jti, fam, sub], |r| {
                    r.get::<_, bool>(0)
                })
                .map_err(|e| ApiError::db(SQL, &e))
            })
            .await?;
        if !valid {
            return Err(ApiError::unauthorized());
        }
        Ok(AuthUser {
            id: claims.sub.clone(),
            role: claims.role.clone(),
            claims,
        })
    }
}
