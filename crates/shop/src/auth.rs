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
    /// The HMAC secret (what `jwt-kid-injection` stores under kid `k1` is this, as text).
    hmac: Vec<u8>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    rsa: Option<RsaKeys>,
    /// Whether tokens are signed with the RSA key.
    sign_rsa: bool,
    /// The `kid` put in the header of HS256 tokens.
    kid: Option<&'static str>,
}

/// A per-process RSA key pair.
pub struct RsaKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// The public key as PEM (SubjectPublicKeyInfo).
    public_pem: String,
    /// The public key as a JWK set, as served at `/.well-known/jwks.json`.
    pub jwks: serde_json::Value,
}

/// The `kid` of the RSA key.
pub const RSA_KID: &str = "shop-rsa-1";
/// The `kid` of the HMAC key.
pub const HMAC_KID: &str = "k1";

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(redacted)")
    }
}

impl std::fmt::Debug for RsaKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RsaKeys(redacted)")
    }
}

impl RsaKeys {
    /// A fresh 2048-bit key.
    pub fn generate() -> Result<Self, String> {
        let pair =
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                .map_err(|e| e.to_string())?;
        let encoding = EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes())
            .map_err(|e| e.to_string())?;
        let public_pem = pair.public_key_pem();
        let decoding =
            DecodingKey::from_rsa_pem(public_pem.as_bytes()).map_err(|e| e.to_string())?;
        let mut jwk = serde_json::to_value(
            jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding, Algorithm::RS256)
                .map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        jwk["kid"] = RSA_KID.into();
        jwk["use"] = "sig".into();
        Ok(Self {
            encoding,
            decoding,
            public_pem,
            jwks: serde_json::json!({ "keys": [jwk] }),
        })
    }
}

impl Keys {
    pub fn new(
        secret: &[u8],
        rsa: Option<RsaKeys>,
        sign_rsa: bool,
        kid: bool,
    ) -> Result<Self, jsonwebtoken::errors::Error> {
        Ok(Self {
            hmac: secret.to_vec(),
            encoding: EncodingKey::from_secret(secret)?,
            decoding: DecodingKey::from_secret(secret)?,
            sign_rsa: sign_rsa && rsa.is_some(),
            rsa,
            kid: kid.then_some(HMAC_KID),
        })
    }

    /// The RSA key, when the shop has one.
    pub fn rsa(&self) -> Option<&RsaKeys> {
        self.rsa.as_ref()
    }

    /// The HMAC secret as stored in the key table (`jwt-kid-injection`).
    pub fn hmac_secret(&self) -> &[u8] {
        &self.hmac
    }

    pub fn sign(&self, claims: &Claims) -> ApiResult<String> {
        let (header, key) = match (&self.rsa, self.sign_rsa) {
            (Some(rsa), true) => {
                let mut h = Header::new(Algorithm::RS256);
                h.kid = Some(RSA_KID.into());
                (h, &rsa.encoding)
            }
            _ => {
                let mut h = Header::new(Algorithm::HS256);
                h.kid = self.kid.map(str::to_owned);
                (h, &self.encoding)
            }
        };
        jsonwebtoken::encode(&header, claims, key)
            .map_err(|e| ApiError::internal(format!("token signing failed: {e}")))
    }

    /// The algorithm the secure default pins.
    fn pinned(&self) -> Algorithm {
        if self.sign_rsa {
            Algorithm::RS256
        } else {
            Algorithm::HS256
        }
    }
}

fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
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
pub async fn decode(state: &AppState, token: &str, expected_type: &str) -> ApiResult<Claims> {
    let vulns = &state.config.vulns;
    if vulns.has(Vuln::JwtAlgNone)
        && let Some(claims) = decode_unsigned(token)
    {
        return Ok(claims);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| ApiError::unauthorized())?;
    let keys = &state.keys;
    // The weaknesses that trust the header's choice of algorithm.
    let trust_header = vulns.has(Vuln::JwtAlgNone) || vulns.has(Vuln::JwtKeyConfusion);
    let alg = if trust_header {
        header.alg
    } else {
        keys.pinned()
    };
    let mut candidates: Vec<DecodingKey> = Vec::new();
    if is_hmac(alg) {
        match (&header.kid, vulns.has(Vuln::JwtKidInjection)) {
            // The weakness: the key is whatever the key table query returns for this kid.
            (Some(kid), true) => {
                if let Some(secret) = kid_secret(state, kid.clone()).await? {
                    candidates.push(
                        DecodingKey::from_secret(&secret).map_err(|_| ApiError::unauthorized())?,
                    );
                }
            }
            _ => candidates.push(keys.decoding.clone()),
        }
        // The weakness: the RSA public key's PEM text doubles as an HMAC secret.
        if let (Some(rsa), true) = (&keys.rsa, vulns.has(Vuln::JwtKeyConfusion)) {
            candidates.push(
                DecodingKey::from_secret(rsa.public_pem.as_bytes())
                    .map_err(|_| ApiError::unauthorized())?,
            );
        }
    } else if let Some(rsa) = &keys.rsa {
        candidates.push(rsa.decoding.clone());
    }
    let mut validation = Validation::new(alg);
    validation.set_required_spec_claims(&["exp", "iat", "sub", "jti"]);
    validation.leeway = 30;
    if vulns.has(Vuln::JwtNoExpiry) {
        validation.validate_exp = false;
        validation.required_spec_claims.remove("exp");
    }
    let claims = candidates
        .iter()
        .find_map(|key| jsonwebtoken::decode::<Claims>(token, key, &validation).ok())
        .ok_or_else(ApiError::unauthorized)?
        .claims;
    if claims.typ != expected_type && !vulns.has(Vuln::JwtNoExpiry) {
        return Err(ApiError::unauthorized());
    }
    Ok(claims)
}

/// The `jwt-kid-injection` weakness: the key table is queried with the header's `kid` spliced
/// into the SQL, so `x' UNION SELECT 'anything' --` makes the key `anything`.
async fn kid_secret(state: &AppState, kid: String) -> ApiResult<Option<Vec<u8>>> {
    if kid.len() > 256 {
        return Ok(None);
    }
    state
        .db
        .call(move |c| {
            let sql = format!("SELECT secret FROM jwt_keys WHERE kid = '{kid}'");
            // A malformed query is a failed verification, not a server error.
            Ok(c.query_row(&sql, [], |r| r.get::<_, String>(0))
                .ok()
                .map(String::into_bytes))
        })
        .await
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
        let claims = decode(state, token, "access").await?;
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
