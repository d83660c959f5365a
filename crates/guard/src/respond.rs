//! Response hardening: banners out, security headers in, API version lifecycle headers.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue, LINK};
use portcullis_policy::model::HeaderRules;
use portcullis_policy::{Version, VersionStatus, units};

pub const DEPRECATION: HeaderName = HeaderName::from_static("deprecation");
pub const SUNSET: HeaderName = HeaderName::from_static("sunset");

/// Applies removals, then settings (which override what the upstream sent).
pub fn apply(headers: &mut HeaderMap, rules: &HeaderRules) {
    // One pass over the names present (an answer has a handful), then a lookup only for
    // those to remove: a lookup per rule costs more than the whole pass.
    let mut present = headers.keys().filter(|k| rules.remove.contains(k)).count();
    for n in &rules.remove {
        if present == 0 {
            break;
        }
        if headers.remove(n).is_some() {
            present -= 1;
        }
    }
    // Room for all of them at once: the map would otherwise grow (and rehash) a few times.
    // (At the map's size limit the inserts below fail one by one instead, as they would.)
    let _ = headers.try_reserve(rules.set.len());
    for (n, v) in &rules.set {
        headers.insert(n.clone(), v.clone());
    }
}

/// The precomputed lifecycle headers of a version: `Deprecation` (RFC 9745), `Sunset`
/// (RFC 8594) and a `Link` to the migration note.
pub fn version_headers(v: &Version) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    if v.status == VersionStatus::Active {
        return out;
    }
    let deprecation = match v.deprecated_at {
        Some(t) => format!("@{t}"),
        // RFC 9745 needs a date; without one the fact alone is said as a boolean.
        None => "?1".to_owned(),
    };
    if let Ok(h) = HeaderValue::from_str(&deprecation) {
        out.push((DEPRECATION, h));
    }
    if let Some(Ok(h)) = v
        .sunset
        .map(|s| HeaderValue::from_str(&units::http_date(s)))
    {
        out.push((SUNSET, h));
    }
    if let Some(Ok(h)) = v
        .link
        .as_ref()
        .map(|l| HeaderValue::from_str(&format!("<{l}>; rel=\"deprecation\"; type=\"text/html\"")))
    {
        out.push((LINK, h));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deprecated_versions_say_when_and_where_to() {
        let v = Version {
            prefix: "/v1".into(),
            status: VersionStatus::Deprecated,
            deprecated_at: Some(1_767_225_600),
            sunset: Some(1_814_313_600),
            link: Some("https://shop.example/migrate".into()),
        };
        let h = version_headers(&v);
        assert_eq!(h[0], (DEPRECATION, HeaderValue::from_static("@1767225600")));
        assert_eq!(h[1].1, "Wed, 30 Jun 2027 00:00:00 GMT");
        assert_eq!(
            h[2].1,
            "<https://shop.example/migrate>; rel=\"deprecation\"; type=\"text/html\""
        );
    }
}
