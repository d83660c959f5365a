//! The state one scan shares between its phases: the logged-in identities, the objects
//! harvested from answers, the baseline answers, the findings and the coverage.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::RwLock;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
pub(crate) use percent_encode::encode;
use reqwest::Method;
use serde_json::Value;

use crate::config::{Identity, IdentityAuth, Role, ScanConfig};
use crate::error::ScanError;
use crate::finding::Finding;
use crate::http::{Engine, Req, Resp, SendError, Source};
use crate::model::{In, Model, Op};

/// A caller, logged in.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) name: String,
    pub(crate) role: Role,
    identity: Option<Identity>,
    auth: RwLock<Option<String>>,
    pub(crate) refresh: RwLock<Option<String>>,
    /// The `sub` claim of its token, when it is a JWT.
    pub(crate) subject: RwLock<Option<String>>,
    last_login: Mutex<Option<Instant>>,
}

impl Session {
    pub(crate) fn is_anonymous(&self) -> bool {
        self.identity.is_none()
    }

    pub(crate) fn auth(&self) -> Option<String> {
        self.auth.read().ok().and_then(|a| a.clone())
    }

    /// The bearer token, when the header is `Bearer ...`.
    pub(crate) fn token(&self) -> Option<String> {
        self.auth()
            .and_then(|a| a.strip_prefix("Bearer ").map(|t| t.trim().to_owned()))
    }

    pub(crate) fn subject(&self) -> Option<String> {
        self.subject.read().ok().and_then(|s| s.clone())
    }

    /// The login recipe, when the identity has one.
    pub(crate) fn recipe(&self) -> Option<&crate::config::LoginRecipe> {
        match self.identity.as_ref().map(|i| &i.auth) {
            Some(IdentityAuth::Login(r)) => Some(r),
            _ => None,
        }
    }

    pub(crate) fn var(&self) -> String {
        let up: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("TOKEN_{up}")
    }
}

/// An object seen in an answer.
#[derive(Clone, Debug)]
pub(crate) struct Obj {
    pub(crate) resource: String,
    pub(crate) id: String,
    pub(crate) owner: usize,
    /// Created by this scan (so it may be changed and deleted).
    pub(crate) created: bool,
    /// Seen by several identities (a public catalogue, say): nobody's own object.
    pub(crate) shared: bool,
}

/// An answer of the baseline phase.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub(crate) req: Req,
    pub(crate) resp: Resp,
}

/// Per operation: who got a 2xx baseline and which probes ran.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct OperationCoverage {
    pub operation: String,
    /// Identities whose baseline request was answered 2xx.
    pub baseline_2xx: BTreeSet<String>,
    /// Probes that sent requests to this operation.
    pub probes: BTreeSet<&'static str>,
}

#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) config: ScanConfig,
    pub(crate) model: Model,
    pub(crate) http: Engine,
    pub(crate) sessions: Vec<Session>,
    objects: Mutex<Vec<Obj>>,
    baseline: Mutex<BTreeMap<(String, usize), Seen>>,
    findings: Mutex<Vec<Finding>>,
    coverage: Mutex<BTreeMap<String, OperationCoverage>>,
    pub(crate) notes: Mutex<Vec<String>>,
}

