//! The route inventory (API9): every method and path template the gateway forwards, the API
//! versions and their status, and the matcher that turns a normalised path into a route.
//!
//! Templates are stored in the radix router with their parameters renamed by position (`{p0}`,
//! `{p1}`), so two templates that differ only in parameter names (`/users/{id}` on GET and
//! `/users/{user_id}` on DELETE, common in real specs) share one node; each route keeps its own
//! names.

use std::collections::HashMap;

use http::Method;

/// Index of a route in [`Inventory::routes`].
pub type RouteId = usize;

/// Lifecycle of an API version (RFC 9745 deprecation, RFC 8594 sunset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionStatus {
    Active,
    Deprecated,
    /// Answered 410 Gone, declared or not.
    Retired,
}

/// A path prefix that names an API version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// Normalised, without a trailing slash, such as `/v1`.
    pub prefix: String,
    pub status: VersionStatus,
    /// When it was deprecated, seconds since the epoch (`Deprecation: @...`).
    pub deprecated_at: Option<i64>,
    /// When it goes away, seconds since the epoch (`Sunset: <HTTP-date>`).
    pub sunset: Option<i64>,
    /// The migration note (`Link: <...>; rel="deprecation"`).
    pub link: Option<String>,
}

impl Version {
    fn covers(&self, path: &str) -> bool {
        path.strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

/// One declared operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub method: Method,
    /// As declared, such as `/v2/orders/{order_id}`: the label of logs and metrics.
    pub template: String,
    /// Parameter names in path order.
    pub params: Vec<String>,
    /// Index into [`Inventory::versions`].
    pub version: Option<usize>,
    /// What the OpenAPI description says about security: `Some(true)` when the operation has
    /// a security requirement, `Some(false)` for `security: []`, `None` when not described.
    pub secured: Option<bool>,
    /// The path as the description writes it (`/users/` keeps its slash), for pointers into
    /// the description; the template for routes that come from the policy.
    pub spec_path: String,
    /// The operation's tags (selectors `tag:NAME`).
    pub tags: Vec<String>,
    /// `x-portcullis-roles` of the operation.
    pub roles: Vec<String>,
    /// The declared path, query and header parameters (validated with the request body).
    pub parameters: Vec<crate::openapi::Param>,
    /// JSON pointer into the OpenAPI document to the JSON request body schema, if any.
    pub request_schema: Option<String>,
    /// JSON pointers to the 2xx JSON response schemas, by status (`200`, `2XX`).
    pub response_schemas: Vec<(String, String)>,
    /// Segments with several parameters (`{base}...{head}`): the router matches the segment as
    /// one parameter; the segment's own shape is checked here. (segment index, template).
    compound: Vec<(usize, String)>,
}

impl Route {
    fn compound_segments_match(&self, path: &str) -> bool {
        self.compound.iter().all(|(i, tpl)| {
            path.split('/')
                .nth(*i)
                .is_some_and(|seg| segment_matches(tpl, seg))
        })
    }
}

/// Matches one path segment against a template segment with several `{param}`s: the literals
/// must appear in order and every parameter must be non-empty.
fn segment_matches(template: &str, seg: &str) -> bool {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        parts.push(&rest[..open]);
        let close = rest[open..].find('}').map_or(rest.len(), |c| open + c + 1);
        rest = &rest[close..];
    }
    let (first, mut s) = (parts.first().copied().unwrap_or(""), seg);
    let Some(after) = s.strip_prefix(first) else {
        return false;
    };
    s = after;
    for lit in parts.iter().skip(1) {
        // Each parameter takes at least one character before the next literal.
        match s.get(1..).and_then(|tail| tail.find(lit)) {
            Some(at) => s = &s[1 + at + lit.len()..],
            None => return false,
        }
    }
    if rest.is_empty() {
        !s.is_empty()
    } else {
        s.len() > rest.len() && s.ends_with(rest)
    }
}

#[derive(Clone, Debug)]
struct PathEntry {
    methods: Vec<(Method, RouteId)>,
}

/// The parameter values of a match, read when asked for (most lookups only want the route).
#[derive(Debug, PartialEq, Eq)]
pub struct Params<'a>(matchit::Params<'a, 'a>);

