//! JWT verification done right (API2). The cryptography is jsonwebtoken's; this module decides
//! which key may verify which token:
//!
//! - every key is bound to one algorithm, and the token header's `alg` must name exactly that
//!   algorithm, so `alg: none` in any spelling, RS256→HS256 key confusion (the public key used
//!   as an HMAC secret) and algorithm switching fail before any cryptography runs;
//! - `kid` only selects among configured keys; `jku`, `x5u`, `jwk` and `x5c` are never read;
//!   a `crit` header (an extension this verifier does not implement) is refused;
//! - tokens over the size cap are refused before parsing; duplicate JSON keys in the header or
//!   the payload are refused (parsers disagree on which one wins);
//! - `exp`/`nbf`/`iat` with a bounded leeway, required claims, `iss`, `aud`, and the token type
//!   (a claim or the `typ` header), so a refresh or ID token never passes as an access token.
//!
//! Each failure has its own reason for logs and metrics; clients see one generic 401.

use std::collections::HashSet;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use portcullis_policy::{Jwt, JwtAlg, KeyMaterial, TokenType};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    TooLarge,
    Malformed,
    DuplicateKeys,
    UnknownKey,
    AlgorithmMismatch,
    CriticalHeader,
    BadSignature,
    Expired,
    NotYetValid,
    MissingClaim,
    WrongIssuer,
    WrongAudience,
    WrongType,
    Revoked,
    RefreshReused,
}

impl AuthFailure {
    /// A stable label for logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::Missing => "token_missing",
            AuthFailure::TooLarge => "token_too_large",
            AuthFailure::Malformed => "token_malformed",
            AuthFailure::DuplicateKeys => "token_duplicate_keys",
            AuthFailure::UnknownKey => "token_unknown_key",
            AuthFailure::AlgorithmMismatch => "token_algorithm_mismatch",
            AuthFailure::CriticalHeader => "token_crit_header",
            AuthFailure::BadSignature => "token_bad_signature",
            AuthFailure::Expired => "token_expired",
            AuthFailure::NotYetValid => "token_not_yet_valid",
            AuthFailure::MissingClaim => "token_missing_claim",
            AuthFailure::WrongIssuer => "token_wrong_issuer",
            AuthFailure::WrongAudience => "token_wrong_audience",
            AuthFailure::WrongType => "token_wrong_type",
            AuthFailure::Revoked => "token_revoked",
            AuthFailure::RefreshReused => "refresh_token_reused",
        }
    }
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// A verified token.
#[derive(Clone, Debug, PartialEq)]
pub struct Verified {
    pub claims: Map<String, Value>,
}

impl Verified {
    pub fn str_claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    pub fn int_claim(&self, name: &str) -> Option<i64> {
        self.claims.get(name).and_then(Value::as_i64)
    }

    /// A claim as a header value: strings as they are, other JSON as JSON.
    pub fn claim_text(&self, name: &str) -> Option<String> {
        match self.claims.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }
}

struct VerifyKey {
    kid: Option<String>,
    alg: JwtAlg,
    key: DecodingKey,
    validation: Validation,
}

/// Keys fetched from an identity provider's JWKS, each pinned to one allowed algorithm.
pub struct KeySet(Vec<VerifyKey>);

impl KeySet {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|k| k.kid.as_deref())
    }
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|k| (k.kid.as_deref(), k.alg)))
            .finish()
    }
}

