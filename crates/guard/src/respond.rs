//! Response hardening: banners out, security headers in, API version lifecycle headers.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue, LINK};
use portcullis_policy::model::HeaderRules;
use portcullis_policy::{Version, VersionStatus, units};

pub const DEPRECATION: HeaderName = HeaderName::from_static("deprecation");
pub const SUNSET: HeaderName = HeaderName::from_static("sunset");

/// The response rules of a route, ready for both kinds of answer: applied to the map of an
/// answer the gateway makes itself, or as the map an upstream answer starts from (its own
/// fields are then added unless [`Hardening::passes`] refuses them).
#[derive(Debug)]
pub struct Hardening {
    rules: HeaderRules,
    /// The fields the rules set, with room for an answer's own: cloning it costs less than
    /// inserting each field into every answer.
    base: HeaderMap,
    /// The names an answer's own field may not have (set or removed by the rules), and a
    /// mask of their lengths (bit `min(len, 63)`): most names asked about are let through by
    /// the mask alone, without comparing bytes.
    refused: Vec<Box<str>>,
    refused_lengths: u64,
    /// The fields the rules set as HTTP/1.1 writes them (`name: value\r\n` each): a server
    /// that writes answers itself puts them out in one copy.
    block: bytes::Bytes,
}

fn length_bit(name: &str) -> u64 {
    1 << name.len().min(63)
}

impl Hardening {
    pub fn new(rules: HeaderRules) -> Self {
        let mut base = HeaderMap::with_capacity(rules.set.len() + 24);
        for (n, v) in &rules.set {
            base.insert(n.clone(), v.clone());
        }
        let refused: Vec<Box<str>> = rules
            .set
            .iter()
            .map(|(n, _)| n)
            .chain(&rules.remove)
            .map(|n| n.as_str().into())
            .collect();
        let refused_lengths = refused.iter().fold(0, |m, n| m | length_bit(n));
        let mut block = Vec::new();
        for (n, v) in &rules.set {
            block.extend_from_slice(n.as_str().as_bytes());
            block.extend_from_slice(b": ");
            block.extend_from_slice(v.as_bytes());
            block.extend_from_slice(b"\r\n");
        }
        Self {
            rules,
            base,
            refused,
            refused_lengths,
            block: block.into(),
        }
    }

    /// The fields the rules set, as HTTP/1.1 header lines, for an answer whose map started
    /// bare (it took only the upstream fields that [`Hardening::passes`]).
    pub fn block(&self) -> &bytes::Bytes {
        &self.block
    }

    /// The names the rules set or remove.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.refused.iter().map(|n| &**n)
    }

    /// Applies removals, then settings (which override what was there).
    pub fn apply(&self, headers: &mut HeaderMap) {
        let rules = &self.rules;
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

    /// The map an upstream answer starts from: the fields the rules set, and room for `more`.
    pub fn start(&self, more: usize) -> HeaderMap {
        let mut map = self.base.clone();
        // The base was built with room to spare: this grows the index (once) only for an
        // answer with more fields than that.
        let _ = map.try_reserve(more);
        map
    }

    /// Whether an upstream answer's field goes on into a map from [`Hardening::start`]: not
    /// when the rules set that name (theirs wins) or remove it, nor a CORS field (the gateway
    /// owns CORS: a reflecting upstream cannot widen the policy).
    pub fn passes(&self, name: &HeaderName) -> bool {
        let name = name.as_str();
        if name.starts_with("access-control-") {
            return false;
        }
        self.refused_lengths & length_bit(name) == 0 || !self.refused.iter().any(|n| **n == *name)
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

    fn rules() -> HeaderRules {
        HeaderRules {
            set: vec![
                (
                    HeaderName::from_static("x-frame-options"),
                    HeaderValue::from_static("DENY"),
                ),
                (
                    HeaderName::from_static("x-content-type-options"),
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            remove: vec![HeaderName::from_static("server")],
        }
    }

    /// Both ways of hardening an answer give the same fields.
    #[test]
    fn a_started_answer_matches_an_applied_one() {
        let h = Hardening::new(rules());
        let upstream = [
            ("server", "nginx"),
            ("x-frame-options", "ALLOWALL"),
            ("content-type", "application/json"),
            ("access-control-allow-origin", "*"),
            ("vary", "a"),
            ("vary", "b"),
        ];
        let mut started = h.start(upstream.len());
        let mut applied = HeaderMap::new();
        for (n, v) in upstream {
            let (n, v) = (HeaderName::from_static(n), HeaderValue::from_static(v));
            if h.passes(&n) {
                started.append(n.clone(), v.clone());
            }
            applied.append(n, v);
        }
        h.apply(&mut applied);
        applied.remove("access-control-allow-origin");
        let sorted = |m: &HeaderMap| {
            let mut v: Vec<(String, Vec<u8>)> = m
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect();
            v.sort();
            v
        };
        assert_eq!(sorted(&started), sorted(&applied));
        assert_eq!(started["x-frame-options"], "DENY");
        assert!(!started.contains_key("server"));
        assert_eq!(started.get_all("vary").iter().count(), 2);
    }

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