impl<'a> Params<'a> {
    /// The values, in path order.
    pub fn values(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.0.iter().map(|(_, v)| v)
    }
}

/// The outcome of a lookup.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// A declared route, and its parameter values.
    Found {
        id: RouteId,
        route: &'a Route,
        params: Params<'a>,
    },
    /// The path is declared, the method is not (405 with `Allow`).
    MethodNotAllowed { allow: Vec<Method> },
    /// Under a retired version (410).
    Retired,
    /// Not declared (404).
    NotFound,
}

/// Why a template could not be added.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("`{0}` is not a path template starting with `/`")]
    NotAbsolute(String),
    #[error("`{0}` declares the same method and path twice")]
    Duplicate(String),
    #[error("`{template}` cannot be routed: {reason}")]
    Invalid { template: String, reason: String },
}

/// Routes and versions, compiled for matching.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    router: matchit::Router<usize>,
    paths: Vec<PathEntry>,
    /// Positional pattern → index into `paths`, to find a path's entry while building.
    patterns: HashMap<String, usize>,
    pub routes: Vec<Route>,
    pub versions: Vec<Version>,
}

/// `/a/{x}/b/{y}` → (`/a/{p0}/b/{p1}`, [x, y], compound segments).
/// A router pattern, the parameter names in order, and the compound segments.
type Positional = (String, Vec<String>, Vec<(usize, String)>);

fn positional(template: &str) -> Result<Positional, RouteError> {
    // A segment with several parameters becomes one router parameter, checked afterwards.
    let mut compound = Vec::new();
    let simplified: Vec<String> = template
        .split('/')
        .enumerate()
        .map(|(i, seg)| {
            if seg.matches('{').count() > 1 {
                compound.push((i, seg.to_owned()));
                format!("{{{}}}", seg.replace(['{', '}'], ""))
            } else {
                seg.to_owned()
            }
        })
        .collect();
    let simplified = simplified.join("/");
    let mut pattern = String::with_capacity(template.len());
    let mut names = Vec::new();
    let mut rest = simplified.as_str();
    while let Some(open) = rest.find('{') {
        pattern.push_str(&rest[..open]);
        let close = rest[open..].find('}').ok_or_else(|| RouteError::Invalid {
            template: template.into(),
            reason: "unbalanced `{`".into(),
        })?;
        let name = &rest[open + 1..open + close];
        if name.is_empty() || name.contains(['{', '/', '*']) && compound.is_empty() {
            return Err(RouteError::Invalid {
                template: template.into(),
                reason: format!("bad parameter `{{{name}}}`"),
            });
        }
        pattern.push_str(&format!("{{p{}}}", names.len()));
        names.push(name.to_owned());
        rest = &rest[open + close + 1..];
    }
    if rest.contains('}') {
        return Err(RouteError::Invalid {
            template: template.into(),
            reason: "unbalanced `}`".into(),
        });
    }
    pattern.push_str(rest);
    Ok((pattern, names, compound))
}

impl Lookup<'_> {
    pub fn is_found(&self) -> bool {
        matches!(self, Lookup::Found { .. })
    }
}

impl Inventory {
    /// Adds a version; call before adding routes so each route learns its version.
    pub fn add_version(&mut self, v: Version) {
        self.versions.push(v);
    }

    /// The version that covers `path` (the longest matching prefix).
    pub fn version_of(&self, path: &str) -> Option<usize> {
        self.versions
            .iter()
            .enumerate()
            .filter(|(_, v)| v.covers(path))
            .max_by_key(|(_, v)| v.prefix.len())
            .map(|(i, _)| i)
    }

