//! Server-side request forgery checks for URLs a client supplies (OWASP API7:2023).
//!
//! A [`Checker`] holds a [`Policy`] (schemes, allowed and denied hosts, ports) and a
//! [`Resolve`]r. [`Checker::check_url`] does the synchronous checks on the parsed URL;
//! [`Checker::check`] also resolves the host and refuses the URL if any address it resolves to
//! is not public ([`is_forbidden`]). Every refusal is a [`Blocked`] with a stable
//! [`reason`](Blocked::reason) for metrics and a message safe to show the client.
//!
//! Hosts are read by the WHATWG URL parser (the `url` crate), never by string matching, so the
//! usual disguises of an internal address are seen through: `2130706433`, `0177.0.0.1`,
//! `0x7f.1`, `127.1`, `%31%32%37.0.0.1`, fullwidth digits, `[::ffff:7f00:1]`,
//! `[64:ff9b::a9fe:a9fe]`, `localhost.`; `https://allowed.example@evil.example/` is refused for
//! its credentials, and URLs that parsers read differently (a backslash, control characters,
//! whitespace) are refused outright.
//!
//! The resolver is injectable: [`SystemResolver`] asks the system, [`StaticResolver`] answers
//! from a map (for tests, or to pin names). With the `reqwest` feature, `PinnedResolver`
//! makes a `reqwest` client re-check every address it connects to, which defeats DNS
//! rebinding between the check and the connection.
//!
//! ```no_run
//! use portcullis_ssrf::{Blocked, Checker, Policy};
//!
//! # async fn run() -> Result<(), Blocked> {
//! let checker = Checker::new(&Policy {
//!     allow_hosts: vec!["images.example".into(), "*.cdn.example".into()],
//!     ..Policy::default()
//! });
//!
//! // The synchronous checks alone:
//! assert!(matches!(
//!     checker.check_url("https://0x7f.1/"),
//!     Err(Blocked::ForbiddenAddress(_))
//! ));
//! assert_eq!(
//!     checker.check_url("https://images.example@evil.example/").map(|_| ()),
//!     Err(Blocked::Credentials)
//! );
//!
//! // Everything, name resolution included; fetch `checked.url`, not the raw string.
//! let checked = checker.check("https://images.example/a.png").await?;
//! println!("{} -> {:?}", checked.url, checked.addrs);
//! # Ok(())
//! # }
//! ```
//!
//! Tests inject a [`StaticResolver`], so no check needs real DNS:
//!
//! ```
//! use portcullis_ssrf::{Blocked, Checker, Policy, StaticResolver};
//!
//! # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! # rt.block_on(async {
//! let resolver = StaticResolver::new()
//!     .with("metadata.google.internal", ["169.254.169.254".parse().unwrap()]);
//! let checker = Checker::with_resolver(&Policy::default(), resolver);
//!
//! let refused = checker.check("https://metadata.google.internal/").await.unwrap_err();
//! assert_eq!(refused, Blocked::ForbiddenAddress("169.254.169.254".parse().unwrap()));
//! assert_eq!(refused.reason(), "forbidden_address");
//! assert_eq!(refused.to_string(), "the host is or resolves to a non-public address");
//! # });
//! ```
//!
//! Whoever acts on a checked URL (a fetch here, or a service behind a gateway) should be given
//! `checked.url` as serialised by the parser, the reading that was checked, rather than the raw
//! string. [`SystemResolver`] has no timeout of its own: bound [`Checker::check`] with
//! `tokio::time::timeout` where a slow name must not hold a request.

mod check;
mod error;
mod ip;
#[cfg(feature = "reqwest")]
mod pinned;
mod policy;
mod resolve;

pub use check::{Checked, Checker};
pub use error::Blocked;
pub use ip::is_forbidden;
#[cfg(feature = "reqwest")]
pub use pinned::PinnedResolver;
pub use policy::Policy;
pub use resolve::{Resolve, Resolving, StaticResolver, SystemResolver};
pub use url::Url;
