//! The avatar fetch: the server downloads a URL the client names, the textbook SSRF sink.
//!
//! The secure default allows only listed schemes and hosts, refuses userinfo, resolves the name
//! itself and refuses any non-public address (loopback, private, link-local and the cloud
//! metadata address, CGNAT, multicast, reserved, and IPv6 forms that embed such an IPv4
//! address), connects only to the addresses it checked (a resolver that filters, so DNS
//! rebinding between check and connect does not help), and follows no redirect. Under `ssrf`
//! it fetches whatever it is given.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use crate::config::{ShopConfig, Vuln};

/// Largest avatar accepted.
pub const MAX_AVATAR_BYTES: usize = 1024 * 1024;

/// Why a URL was not fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL breaks the policy: a client error.
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
    schemes: Vec<String>,
    hosts: Vec<String>,
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
        Ok(Self {
            secure: base()
                .redirect(reqwest::redirect::Policy::none())
                .dns_resolver(Arc::new(PublicOnly))
                .build()?,
            open: base().build()?,
            schemes: config
                .avatar_schemes
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect(),
            hosts: config
                .avatar_hosts
                .iter()
                .map(|h| normalise_host(h))
                .collect(),
            vulnerable: config.vulns.has(Vuln::Ssrf),
        })
    }

    pub async fn fetch(&self, raw: &str) -> Result<Avatar, FetchError> {
        if self.vulnerable {
            let url = Url::parse(raw).map_err(|_| FetchError::Refused("not a valid URL"))?;
            return download(&self.open, url, false).await;
        }
        let url = self.check(raw)?;
        let host = url
            .host_str()
            .ok_or(FetchError::Refused("the URL has no host"))?;
        let port = url
            .port_or_known_default()
            .ok_or(FetchError::Refused("the URL has no port"))?;
        let addrs = resolve_public(host, port).await?;
        if addrs.is_empty() {
            return Err(FetchError::Refused("the host does not resolve"));
        }
        download(&self.secure, url, true).await
    }

    /// Scheme, userinfo and host checks on the parsed URL. The `url` crate has already turned
    /// `0x7f.1`, `2130706433`, `127.1` and IDNA spellings into their canonical forms.
    fn check(&self, raw: &str) -> Result<Url, FetchError> {
        let url = Url::parse(raw).map_err(|_| FetchError::Refused("not a valid URL"))?;
        if !self.schemes.iter().any(|s| s == url.scheme()) {
            return Err(FetchError::Refused("this URL scheme is not allowed"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(FetchError::Refused(
                "credentials in the URL are not allowed",
            ));
        }
        let host = match url.host() {
            Some(Host::Domain(d)) => normalise_host(d),
            Some(Host::Ipv4(ip)) if is_forbidden(IpAddr::V4(ip)) => {
                return Err(FetchError::Refused("this address is not allowed"));
            }
            Some(Host::Ipv6(ip)) if is_forbidden(IpAddr::V6(ip)) => {
                return Err(FetchError::Refused("this address is not allowed"));
            }
            Some(Host::Ipv4(ip)) => ip.to_string(),
            Some(Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(FetchError::Refused("the URL has no host")),
        };
        if !self.hosts.contains(&host) {
            return Err(FetchError::Refused("this host is not allowed"));
        }
        Ok(url)
    }
}

fn normalise_host(h: &str) -> String {
    h.trim_end_matches('.').to_ascii_lowercase()
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

/// Resolves `host` and fails if any address is not public: a name with one private address
/// among public ones is refused whole.
async fn resolve_public(host: &str, port: u16) -> Result<Vec<SocketAddr>, FetchError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| FetchError::Refused("the host does not resolve"))?
        .collect();
    if addrs.iter().any(|a| is_forbidden(a.ip())) {
        return Err(FetchError::Refused(
            "the host resolves to a non-public address",
        ));
    }
    Ok(addrs)
}

/// The resolver of the secure client: the addresses it returns are the ones checked.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = resolve_public(&host, 0)
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// True for every address a server-side fetch must never reach.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || a == 0                                   // "this network"
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()                       // 169.254/16: cloud metadata lives here
        || (a == 100 && (64..128).contains(&b))     // CGNAT 100.64/10
        || (a == 192 && b == 0 && c == 0)           // IETF protocol assignments
        || ip.is_documentation()
        || (a == 198 && (b == 18 || b == 19))       // benchmarking 198.18/15
        || ip.is_multicast()
        || a >= 240 // reserved and broadcast
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let seg = ip.segments();
    // ::/96 holds ::, ::1 and the deprecated IPv4-compatible form: none is a public host.
    if seg[..6] == [0; 6] {
        return true;
    }
    // NAT64 (64:ff9b::/96) reaches the IPv4 address it embeds.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let v4 = Ipv4Addr::from(((seg[6] as u32) << 16) | seg[7] as u32);
        return forbidden_v4(v4);
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || ip.is_unique_local()                     // fc00::/7
        || ip.is_unicast_link_local()               // fe80::/10
        || (seg[0] & 0xffc0) == 0xfec0              // site-local, deprecated
        || (seg[0] == 0x2001 && seg[1] == 0x0db8)   // documentation
        || (seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 1) // local-use NAT64 64:ff9b:1::/48
        || (seg[0] == 0x2001 && seg[1] == 0)        // Teredo tunnels to arbitrary IPv4
        || seg[0] == 0x2002                         // 6to4 tunnels to arbitrary IPv4
        || seg[0] == 0x0100 && seg[1..4] == [0, 0, 0] // discard-only 100::/64
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
    fn non_public_addresses_are_forbidden() {
        for ip in [
            "127.0.0.1",
            "127.255.255.254",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "198.18.0.1",
            "192.0.0.8",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001:0:4136:e378::1",
            "2002:7f00:1::1",
        ] {
            let ip: IpAddr = ip.parse().expect("test address parses");
            assert!(is_forbidden(ip), "{ip} must be forbidden");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for ip in [
            "93.184.215.14",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "64:ff9b::5db8:d70e",
        ] {
            let ip: IpAddr = ip.parse().expect("test address parses");
            assert!(!is_forbidden(ip), "{ip} must be allowed");
        }
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
                matches!(
                    f.check(raw),
                    Err(FetchError::Refused("this address is not allowed"))
                ),
                "{raw} must be refused"
            );
        }
    }

    #[test]
    fn host_scheme_and_userinfo_rules() {
        let f = fetcher(&["images.shop.example"]);
        assert!(f.check("https://images.shop.example/a.png").is_ok());
        assert!(f.check("https://IMAGES.shop.example./a.png").is_ok());
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
            assert!(f.check(raw).is_err(), "{raw} must be refused");
        }
    }
}