/// The verifier built from a policy's `auth.jwt`.
pub struct Verifier {
    keys: Vec<VerifyKey>,
    /// The validation every key starts from (claims, leeway, issuer, audience).
    template: Validation,
    require: Vec<String>,
    leeway: i64,
    max_bytes: usize,
    cookie: Option<String>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

pub fn algorithm(a: JwtAlg) -> Algorithm {
    match a {
        JwtAlg::HS256 => Algorithm::HS256,
        JwtAlg::HS384 => Algorithm::HS384,
        JwtAlg::HS512 => Algorithm::HS512,
        JwtAlg::RS256 => Algorithm::RS256,
        JwtAlg::RS384 => Algorithm::RS384,
        JwtAlg::RS512 => Algorithm::RS512,
        JwtAlg::PS256 => Algorithm::PS256,
        JwtAlg::PS384 => Algorithm::PS384,
        JwtAlg::PS512 => Algorithm::PS512,
        JwtAlg::ES256 => Algorithm::ES256,
        JwtAlg::ES384 => Algorithm::ES384,
        JwtAlg::EdDSA => Algorithm::EdDSA,
    }
}

fn decoding_key(alg: JwtAlg, m: &KeyMaterial) -> Result<DecodingKey, String> {
    let r = match (alg, m) {
        (a, KeyMaterial::Secret(s)) if a.is_hmac() => DecodingKey::from_secret(s),
        (
            JwtAlg::RS256
            | JwtAlg::RS384
            | JwtAlg::RS512
            | JwtAlg::PS256
            | JwtAlg::PS384
            | JwtAlg::PS512,
            KeyMaterial::PublicPem(p),
        ) => DecodingKey::from_rsa_pem(p),
        (JwtAlg::ES256 | JwtAlg::ES384, KeyMaterial::PublicPem(p)) => DecodingKey::from_ec_pem(p),
        (JwtAlg::EdDSA, KeyMaterial::PublicPem(p)) => DecodingKey::from_ed_pem(p),
        (a, _) => return Err(format!("{} cannot use this key material", a.name())),
    };
    r.map_err(|e| format!("{} key: {e}", alg.name()))
}

/// The template, allowing exactly one algorithm.
fn pinned(template: &Validation, alg: JwtAlg) -> Validation {
    let mut v = template.clone();
    v.algorithms = vec![algorithm(alg)];
    v
}

/// The one algorithm a JWK may be used with: its own `alg` when it names one of `allowed`,
/// else the only allowed algorithm its key type fits. Anything else is skipped.
fn jwk_alg(jwk: &serde_json::Value, allowed: &[JwtAlg]) -> Option<JwtAlg> {
    if let Some(a) = jwk.get("alg").and_then(Value::as_str) {
        return allowed.iter().copied().find(|x| x.name() == a);
    }
    let fits: Vec<JwtAlg> = match (
        jwk.get("kty").and_then(Value::as_str),
        jwk.get("crv").and_then(Value::as_str),
    ) {
        (Some("RSA"), _) => allowed
            .iter()
            .copied()
            .filter(|a| a.name().starts_with("RS") || a.name().starts_with("PS"))
            .collect(),
        (Some("EC"), Some("P-256")) => allowed
            .iter()
            .copied()
            .filter(|a| *a == JwtAlg::ES256)
            .collect(),
        (Some("EC"), Some("P-384")) => allowed
            .iter()
            .copied()
            .filter(|a| *a == JwtAlg::ES384)
            .collect(),
        (Some("OKP"), Some("Ed25519")) => allowed
            .iter()
            .copied()
            .filter(|a| *a == JwtAlg::EdDSA)
            .collect(),
        _ => Vec::new(),
    };
    (fits.len() == 1).then(|| fits[0])
}

impl Verifier {
    /// Builds the key set of a JWKS document: public keys only (`kty: oct` and keys carrying
    /// private parts are skipped), each pinned to one of `allowed`.
    pub fn key_set(&self, jwks: &[u8], allowed: &[JwtAlg]) -> Result<KeySet, String> {
        let doc: Value = serde_json::from_slice(jwks).map_err(|e| format!("not JSON: {e}"))?;
        let list = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("no `keys` array")?;
        let mut keys = Vec::new();
        for k in list {
            let private = ["d", "p", "q", "k"].iter().any(|f| k.get(f).is_some());
            if private
                || k.get("use")
                    .and_then(Value::as_str)
                    .is_some_and(|u| u != "sig")
            {
                continue;
            }
            let Some(alg) = jwk_alg(k, allowed).filter(|a| !a.is_hmac()) else {
                continue;
            };
            let Ok(jwk) = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(k.clone()) else {
                continue;
            };
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            keys.push(VerifyKey {
                kid: k.get("kid").and_then(Value::as_str).map(str::to_owned),
                alg,
                key,
                validation: pinned(&self.template, alg),
            });
        }
        Ok(KeySet(keys))
    }