    /// Declares `method template`.
    pub fn add(&mut self, method: Method, template: &str) -> Result<RouteId, RouteError> {
        if !template.starts_with('/') {
            return Err(RouteError::NotAbsolute(template.into()));
        }
        let template = if template.len() > 1 {
            template.trim_end_matches('/')
        } else {
            template
        };
        let (pattern, params, compound) = positional(template)?;
        let path_idx = match self.patterns.get(&pattern) {
            Some(&i) => i,
            None => {
                self.router
                    .insert(pattern.clone(), self.paths.len())
                    .map_err(|e| RouteError::Invalid {
                        template: template.into(),
                        reason: e.to_string(),
                    })?;
                self.patterns.insert(pattern, self.paths.len());
                self.paths.push(PathEntry {
                    methods: Vec::new(),
                });
                self.paths.len() - 1
            }
        };
        let entry = &mut self.paths[path_idx];
        // Templates that share a router pattern on one method are told apart by their compound
        // segments (GitHub has `/compare/{basehead}` and `/compare/{base}...{head}`); the more
        // specific, compound ones are tried first.
        if entry
            .methods
            .iter()
            .any(|(m, id)| *m == method && self.routes[*id].template == template)
        {
            return Err(RouteError::Duplicate(format!("{method} {template}")));
        }
        if compound.is_empty()
            && entry
                .methods
                .iter()
                .any(|(m, id)| *m == method && self.routes[*id].compound.is_empty())
        {
            return Err(RouteError::Duplicate(format!("{method} {template}")));
        }
        let id = self.routes.len();
        if compound.is_empty() {
            entry.methods.push((method.clone(), id));
        } else {
            entry.methods.insert(0, (method.clone(), id));
        }
        let version = self.version_of(template);
        self.routes.push(Route {
            method,
            template: template.into(),
            params,
            version,
            secured: None,
            spec_path: String::new(),
            tags: Vec::new(),
            roles: Vec::new(),
            parameters: Vec::new(),
            request_schema: None,
            response_schemas: Vec::new(),
            compound,
        });
        Ok(id)
    }