impl Ctx {
    pub(crate) fn new(config: ScanConfig, model: Model, http: Engine) -> Self {
        let mut sessions: Vec<Session> = config
            .identities
            .iter()
            .map(|i| Session {
                name: i.name.clone(),
                role: i.role,
                identity: Some(i.clone()),
                auth: RwLock::new(None),
                refresh: RwLock::new(None),
                subject: RwLock::new(None),
                last_login: Mutex::new(None),
            })
            .collect();
        sessions.push(Session {
            name: "anonymous".into(),
            role: Role::User,
            identity: None,
            auth: RwLock::new(None),
            refresh: RwLock::new(None),
            subject: RwLock::new(None),
            last_login: Mutex::new(None),
        });
        for i in &config.identities {
            for s in i.secrets() {
                http.add_secret(s);
            }
        }
        let coverage = model
            .ops
            .iter()
            .map(|o| {
                (
                    o.key(),
                    OperationCoverage {
                        operation: o.key(),
                        ..Default::default()
                    },
                )
            })
            .collect();
        Self {
            config,
            model,
            http,
            sessions,
            objects: Mutex::new(Vec::new()),
            baseline: Mutex::new(BTreeMap::new()),
            findings: Mutex::new(Vec::new()),
            coverage: Mutex::new(coverage),
            notes: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn note(&self, s: impl Into<String>) {
        if let Ok(mut n) = self.notes.lock() {
            n.push(s.into());
        }
    }

    // ---- identities -------------------------------------------------------------------

    /// Non-admin authenticated sessions, in configuration order: A, B, ...
    pub(crate) fn users(&self) -> Vec<usize> {
        (0..self.sessions.len())
            .filter(|&i| !self.sessions[i].is_anonymous() && self.sessions[i].role == Role::User)
            .collect()
    }

    pub(crate) fn admins(&self) -> Vec<usize> {
        (0..self.sessions.len())
            .filter(|&i| !self.sessions[i].is_anonymous() && self.sessions[i].role == Role::Admin)
            .collect()
    }

    pub(crate) fn anonymous(&self) -> usize {
        self.sessions.len() - 1
    }

    /// Logs every identity in; a login that fails stops the scan.
    pub(crate) async fn login_all(&self) -> Result<(), ScanError> {
        for i in 0..self.sessions.len() {
            self.login(i).await?;
        }
        Ok(())
    }

    async fn login(&self, i: usize) -> Result<(), ScanError> {
        let s = &self.sessions[i];
        let Some(identity) = &s.identity else {
            return Ok(());
        };
        if let Ok(mut l) = s.last_login.lock() {
            *l = Some(Instant::now());
        }
        let header = match &identity.auth {
            IdentityAuth::Header(h) => h.clone(),
            IdentityAuth::Login(r) => {
                let method = Method::from_bytes(r.method.as_bytes()).map_err(|_| {
                    ScanError::Config(format!("identity `{}`: bad login method", s.name))
                })?;
                let req = Req::new(method, r.path.clone()).json(r.body.clone());
                let fail = |reason: String| ScanError::Login {
                    identity: s.name.clone(),
                    reason,
                };
                let resp = self
                    .http
                    .send(&req)
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                if !resp.ok() {
                    return Err(fail(format!("the login answered {}", resp.status)));
                }
                let json = resp
                    .json()
                    .ok_or_else(|| fail("the login answer is not JSON".into()))?;
                let token = json
                    .pointer(&r.token_pointer)
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        fail(format!(
                            "no string at `{}` in the login answer",
                            r.token_pointer
                        ))
                    })?
                    .to_owned();
                let refresh = r
                    .refresh_pointer
                    .as_deref()
                    .or(Some("/refresh_token"))
                    .and_then(|p| json.pointer(p))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                if let Some(rt) = &refresh {
                    self.http.add_secret(rt.clone());
                }
                if let Ok(mut w) = s.refresh.write() {
                    *w = refresh;
                }
                format!("Bearer {token}")
            }
        };
        if let Some(t) = header.strip_prefix("Bearer ") {
            self.http.add_secret(t.trim().to_owned());
            let sub = jwt_parts(t.trim())
                .and_then(|(_, c)| c.get("sub").and_then(Value::as_str).map(str::to_owned));
            if let Ok(mut w) = s.subject.write() {
                *w = sub;
            }
        }
        self.http.add_secret(header.clone());
        if let Ok(mut w) = s.auth.write() {
            *w = Some(header);
        }
        Ok(())
    }

    // ---- sending ----------------------------------------------------------------------