    pub fn new(jwt: &Jwt) -> Result<Self, String> {
        let mut spec_claims: HashSet<String> = jwt
            .require
            .iter()
            .filter(|c| ["exp", "nbf", "aud", "iss", "sub"].contains(&c.as_str()))
            .cloned()
            .collect();
        // An audience or issuer to check is one the token must carry: jsonwebtoken passes a
        // token without the claim at all, and a token of the same identity provider minted for
        // another API (without `aud`) would then be taken.
        if !jwt.audience.is_empty() {
            spec_claims.insert("aud".to_owned());
        }
        if !jwt.issuer.is_empty() {
            spec_claims.insert("iss".to_owned());
        }
        let mut template = Validation::new(Algorithm::HS256);
        template.required_spec_claims = spec_claims;
        template.leeway = jwt.leeway.as_secs();
        template.validate_exp = true;
        template.validate_nbf = true;
        template.validate_aud = !jwt.audience.is_empty();
        if !jwt.audience.is_empty() {
            template.set_audience(&jwt.audience);
        }
        if !jwt.issuer.is_empty() {
            template.set_issuer(&jwt.issuer);
        }
        let mut keys = Vec::new();
        for k in &jwt.keys {
            keys.push(VerifyKey {
                kid: k.kid.clone(),
                alg: k.alg,
                key: decoding_key(k.alg, &k.material)?,
                validation: pinned(&template, k.alg),
            });
        }
        Ok(Self {
            keys,
            template,
            require: jwt.require.clone(),
            leeway: i64::try_from(jwt.leeway.as_secs()).unwrap_or(30),
            max_bytes: jwt.max_token_bytes,
            cookie: jwt.cookie.clone(),
        })
    }

    /// The bearer token of a request: `Authorization: Bearer`, else the configured cookie.
    pub fn token<'h>(&self, headers: &'h HeaderMap) -> Result<&'h str, AuthFailure> {
        // One token or none: with two, the gateway would verify one (the first) and an
        // upstream that trusts it might act on the other (the last).
        let mut fields = headers.get_all(http::header::AUTHORIZATION).iter();
        if let Some(v) = fields.next() {
            if fields.next().is_some() {
                return Err(AuthFailure::Malformed);
            }
            let v = v.to_str().map_err(|_| AuthFailure::Malformed)?;
            let (scheme, token) = v.split_once(' ').ok_or(AuthFailure::Malformed)?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(AuthFailure::Missing);
            }
            return Ok(token.trim());
        }
        let name = self.cookie.as_deref().ok_or(AuthFailure::Missing)?;
        let mut named = headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v);
        let token = named.next().ok_or(AuthFailure::Missing)?;
        // The same for a cookie sent twice (frameworks differ on which copy wins).
        if named.next().is_some() {
            return Err(AuthFailure::Malformed);
        }
        Ok(token)
    }

    /// Verifies `token` and checks its type. `now` is seconds since the epoch.
    pub fn verify(
        &self,
        token: &str,
        expected: &TokenType,
        now: i64,
    ) -> Result<Verified, AuthFailure> {
        self.verify_with(token, expected, now, None)
    }

    /// [`Verifier::verify`] with the keys of a JWKS as well.
    pub fn verify_with(
        &self,
        token: &str,
        expected: &TokenType,
        now: i64,
        extra: Option<&KeySet>,
    ) -> Result<Verified, AuthFailure> {
        if token.len() > self.max_bytes {
            return Err(AuthFailure::TooLarge);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthFailure::Malformed);
        };
        if h.is_empty() || p.is_empty() || sig.is_empty() {
            return Err(AuthFailure::Malformed);
        }
        let header = json_object(h)?;
        if header.contains_key("crit") {
            return Err(AuthFailure::CriticalHeader);
        }
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(AuthFailure::Malformed)?;
        let extra = extra.map_or(&[][..], |k| &k.0[..]);
        let key = match header.get("kid") {
            Some(Value::String(kid)) => self
                .keys
                .iter()
                .chain(extra)
                .find(|k| k.kid.as_deref() == Some(kid)),
            Some(_) => return Err(AuthFailure::Malformed),
            None if self.keys.len() + extra.len() == 1 => self.keys.first().or(extra.first()),
            None => None,
        }
        .ok_or(AuthFailure::UnknownKey)?;
        // The algorithm is the key's, never the token's choice.
        if alg != key.alg.name() {
            return Err(AuthFailure::AlgorithmMismatch);
        }
        json_object(p)?; // duplicate keys and shape, before the library parses it its own way
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &key.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => AuthFailure::BadSignature,
                ErrorKind::ExpiredSignature => AuthFailure::Expired,
                ErrorKind::ImmatureSignature => AuthFailure::NotYetValid,
                ErrorKind::MissingRequiredClaim(_) => AuthFailure::MissingClaim,
                ErrorKind::InvalidIssuer => AuthFailure::WrongIssuer,
                ErrorKind::InvalidAudience => AuthFailure::WrongAudience,
                ErrorKind::InvalidAlgorithm => AuthFailure::AlgorithmMismatch,
                _ => AuthFailure::Malformed,
            })?;
        let claims = data.claims;
        if self
            .require
            .iter()
            .any(|c| claims.get(c).is_none_or(Value::is_null))
        {
            return Err(AuthFailure::MissingClaim);
        }
        if let Some(iat) = claims.get("iat") {
            let iat = iat.as_i64().ok_or(AuthFailure::Malformed)?;
            if iat > now + self.leeway {
                return Err(AuthFailure::NotYetValid);
            }
        }
        let typed = match expected {
            TokenType::Any => true,
            TokenType::Claim { name, value } => {
                claims.get(name).and_then(Value::as_str) == Some(value.as_str())
            }
            TokenType::Header(want) => header.get("typ").and_then(Value::as_str).is_some_and(|t| {
                let t = t.to_ascii_lowercase();
                t == want.to_ascii_lowercase()
                    || t == format!("application/{}", want.to_ascii_lowercase())
            }),
        };
        if !typed {
            return Err(AuthFailure::WrongType);
        }
        Ok(Verified { claims })
    }
}