    /// Matches a normalised path. `HEAD` falls back to a declared `GET`.
    pub fn lookup<'a>(&'a self, method: &Method, path: &'a str) -> Lookup<'a> {
        if let Some(v) = self.version_of(path)
            && self.versions[v].status == VersionStatus::Retired
        {
            return Lookup::Retired;
        }
        let Ok(m) = self.router.at(path) else {
            return Lookup::NotFound;
        };
        let entry = &self.paths[*m.value];
        let pick = |want: &Method| {
            entry
                .methods
                .iter()
                .filter(|(rm, _)| rm == want)
                .find(|(_, id)| self.routes[*id].compound_segments_match(path))
        };
        let found = pick(method).or_else(|| {
            if *method == Method::HEAD {
                pick(&Method::GET)
            } else {
                None
            }
        });
        match found {
            Some(&(_, id)) => Lookup::Found {
                id,
                route: &self.routes[id],
                params: Params(m.params),
            },
            None if entry.methods.iter().any(|(rm, _)| rm == method) => Lookup::NotFound,
            None => {
                let mut allow: Vec<Method> = Vec::new();
                for (m, _) in &entry.methods {
                    if !allow.contains(m) {
                        allow.push(m.clone());
                    }
                }
                if allow.contains(&Method::GET) && !allow.contains(&Method::HEAD) {
                    allow.push(Method::HEAD);
                }
                Lookup::MethodNotAllowed { allow }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn shop() -> Inventory {
        let mut inv = Inventory::default();
        inv.add_version(Version {
            prefix: "/v1".into(),
            status: VersionStatus::Deprecated,
            deprecated_at: None,
            sunset: None,
            link: None,
        });
        inv.add_version(Version {
            prefix: "/v0".into(),
            status: VersionStatus::Retired,
            deprecated_at: None,
            sunset: None,
            link: None,
        });
        for (m, p) in [
            (Method::GET, "/v2/orders"),
            (Method::POST, "/v2/orders"),
            (Method::GET, "/v2/orders/{order_id}"),
            (Method::DELETE, "/v2/orders/{id}"),
            (Method::GET, "/v2/products/search"),
            (Method::GET, "/v2/products/{product_id}"),
            (Method::GET, "/v1/orders/{order_id}"),
            (Method::GET, "/v0/orders/{order_id}"),
        ] {
            inv.add(m, p).expect("valid route");
        }
        inv
    }

    #[test]
    fn matches_templates_with_their_own_parameter_names() {
        let inv = shop();
        match inv.lookup(&Method::GET, "/v2/orders/ord_1") {
            Lookup::Found { route, params, .. } => {
                assert_eq!(route.template, "/v2/orders/{order_id}");
                assert_eq!(route.params, ["order_id"]);
                assert_eq!(params.values().collect::<Vec<_>>(), ["ord_1"]);
            }
            other => panic!("{other:?}"),
        }
        match inv.lookup(&Method::DELETE, "/v2/orders/ord_1") {
            Lookup::Found { route, .. } => assert_eq!(route.params, ["id"]),
            other => panic!("{other:?}"),
        }
        match inv.lookup(&Method::GET, "/v2/products/search") {
            Lookup::Found { route, .. } => assert_eq!(route.template, "/v2/products/search"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn method_mismatch_and_unknown_paths() {
        let inv = shop();
        assert_eq!(
            inv.lookup(&Method::PUT, "/v2/orders"),
            Lookup::MethodNotAllowed {
                allow: vec![Method::GET, Method::POST, Method::HEAD]
            }
        );
        assert!(matches!(
            inv.lookup(&Method::HEAD, "/v2/orders"),
            Lookup::Found { .. }
        ));
        assert_eq!(inv.lookup(&Method::GET, "/v2/admin"), Lookup::NotFound);
        assert_eq!(inv.lookup(&Method::GET, "/v2/orders/a/b"), Lookup::NotFound);
        assert_eq!(inv.lookup(&Method::GET, "/v0/orders/x"), Lookup::Retired);
        assert_eq!(inv.lookup(&Method::GET, "/v0/anything"), Lookup::Retired);
        assert_eq!(inv.lookup(&Method::GET, "/v0x/anything"), Lookup::NotFound);
        let v1 = inv
            .routes
            .iter()
            .find(|r| r.template.starts_with("/v1"))
            .and_then(|r| r.version);
        assert_eq!(
            v1.map(|i| inv.versions[i].status),
            Some(VersionStatus::Deprecated)
        );
    }

    #[test]
    fn compound_segments() {
        let mut inv = Inventory::default();
        inv.add(Method::GET, "/repos/{owner}/compare/{base}...{head}")
            .expect("valid");
        assert!(matches!(
            inv.lookup(&Method::GET, "/repos/o/compare/main...dev"),
            Lookup::Found { .. }
        ));
        assert_eq!(
            inv.lookup(&Method::GET, "/repos/o/compare/main"),
            Lookup::NotFound
        );
        assert_eq!(
            inv.lookup(&Method::GET, "/repos/o/compare/...dev"),
            Lookup::NotFound
        );
        assert_eq!(
            inv.lookup(&Method::GET, "/repos/o/compare/main..."),
            Lookup::NotFound
        );
        assert!(segment_matches("{a}.{b}.tar", "x.y.tar"));
        assert!(!segment_matches("{a}.{b}.tar", "x.y.zip"));
    }

    #[test]
    fn bad_templates_are_refused() {
        let mut inv = shop();
        assert!(matches!(
            inv.add(Method::GET, "/v2/orders"),
            Err(RouteError::Duplicate(_))
        ));
        assert!(matches!(
            inv.add(Method::GET, "v2/x"),
            Err(RouteError::NotAbsolute(_))
        ));
        assert!(matches!(
            inv.add(Method::GET, "/v2/{x"),
            Err(RouteError::Invalid { .. })
        ));
        assert!(matches!(
            inv.add(Method::GET, "/v2/{}"),
            Err(RouteError::Invalid { .. })
        ));
    }

    proptest! {
        /// A path built from a template by filling its parameters matches that template, with
        /// the values it was filled with.
        #[test]
        fn filled_templates_match_their_template(
            a in "[a-z]{1,8}", b in "[a-z]{1,8}", x in "[A-Za-z0-9_~-]{1,12}", y in "[A-Za-z0-9_~-]{1,12}"
        ) {
            let mut inv = Inventory::default();
            let t = format!("/{a}/{{first}}/{b}/{{second}}");
            inv.add(Method::GET, &t).expect("valid");
            match inv.lookup(&Method::GET, &format!("/{a}/{x}/{b}/{y}")) {
                Lookup::Found { route, params, .. } => {
                    prop_assert_eq!(&route.template, &t);
                    prop_assert_eq!(
                        params.values().collect::<Vec<_>>(),
                        vec![x.as_str(), y.as_str()]
                    );
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}