    /// Sends as-is; `None` when it could not be sent (budget, transport).
    pub(crate) async fn send(&self, req: &Req) -> Option<Resp> {
        match self.http.send(req).await {
            Ok(r) => Some(r),
            Err(SendError::Budget) => None,
            Err(e) => {
                tracing::debug!(error = %e, "request failed");
                None
            }
        }
    }

    /// Stamps `req` with session `who`'s credentials.
    pub(crate) fn as_who(&self, mut req: Req, who: usize) -> Req {
        let s = &self.sessions[who];
        req.auth = s.auth();
        req.who = s.name.clone();
        req.auth_var = req.auth.as_ref().map(|_| s.var());
        req
    }

    /// Sends as session `who`; a 401 to a login identity triggers one re-login and retry (at
    /// most once per 30 s per identity, so probes that expect 401 do not cause a storm).
    pub(crate) async fn send_as(&self, req: Req, who: usize) -> Option<(Req, Resp)> {
        let req = self.as_who(req, who);
        let resp = self.send(&req).await?;
        let s = &self.sessions[who];
        if resp.status == 401 && s.recipe().is_some() {
            let recent = s
                .last_login
                .lock()
                .ok()
                .and_then(|l| *l)
                .is_some_and(|t| t.elapsed().as_secs() < 30);
            if !recent && self.login(who).await.is_ok() {
                let req = self.as_who(req, who);
                let resp = self.send(&req).await?;
                return Some((req, resp));
            }
        }
        Some((req, resp))
    }

    // ---- requests from the model --------------------------------------------------------

    /// The value of a parameter for session `who`: its own object id for the object
    /// parameter, else a seed, else the description's example or a sampled value.
    pub(crate) fn param_value(&self, op: &Op, name: &str, who: Option<usize>) -> Option<String> {
        let p = op.params.iter().find(|p| p.name == name)?;
        let last_path = op.path_params().last().is_some_and(|l| l.name == name);
        // A write goes only to an object the scan created: a harvested one is the user's own
        // data, which a probe's payloads must not overwrite (unless destructive probes were
        // allowed).
        let created_only =
            !matches!(op.method, Method::GET | Method::HEAD) && !self.config.allow_destructive;
        if p.at == In::Path
            && last_path
            && let (Some(w), Some(res)) = (who, op.resource())
            && let Some(o) = self.object_of(&res, w, created_only)
        {
            return Some(o.id);
        }
        let v = self
            .config
            .seeds
            .get(name)
            .cloned()
            .or_else(|| p.example.clone())
            .unwrap_or_else(|| self.model.sample(&p.schema, 0));
        Some(scalar(&v))
    }

    /// The path and query of `op` for `who`, with `overrides` for some parameters.
    pub(crate) fn target(
        &self,
        op: &Op,
        who: Option<usize>,
        overrides: &[(&str, String)],
    ) -> String {
        let mut path = op.path.clone();
        let mut query = Vec::new();
        for p in &op.params {
            let over = overrides
                .iter()
                .find(|(n, _)| *n == p.name)
                .map(|(_, v)| v.clone());
            match p.at {
                In::Path => {
                    let v = over
                        .or_else(|| self.param_value(op, &p.name, who))
                        .unwrap_or_default();
                    path = path.replace(&format!("{{{}}}", p.name), &encode(&v));
                }
                In::Query => {
                    let wanted =
                        p.required || over.is_some() || self.config.seeds.contains_key(&p.name);
                    if wanted && let Some(v) = over.or_else(|| self.param_value(op, &p.name, who)) {
                        query.push(format!("{}={}", encode(&p.name), encode(&v)));
                    }
                }
                In::Header => {}
            }
        }
        if query.is_empty() {
            path
        } else {
            format!("{path}?{}", query.join("&"))
        }
    }