/// Decodes one base64url segment into a JSON object, refusing duplicate keys at any depth.
fn json_object(segment: &str) -> Result<Map<String, Value>, AuthFailure> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| AuthFailure::Malformed)?;
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    NoDuplicates.deserialize(&mut de).map_err(|e| {
        if e.to_string().contains("duplicate key") {
            AuthFailure::DuplicateKeys
        } else {
            AuthFailure::Malformed
        }
    })?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(AuthFailure::Malformed),
    }
}

/// Whether `bytes` is JSON with an object that repeats a key (at any depth, however the key
/// is escaped). Parsers disagree on which copy counts (serde keeps the last, others the
/// first), so a body the gateway checks must not be read one way here and another upstream.
/// Bytes that are not JSON are not this function's to judge: false.
pub fn repeats_a_key(bytes: &[u8]) -> bool {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    NoDuplicates
        .deserialize(&mut de)
        .is_err_and(|e| e.to_string().contains("duplicate key"))
}

/// Walks a JSON document and fails on the first object with a repeated key.
#[derive(Clone, Copy)]
struct NoDuplicates;

impl<'de> DeserializeSeed<'de> for NoDuplicates {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NoDuplicates {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(k) = map.next_key::<String>()? {
            if !seen.insert(k) {
                return Err(de::Error::custom("duplicate key"));
            }
            map.next_value_seed(self)?;
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn repeated_keys_are_found_at_any_depth_however_escaped() {
        assert!(super::repeats_a_key(br#"{"email":"a@x","email":"b@x"}"#));
        assert!(super::repeats_a_key(br#"{"a":[{"u":1,"\u0075":2}]}"#));
        assert!(!super::repeats_a_key(br#"{"email":"a@x","Email":"b@x"}"#));
        assert!(!super::repeats_a_key(b"email=a&email=b"));
    }

    /// One token or none: two `Authorization` fields, or the token cookie twice, are refused
    /// (the gateway would check one copy, an upstream might act on the other).
    #[test]
    fn a_token_sent_twice_is_refused() {
        use portcullis_policy::{Jwt, JwtAlg, JwtKey, KeyMaterial, TokenType};
        let jwt = Jwt {
            keys: vec![JwtKey {
                kid: None,
                alg: JwtAlg::HS256,
                material: KeyMaterial::Secret(b"0123456789abcdefghijklmnopqrstuvwxyzABCD".to_vec()),
            }],
            jwks: None,
            issuer: vec![],
            audience: vec![],
            require: vec!["exp".into()],
            leeway: std::time::Duration::from_secs(30),
            max_token_bytes: 8192,
            token_type: TokenType::Claim {
                name: "type".into(),
                value: "access".into(),
            },
            cookie: Some("session".into()),
            forward_claims: vec![],
        };
        let v = super::Verifier::new(&jwt).expect("verifier");
        let mut h = http::HeaderMap::new();
        h.append("authorization", http::HeaderValue::from_static("Bearer a"));
        assert_eq!(v.token(&h), Ok("a"));
        h.append("authorization", http::HeaderValue::from_static("Bearer b"));
        assert_eq!(v.token(&h), Err(super::AuthFailure::Malformed));
        let mut c = http::HeaderMap::new();
        c.append("cookie", http::HeaderValue::from_static("x=1; session=a"));
        assert_eq!(v.token(&c), Ok("a"));
        c.append("cookie", http::HeaderValue::from_static("session=b"));
        assert_eq!(v.token(&c), Err(super::AuthFailure::Malformed));
    }
}
