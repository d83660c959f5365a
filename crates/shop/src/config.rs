//! Shop configuration: the weakness switches and the knobs of each defense.
//!
//! Every weakness is off by default. A switch turns exactly one defense off, so a test (or the
//! scanner) can show the attack working with it on and failing with it off.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// One defense that can be switched off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Vuln {
    Bola,
    Bfla,
    MassAssignment,
    DataExposure,
    JwtAlgNone,
    JwtWeakSecret,
    JwtNoExpiry,
    JwtKeyConfusion,
    JwtKidInjection,
    LoginNoLimit,
    LoginRace,
    NoRateLimit,
    BusinessFlow,
    Ssrf,
    CorsWildcard,
    NoSecurityHeaders,
    VerboseErrors,
    LegacyV1,
    Sqli,
    Nosqli,
    Cmdi,
}

impl Vuln {
    /// Every switch, in the order `--help` lists them.
    pub const ALL: [Vuln; 21] = [
        Vuln::Bola,
        Vuln::Bfla,
        Vuln::MassAssignment,
        Vuln::DataExposure,
        Vuln::JwtAlgNone,
        Vuln::JwtWeakSecret,
        Vuln::JwtNoExpiry,
        Vuln::JwtKeyConfusion,
        Vuln::JwtKidInjection,
        Vuln::LoginNoLimit,
        Vuln::LoginRace,
        Vuln::NoRateLimit,
        Vuln::BusinessFlow,
        Vuln::Ssrf,
        Vuln::CorsWildcard,
        Vuln::NoSecurityHeaders,
        Vuln::VerboseErrors,
        Vuln::LegacyV1,
        Vuln::Sqli,
        Vuln::Nosqli,
        Vuln::Cmdi,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Vuln::Bola => "bola",
            Vuln::Bfla => "bfla",
            Vuln::MassAssignment => "mass-assignment",
            Vuln::DataExposure => "data-exposure",
            Vuln::JwtAlgNone => "jwt-alg-none",
            Vuln::JwtWeakSecret => "jwt-weak-secret",
            Vuln::JwtNoExpiry => "jwt-no-expiry",
            Vuln::JwtKeyConfusion => "jwt-key-confusion",
            Vuln::JwtKidInjection => "jwt-kid-injection",
            Vuln::LoginNoLimit => "login-no-limit",
            Vuln::LoginRace => "login-race",
            Vuln::NoRateLimit => "no-rate-limit",
            Vuln::BusinessFlow => "business-flow",
            Vuln::Ssrf => "ssrf",
            Vuln::CorsWildcard => "cors-wildcard",
            Vuln::NoSecurityHeaders => "no-security-headers",
            Vuln::VerboseErrors => "verbose-errors",
            Vuln::LegacyV1 => "legacy-v1",
            Vuln::Sqli => "sqli",
            Vuln::Nosqli => "nosqli",
            Vuln::Cmdi => "cmdi",
        }
    }

    /// One line on what the switch breaks (OWASP API Security Top 10, 2023).
    pub fn describe(self) -> &'static str {
        match self {
            Vuln::Bola => "API1: orders are looked up by id alone, not by id and owner",
            Vuln::Bfla => {
                "API5: admin routes check that a user is logged in, not that it is an admin"
            }
            Vuln::MassAssignment => "API3: request bodies may set role, balance, price and status",
            Vuln::DataExposure => {
                "API3: responses carry password hashes, internal notes and cost prices"
            }
            Vuln::JwtAlgNone => "API2: the token header picks the algorithm; alg none is accepted",
            Vuln::JwtWeakSecret => "API2: tokens are signed with a dictionary word",
            Vuln::JwtNoExpiry => "API2: expired tokens and refresh tokens pass as access tokens",
            Vuln::JwtKeyConfusion => {
                "API2: tokens are RS256 (key in the JWKS) but an HS256 token keyed with the public key passes"
            }
            Vuln::JwtKidInjection => {
                "API2: the token's `kid` header is spliced into the SQL that fetches the signing key"
            }
            Vuln::LoginNoLimit => {
                "API2: no login throttling or lockout; errors tell whether an account exists"
            }
            Vuln::LoginRace => {
                "API2: the account lockout is looked at before the password is checked and counted after: parallel guesses all pass the look"
            }
            Vuln::NoRateLimit => {
                "API4: no rate limits; list `limit`, display names and bodies (16 MiB) unbounded"
            }
            Vuln::BusinessFlow => "API6: a promo code can be redeemed without limit",
            Vuln::Ssrf => "API7: the avatar fetch follows any URL, internal addresses included",
            Vuln::CorsWildcard => "API8: CORS reflects any Origin and allows credentials",
            Vuln::NoSecurityHeaders => {
                "API8: no security headers; Server and X-Powered-By name versions"
            }
            Vuln::VerboseErrors => "API8: error bodies carry backtraces, file paths and SQL text",
            Vuln::LegacyV1 => "API9: GET /v1/orders/{id} answers without auth or owner check",
            Vuln::Sqli => {
                "API8/API10: product search and promo redemption build SQL by string concatenation"
            }
            Vuln::Nosqli => {
                "API2/API8: login, search and promo codes honour query operators ({\"$ne\": null})"
            }
            Vuln::Cmdi => "API8: a changed display name is passed to a shell command",
        }
    }
}