    /// A ready request for `op` as `who` (credentials not yet stamped), body sampled.
    pub(crate) fn request(&self, op: &Op, who: Option<usize>) -> Req {
        let mut req = Req::new(op.method.clone(), self.target(op, who, &[]));
        for p in op
            .params
            .iter()
            .filter(|p| p.at == In::Header && p.required)
        {
            if let Some(v) = self.param_value(op, &p.name, who) {
                req = req.header(&p.name, v);
            }
        }
        if let Some(mut body) = self.model.sample_body(op) {
            self.apply_seeds(op, &mut body);
            req = req.json(body);
        }
        req
    }

    /// The configured seeds over a sampled body's top-level fields, except its URL fields:
    /// what goes there is the sample's inert URL, or the SSRF probe's canary.
    fn apply_seeds(&self, op: &Op, body: &mut Value) {
        if let Value::Object(m) = body {
            for (k, v) in m.iter_mut() {
                if let Some(seed) = self.config.seeds.get(k)
                    && !op.url_fields.iter().any(|f| f.strip_prefix('/') == Some(k))
                {
                    *v = seed.clone();
                }
            }
        }
    }

    // ---- objects ------------------------------------------------------------------------

    pub(crate) fn add_object(&self, o: Obj) {
        let Ok(mut objs) = self.objects.lock() else {
            return;
        };
        match objs
            .iter_mut()
            .find(|x| x.resource == o.resource && x.id == o.id)
        {
            Some(x) if x.owner != o.owner || o.shared => x.shared = true,
            Some(_) => {}
            None => objs.push(o),
        }
    }

    /// The newest object of `resource` owned by `owner` (created by the scan if asked).
    pub(crate) fn object_of(
        &self,
        resource: &str,
        owner: usize,
        created_only: bool,
    ) -> Option<Obj> {
        self.objects
            .lock()
            .ok()?
            .iter()
            .rev()
            .find(|o| {
                o.resource == resource
                    && o.owner == owner
                    && !o.shared
                    && (o.created || !created_only)
            })
            .cloned()
    }

    /// Records objects from an answer of `op` to `who`.
    pub(crate) fn harvest(&self, op: &Op, who: usize, resp: &Resp) {
        let anonymous = self.sessions[who].is_anonymous();
        if op.is_admin() || !resp.ok() || (anonymous && op.method != Method::GET) {
            return;
        }
        let Some(resource) = op.resource() else {
            return;
        };
        let json = resp.json();
        if op.method == Method::POST && !op.has_path_params() {
            let id = json
                .as_ref()
                .and_then(|j| j.get("id"))
                .map(scalar)
                .or_else(|| {
                    resp.header("location")
                        .and_then(|l| l.rsplit('/').next())
                        .map(str::to_owned)
                });
            if let Some(id) = id.filter(|i| !i.is_empty()) {
                self.add_object(Obj {
                    resource,
                    id,
                    owner: who,
                    created: true,
                    shared: false,
                });
            }
        } else if op.method == Method::GET && !op.path.ends_with('}') {
            let Some(json) = json else { return };
            for item in list_items(&json) {
                if let Some(id) = item.get("id") {
                    self.add_object(Obj {
                        resource: resource.clone(),
                        id: scalar(id),
                        owner: who,
                        created: false,
                        shared: anonymous || !op.secured,
                    });
                }
            }
        }
    }

    // ---- baseline -----------------------------------------------------------------------

    pub(crate) fn record_baseline(&self, op: &Op, who: usize, req: Req, resp: Resp) {
        if resp.ok() {
            self.covered_by(op, &self.sessions[who].name);
        }
        if let Ok(mut b) = self.baseline.lock() {
            b.insert((op.key(), who), Seen { req, resp });
        }
    }

    pub(crate) fn baseline(&self, op: &Op, who: usize) -> Option<Seen> {
        self.baseline.lock().ok()?.get(&(op.key(), who)).cloned()
    }

