//! The avatar fetch: the server downloads a URL the client names, the textbook SSRF sink.
//!
//! The secure default checks the URL with `portcullis-ssrf`: only listed schemes and hosts, no
//! userinfo, and no non-public address (loopback, private, link-local and the cloud metadata
//! address, CGNAT, multicast, reserved, and IPv6 forms that embed such an IPv4 address), the
//! name resolved and every address judged. It connects only through a resolver that filters
//! again, so DNS rebinding between check and connect does not help, and follows no redirect.
//! Under `ssrf` it fetches whatever it is given.

use std::time::Duration;

use portcullis_ssrf::{Blocked, Checker, Policy};
use url::Url;

use crate::config::{ShopConfig, Vuln};

/// Largest avatar accepted.
pub const MAX_AVATAR_BYTES: usize = 1024 * 1024;

/// Why a URL was not fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL breaks the SSRF policy: a client error.
    #[error(transparent)]
    Blocked(#[from] Blocked),
    /// What the URL serves is not acceptable: a client error.
    #[error("{0}")]
    Refused(&'static str),
    /// The fetch itself failed: an upstream error.
    #[error("fetch failed: {0}")]
    Failed(String),
}

/// What was fetched.
#[derive(Debug)]
pub struct Avatar {
    pub content_type: String,
    pub size: usize,
}

#[derive(Debug)]
pub struct AvatarFetcher {
    secure: reqwest::Client,
    open: reqwest::Client,
    checker: Checker,
    /// No avatar host configured: nothing may be fetched (an empty allowlist would mean "any
    /// public host" to the checker).
    no_hosts: bool,
    vulnerable: bool,
}

impl AvatarFetcher {
    pub fn new(config: &ShopConfig) -> Result<Self, reqwest::Error> {
        let base = || {
            reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(Duration::from_secs(3))
                .timeout(Duration::from_secs(5))
        };
        let checker = Checker::new(&Policy {
            schemes: config.avatar_schemes.clone(),
            allow_hosts: config.avatar_hosts.clone(),
            ..Policy::default()
        });
        Ok(Self {
            secure: base()
                .redirect(reqwest::redirect::Policy::none())
                .dns_resolver(checker.pinned_resolver())
                .build()?,
            open: base().build()?,
            checker,
            no_hosts: config.avatar_hosts.is_empty(),
            vulnerable: config.vulns.has(Vuln::Ssrf),
        })
    }

    pub async fn fetch(&self, raw: &str) -> Result<Avatar, FetchError> {
        if self.vulnerable {
            let url = Url::parse(raw).map_err(|_| FetchError::Refused("not a valid URL"))?;
            return download(&self.open, url, false).await;
        }
        if self.no_hosts {
            return Err(Blocked::HostNotAllowed.into());
        }
        let checked = self.checker.check(raw).await?;
        download(&self.secure, checked.url, true).await
    }
}

async fn download(
    client: &reqwest::Client,
    url: Url,
    require_image: bool,
) -> Result<Avatar, FetchError> {
    let mut resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| FetchError::Failed(e.without_url().to_string()))?;
    if !resp.status().is_success() {
        return Err(FetchError::Failed(format!(
            "status {}",
            resp.status().as_u16()
        )));
    }
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    if require_image && !content_type.starts_with("image/") {
        return Err(FetchError::Refused("the URL does not serve an image"));
    }
    let mut size = 0usize;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| FetchError::Failed(e.to_string()))?
    {
        size += chunk.len();
        if size > MAX_AVATAR_BYTES {
            return Err(FetchError::Refused("the image is too large"));
        }
    }
    Ok(Avatar { content_type, size })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetcher(hosts: &[&str]) -> AvatarFetcher {
        let config = ShopConfig {
            avatar_hosts: hosts.iter().map(|s| s.to_string()).collect(),
            ..ShopConfig::default()
        };
        AvatarFetcher::new(&config).expect("client builds")
    }

    #[test]
    fn tricky_spellings_of_loopback_are_refused_before_any_connection() {
        let f = fetcher(&["images.shop.example", "127.0.0.1"]);
        for raw in [
            "https://127.0.0.1/",
            "https://2130706433/",
            "https://0x7f.1/",
            "https://0177.0.0.1/",
            "https://127.1/",
            "https://[::ffff:7f00:1]/",
            "https://[::1]/",
            "https://%31%32%37.0.0.1/",
        ] {
            assert!(
                matches!(f.checker.check_url(raw), Err(Blocked::ForbiddenAddress(_))),
                "{raw} must be refused"
            );
        }
    }

    #[test]
    fn host_scheme_and_userinfo_rules() {
        let f = fetcher(&["images.shop.example"]);
        assert!(
            f.checker
                .check_url("https://images.shop.example/a.png")
                .is_ok()
        );
        assert!(
            f.checker
                .check_url("https://IMAGES.shop.example./a.png")
                .is_ok()
        );
        for raw in [
            "http://images.shop.example/a.png",
            "file:///etc/passwd",
            "gopher://images.shop.example/",
            "https://images.shop.example@evil.example/",
            "https://user:pw@images.shop.example/",
            "https://images.shop.example.evil.example/",
            "https://evil.example/#@images.shop.example",
            "not a url",
        ] {
            assert!(f.checker.check_url(raw).is_err(), "{raw} must be refused");
        }
    }

    #[tokio::test]
    async fn no_configured_host_means_no_fetch() {
        let f = fetcher(&[]);
        let err = f
            .fetch("https://images.shop.example/a.png")
            .await
            .expect_err("nothing is allowed");
        assert!(matches!(err, FetchError::Blocked(Blocked::HostNotAllowed)));
    }
}