impl fmt::Display for Vuln {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A switch name that is not one of [`Vuln::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown weakness `{0}` (expected `all` or one of: {list})", list = Vuln::ALL.map(Vuln::name).join(", "))]
pub struct UnknownVuln(pub String);

impl FromStr for Vuln {
    type Err = UnknownVuln;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Vuln::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| UnknownVuln(s.to_owned()))
    }
}

/// The set of weaknesses switched on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VulnSet(BTreeSet<Vuln>);

impl VulnSet {
    /// Every defense on.
    pub fn secure() -> Self {
        Self::default()
    }

    /// Every defense off.
    pub fn all() -> Self {
        Self(Vuln::ALL.into_iter().collect())
    }

    pub fn only(vulns: &[Vuln]) -> Self {
        Self(vulns.iter().copied().collect())
    }

    pub fn has(&self, v: Vuln) -> bool {
        self.0.contains(&v)
    }

    pub fn iter(&self) -> impl Iterator<Item = Vuln> + '_ {
        self.0.iter().copied()
    }

    /// Parses `all` or a comma-separated list of names; each list item may itself be a list.
    pub fn parse<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, UnknownVuln> {
        let mut set = BTreeSet::new();
        for item in items {
            for name in item.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if name == "all" {
                    set.extend(Vuln::ALL);
                } else {
                    set.insert(name.parse()?);
                }
            }
        }
        Ok(Self(set))
    }
}

/// A GCRA rate: `per_minute` requests replenished evenly, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

/// Everything the shop needs to start.
#[derive(Clone, Debug)]
pub struct ShopConfig {
    pub vulns: VulnSet,
    /// SQLite database file; `None` keeps the database in memory.
    pub db_path: Option<PathBuf>,
    /// HMAC key for tokens. `None`: 32 random bytes per process (or the dictionary word under
    /// `jwt-weak-secret`).
    pub jwt_secret: Option<Vec<u8>>,
    /// Sign tokens with a per-process RSA key (RS256) published at `/.well-known/jwks.json`
    /// instead of the HMAC secret. Always so under `jwt-key-confusion`.
    pub jwt_rsa: bool,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// The seeded administrator.
    pub admin_email: String,
    pub admin_password: String,
    /// Origins allowed by CORS (exact match).
    pub cors_origins: Vec<String>,
    /// Schemes and hosts the avatar fetch may reach (case-insensitive; a host is an exact name,
    /// a `*.example.com` suffix wildcard or an IP literal). No host: nothing is fetched. Whatever
    /// is listed, non-public addresses are never reached.
    pub avatar_schemes: Vec<String>,
    pub avatar_hosts: Vec<String>,
    /// Per client address, all routes.
    pub rate_limit: Rate,
    /// Per client address, login attempts.
    pub login_rate: Rate,
    /// Failed logins on one account before it is locked.
    pub login_max_failures: u32,
    pub lockout: Duration,
    /// Promo redemptions per user per day.
    pub promo_daily_limit: u32,
    /// Largest request body accepted.
    pub body_limit: usize,
}

impl ShopConfig {
    /// Whether the shop has an RSA key (and publishes it).
    pub fn jwt_rsa_key(&self) -> bool {
        self.jwt_rsa || self.vulns.has(Vuln::JwtKeyConfusion)
    }

    /// Whether tokens are signed RS256. Under `jwt-weak-secret` they stay HS256 so that
    /// weakness can still be found.
    pub fn jwt_rsa_signing(&self) -> bool {
        self.jwt_rsa_key() && !self.vulns.has(Vuln::JwtWeakSecret)
    }
}

impl Default for ShopConfig {
    fn default() -> Self {
        Self {
            vulns: VulnSet::secure(),
            db_path: None,
            jwt_secret: None,
            jwt_rsa: false,
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(7 * 24 * 3600),
            admin_email: "admin@shop.example".into(),
            admin_password: String::new(),
            cors_origins: vec!["https://shop.example".into()],
            avatar_schemes: vec!["https".into()],
            avatar_hosts: vec!["images.shop.example".into()],
            rate_limit: Rate {
                per_minute: 600,
                burst: 100,
            },
            login_rate: Rate {
                per_minute: 20,
                burst: 20,
            },
            login_max_failures: 5,
            lockout: Duration::from_secs(15 * 60),
            promo_daily_limit: 3,
            body_limit: 64 * 1024,
        }
    }
}

/// The secret used under `jwt-weak-secret`: the first word of every JWT cracking list.
pub const WEAK_JWT_SECRET: &str = "secret";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_all() {
        let set = VulnSet::parse(["bola,sqli", "ssrf"]).expect("valid names");
        assert!(set.has(Vuln::Bola) && set.has(Vuln::Sqli) && set.has(Vuln::Ssrf));
        assert!(!set.has(Vuln::Bfla));
        assert_eq!(VulnSet::parse(["all"]).expect("all"), VulnSet::all());
        let err = VulnSet::parse(["bola,nope"]).expect_err("unknown name");
        assert!(err.to_string().contains("`nope`"));
    }

    #[test]
    fn names_round_trip() {
        for v in Vuln::ALL {
            assert_eq!(v.name().parse::<Vuln>().expect("own name"), v);
        }
    }
}