    /// Whether the baseline reached past authentication: some identity's request to a
    /// secured operation was answered 2xx, or refused for something else than its credentials. (True when there is nothing to reach: no identity,
    /// or no secured operation in the description.) Expired tokens, a wrong target or a server
    /// not listening where the scan connects leave every probe behind authentication without
    /// an answer to judge, and a report without findings would read as a pass.
    pub(crate) fn reached(&self) -> bool {
        let secured: Vec<String> = self
            .model
            .ops
            .iter()
            .filter(|o| o.secured)
            .map(Op::key)
            .collect();
        if secured.is_empty() || self.sessions.iter().all(Session::is_anonymous) {
            return true;
        }
        // Past authentication: a 2xx, or a 404 or 4xx other than 401 and 403 (an object the
        // baseline could not name, a body it could not fill); a server error says nothing.
        let past = |status: u16| {
            (200..300).contains(&status)
                || (400..500).contains(&status) && !matches!(status, 401 | 403 | 407)
        };
        self.all_baseline().iter().any(|((key, who), seen)| {
            !self.sessions[*who].is_anonymous() && past(seen.resp.status) && secured.contains(key)
        })
    }

    /// Every baseline answer, for passive checks.
    pub(crate) fn all_baseline(&self) -> Vec<((String, usize), Seen)> {
        self.baseline
            .lock()
            .map(|b| b.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    // ---- findings and coverage ----------------------------------------------------------

    pub(crate) fn report(&self, mut f: Finding) {
        f.spec_line = self
            .model
            .ops
            .iter()
            .find(|o| o.key() == f.operation)
            .and_then(|o| o.line);
        tracing::info!(rule = f.rule, operation = %f.operation, severity = %f.severity, "finding");
        if let Ok(mut all) = self.findings.lock()
            && !all.iter().any(|x| x.fingerprint == f.fingerprint)
        {
            all.push(f);
        }
    }

    pub(crate) fn ran(&self, op: &Op, probe: &'static str) {
        if let Ok(mut c) = self.coverage.lock()
            && let Some(e) = c.get_mut(&op.key())
        {
            e.probes.insert(probe);
        }
    }

    fn covered_by(&self, op: &Op, who: &str) {
        if let Ok(mut c) = self.coverage.lock()
            && let Some(e) = c.get_mut(&op.key())
        {
            e.baseline_2xx.insert(who.to_owned());
        }
    }

    pub(crate) fn take(&self) -> (Vec<Finding>, Vec<OperationCoverage>, Vec<String>) {
        let f = self.findings.lock().map(|f| f.clone()).unwrap_or_default();
        let c = self
            .coverage
            .lock()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default();
        let n = self.notes.lock().map(|n| n.clone()).unwrap_or_default();
        (f, c, n)
    }

    /// A request from a probe's own source address (or the pool when rotation is off).
    pub(crate) fn lane(&self, lane: u8, index: u8) -> Source {
        if self.http.can_rotate_sources() {
            Source::Lane(lane, index)
        } else {
            Source::Pool
        }
    }
}

/// The objects of a list answer: a top-level array, or the first array of objects in a
/// top-level field (`items`, `data`, `results`...).
pub(crate) fn list_items(json: &Value) -> Vec<&Value> {
    let arr = match json {
        Value::Array(a) => Some(a),
        Value::Object(m) => m
            .values()
            .find_map(|v| v.as_array().filter(|a| a.iter().any(Value::is_object))),
        _ => None,
    };
    arr.map(|a| a.iter().filter(|v| v.is_object()).collect())
        .unwrap_or_default()
}

/// A JSON scalar as text (strings unquoted).
pub(crate) fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The header and claims of a JWT, unverified.
pub(crate) fn jwt_parts(token: &str) -> Option<(Value, Value)> {
    let mut it = token.split('.');
    let h = URL_SAFE_NO_PAD.decode(it.next()?).ok()?;
    let c = URL_SAFE_NO_PAD.decode(it.next()?).ok()?;
    it.next()?;
    Some((
        serde_json::from_slice(&h).ok()?,
        serde_json::from_slice(&c).ok()?,
    ))
}

mod percent_encode {
    /// Percent-encodes everything but unreserved characters (RFC 3986).
    pub(crate) fn encode(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }
}
