//! The request pipeline. Phases, in order (DESIGN.md):
//!
//! 1. accept (server.rs): connection cap, header-read timeout, header size cap, HTTP framing by
//!    hyper (conflicting lengths and non-chunked transfer codings refused; a request carrying
//!    both `Content-Length` and `Transfer-Encoding` is read as chunked, re-framed toward the
//!    upstream, and its connection closed after the answer, so no byte of it can be read as a
//!    second request).
//! 2. route: the path is normalised once; the normalised path is matched against the
//!    inventory and is what the upstream receives. CORS preflights are answered by the CORS
//!    layer in front of the pipeline.
//! 3. to 6. authenticate, authorize, limit, validate: arrive with their issues.
//! 7. proxy: body cap (declared and streamed) and read timeout, hop-by-hop stripping,
//!    X-Forwarded-*, pooled upstream connection, upstream timeout.
//! 8. respond: upstream 5xx bodies replaced by a generic problem; hop-by-hop and banner
//!    headers removed; security, version and request-id headers set.
//! 9. log: one line per request, metrics.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::body::ClientBody as Incoming;
use arc_swap::ArcSwap;
use http::header::{CONTENT_LENGTH, HOST};
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, Uri, Version};
use http_body_util::{BodyExt, Limited};
use portcullis_guard::Rejection;
use portcullis_guard::forward::{self, X_REQUEST_ID};
use portcullis_guard::jwt::AuthFailure;
use portcullis_policy::{Lookup, ResponseFields, RouteId, VersionStatus, path};
use tower::Service;

use crate::body::{Body, Deadline, from_guard};
use crate::metrics::Metrics;
use crate::redact;
use crate::runtime::Runtime;
use crate::upstream::Start;

/// The body sent upstream: the client's, capped in size and in time (see [`Deadline`]).
/// Bodiless requests (most GETs) cost nothing; a streamed body is on the heap.
#[derive(Debug)]
pub enum UpBody {
    Empty,
    /// A body the gateway had to read (to check a refresh token), sent on as it came.
    Bytes(Option<bytes::Bytes>),
    Stream(Pin<Box<Limited<Deadline<Incoming>>>>),
}

impl http_body::Body for UpBody {
    type Data = bytes::Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        match &mut *self {
            UpBody::Empty => Poll::Ready(None),
            UpBody::Bytes(b) => Poll::Ready(b.take().map(|b| Ok(http_body::Frame::data(b)))),
            UpBody::Stream(b) => b.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Empty => true,
            UpBody::Bytes(b) => b.is_none(),
            UpBody::Stream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            UpBody::Empty => http_body::SizeHint::with_exact(0),
            UpBody::Bytes(b) => {
                http_body::SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64))
            }
            UpBody::Stream(b) => b.size_hint(),
        }
    }
}

/// What the pipeline needs beyond the policy. One per worker; like [`Shared`] and [`View`]
/// it is aligned to its own cache lines (128 bytes: two lines, which some cores fetch
/// together): each worker's are allocated next to the others' when the gateway starts, and
/// their reference counts are written by every request.
#[derive(Debug)]
#[repr(align(128))]
pub struct Deps {
    /// This worker's upstream connections.
    pub upstream: crate::upstream::Upstream,
    pub metrics: Arc<Metrics>,
    pub store: Arc<dyn portcullis_guard::store::Store>,
    /// The local rate-limit table (shared by the workers, kept across reloads).
    pub limiter: Arc<crate::ratelimit::LocalLimiter>,
    /// Requests in flight per concurrency rule and key.
    pub inflight: Arc<crate::ratelimit::Inflight>,
    /// The pace of each key on sensitive flows.
    pub bursts: Arc<crate::ratelimit::Bursts>,
    /// The Redis backend, when limits are shared with other replicas.
    pub redis: Option<Arc<crate::redis::RedisStore>>,
}

/// The CORS layer in front of the pipeline, when the policy has `cors`.
pub type CorsService = Option<tower_http::cors::Cors<Pipeline>>;

/// The current policy and CORS service, swapped together on reload, read by every worker.
#[derive(Debug)]
pub struct Current {
    pub runtime: ArcSwap<Runtime>,
    pub cors: ArcSwap<CorsService>,
    /// Counts the swaps of `runtime` and `cors` ([`Current::swap`]): a worker whose
    /// [`View`] is older builds a new one.
    pub generation: AtomicU64,
    /// The TLS certificate and key in use (replaced on reload: a renewed certificate is
    /// served to the next connection).
    pub tls: arc_swap::ArcSwapOption<rustls::ServerConfig>,
    /// The admin listener's token (replaced on reload: a rotated token ends the old one).
    pub admin_token: arc_swap::ArcSwapOption<String>,
}

fn cors_service(policy: &portcullis_policy::Policy) -> CorsService {
    policy
        .cors
        .as_ref()
        .map(|c| tower::Layer::layer(&portcullis_guard::cors::layer(c), Pipeline))
}

impl Current {
    pub fn new(
        runtime: Runtime,
        tls: Option<Arc<rustls::ServerConfig>>,
        admin_token: Option<Arc<String>>,
    ) -> Self {
        Self {
            cors: ArcSwap::from_pointee(cors_service(&runtime.policy)),
            runtime: ArcSwap::from_pointee(runtime),
            generation: AtomicU64::new(0),
            tls: arc_swap::ArcSwapOption::new(tls),
            admin_token: arc_swap::ArcSwapOption::new(admin_token),
        }
    }

    /// Puts a new policy in place: its CORS service first (a request that sees the new runtime
    /// must not see the old CORS), then the runtime, then the count the workers look at.
    pub fn swap(&self, runtime: Runtime) {
        self.cors.store(Arc::new(cors_service(&runtime.policy)));
        self.runtime.store(Arc::new(runtime));
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// A worker's view of the current policy: the runtime and CORS service, and copies of the
/// values every request clones (the upstream's `Host`, each route's block of security fields),
/// in an allocation of the worker's own. Taken from [`Current`] directly, each request cloned
/// the one `Arc<Runtime>` and those values' shared bytes, whose counts every core then wrote
/// in turn: a cache line moved between cores four times per request and value. Built again
/// when the policy changes; a request keeps the view it started with.
#[derive(Debug)]
#[repr(align(128))]
pub struct View {
    generation: u64,
    pub runtime: Arc<Runtime>,
    pub cors: Arc<CorsService>,
    /// The upstream's authority as `Host`, built once per view.
    pub upstream_host: Option<HeaderValue>,
    /// [`Hardening::block`] of each route's rules, the default rules' last (copied).
    blocks: Vec<bytes::Bytes>,
}

impl View {
    fn new(current: &Current, generation: u64) -> Self {
        let runtime = current.runtime.load_full();
        let blocks = runtime
            .route_rules
            .iter()
            .chain([&runtime.default_rules])
            .map(|r| bytes::Bytes::copy_from_slice(r.hardening.block()))
            .collect();
        let upstream_host = HeaderValue::from_str(runtime.policy.upstream.authority.as_str()).ok();
        Self {
            generation,
            cors: current.cors.load_full(),
            runtime,
            upstream_host,
            blocks,
        }
    }

    /// The security fields of a route's answers as header lines (the default rules' for an
    /// answer with no route), as [`Runtime::respond_rules`] chooses them.
    pub fn block(&self, route: Option<RouteId>) -> Option<&bytes::Bytes> {
        let routes = self.runtime.route_rules.len();
        self.blocks
            .get(route.filter(|&r| r < routes).unwrap_or(routes))
    }
}

impl std::ops::Deref for View {
    type Target = Runtime;

    fn deref(&self) -> &Runtime {
        &self.runtime
    }
}

/// What one worker serves with: the shared current policy, its view of it, and its own
/// upstream pool.
#[derive(Debug)]
#[repr(align(128))]
pub struct Shared {
    pub current: Arc<Current>,
    pub deps: Arc<Deps>,
    view: Mutex<Arc<View>>,
}

impl Shared {
    pub fn new(current: Arc<Current>, deps: Arc<Deps>) -> Self {
        let generation = current.generation.load(Ordering::Acquire);
        let view = Mutex::new(Arc::new(View::new(&current, generation)));
        Self {
            current,
            deps,
            view,
        }
    }

    /// This worker's view of the current policy, built again first when the policy changed.
    /// (The lock is the worker's own: only its requests take it.)
    pub fn view(&self) -> Arc<View> {
        let generation = self.current.generation.load(Ordering::Acquire);
        let mut view = self.view.lock().unwrap_or_else(PoisonError::into_inner);
        if view.generation != generation {
            *view = Arc::new(View::new(&self.current, generation));
        }
        view.clone()
    }
}

/// Per-request facts every phase may read.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub id: RequestId,
    /// When the request's head was handed to the pipeline (deadlines count from it).
    pub start: Instant,
    pub peer: SocketAddr,
    pub client: std::net::IpAddr,
    pub tls: bool,
    /// Served by the gateway's HTTP/1 server, which writes an upstream answer's hardening
    /// fields itself (see `handle`).
    pub h1: bool,
    pub runtime: Arc<View>,
    pub deps: Arc<Deps>,
}

impl Ctx {
    /// Whether an upstream answer on `route` starts with a bare map: over HTTP/1, unless the
    /// route's rules must be applied again at the end (they name a field added late).
    fn bare(&self, route: Option<RouteId>) -> bool {
        self.h1 && !self.runtime.respond_rules(route).again
    }
}

/// What the pipeline decided, for the respond and log phases.
#[derive(Clone, Copy, Debug)]
pub struct Decision {
    pub route: Option<RouteId>,
    pub reason: &'static str,
    /// The answer is the upstream's, its map started from the route's hardening: the
    /// respond phase has no security fields left to set.
    pub hardened: bool,
}

/// The pipeline as a tower service, so the CORS layer can sit in front of it. It holds
/// nothing: each request carries its worker's dependencies in its [`Ctx`].
#[derive(Clone, Copy, Debug)]
pub struct Pipeline;

impl Service<Request<Incoming>> for Pipeline {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    /// Behind the CORS layer the request carries its [`Ctx`], and the answer its [`Decision`],
    /// as extensions.
    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        Box::pin(async move {
            let Some(ctx) = req.extensions().get::<Ctx>().cloned() else {
                return Ok(from_guard(Rejection::Internal.response("-")));
            };
            let (mut resp, decision) = pipeline(ctx, req).await;
            resp.extensions_mut().insert(decision);
            Ok(resp)
        })
    }
}

async fn pipeline(ctx: Ctx, req: Request<Incoming>) -> (Response<Body>, Decision) {
    let mut route = None;
    let mut limits = Headroom::default();
    let mut refresh = None;
    // The pipeline's state (about 4 KiB) lives on the heap, built there: the futures around
    // it stay small, and moving them (hyper and tower move a request's future a few times)
    // copies pointers rather than kilobytes.
    let result = crate::spare::pinned(|| {
        forward(&ctx.deps, &ctx, req, &mut route, &mut limits, &mut refresh)
    })
    .await;
    // A refresh token's use goes back when its request was refused before the upstream judged
    // it (a limit, a quota, an upstream that failed): the client's retry is no theft, and
    // counting it as one would revoke the user's whole family.
    if let (Some(RefreshUse(jti)), Err(rej)) = (&refresh, &result)
        && !matches!(rej, Rejection::UpstreamError(s) if s.is_client_error())
        && let Err(e) = Box::pin(ctx.deps.store.unuse(jti)).await
    {
        tracing::error!(target: "portcullis::auth", request_id = ctx.id.as_str(), error = %e, "a refresh token's use could not be given back");
    }
    // Every answer `forward` returns is the upstream's, its map started from the route's
    // hardening; every refusal is the gateway's own.
    let (resp, reason, hardened) = match result {
        Ok(mut resp) => {
            limits.apply(resp.headers_mut());
            (resp, "allowed", true)
        }
        Err(rej) => (
            from_guard(rej.response(ctx.id.as_str())),
            rej.reason(),
            false,
        ),
    };
    (
        resp,
        Decision {
            route,
            reason,
            hardened,
        },
    )
}

/// The authenticate phase. Client-sent copies of the claim headers go first, whatever happens.
/// On the refresh route the body is read (bounded) and returned, to be forwarded as it came.
async fn authenticate(
    deps: &Deps,
    ctx: &Ctx,
    auth: &portcullis_policy::Auth,
    route: RouteId,
    req: Request<Incoming>,
) -> Result<(http::request::Parts, Pending), Rejection> {
    let (mut parts, body) = req.into_parts();
    for (_, header) in &auth.jwt.forward_claims {
        parts.headers.remove(header);
    }
    let Some(verifier) = ctx.runtime.verifier.as_ref() else {
        return Ok((parts, Pending::Incoming(body)));
    };
    let now = portcullis_guard::jwt::now();
    let refuse = |f: AuthFailure| Rejection::Unauthorized(f);
    if let Some(rule) = auth.refresh.as_ref().filter(|r| r.route == route) {
        let limits = &ctx.runtime.policy.limits;
        let max = usize::try_from(limits.max_body_bytes).unwrap_or(usize::MAX);
        let bytes =
            match tokio::time::timeout(limits.body_read_timeout, Limited::new(body, max).collect())
                .await
            {
                Err(_) => return Err(Rejection::RequestTimeout),
                Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                    return Err(Rejection::PayloadTooLarge);
                }
                Ok(Err(_)) => {
                    return Err(Rejection::BadRequest("the request body could not be read"));
                }
                Ok(Ok(c)) => unambiguous(c.to_bytes())?,
            };
        let json: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|_| refuse(AuthFailure::Missing))?;
        let token = json
            .pointer(&rule.pointer)
            .and_then(|t| t.as_str())
            .ok_or(refuse(AuthFailure::Missing))?;
        let v = verify(ctx, verifier, token, &rule.token_type, now)
            .await
            .map_err(refuse)?;
        let (jti, sub) = (v.str_claim("jti"), v.str_claim("sub"));
        if revoked(deps, ctx, jti, sub, v.int_claim("iat")).await? {
            return Err(refuse(AuthFailure::Revoked));
        }
        let (Some(jti), Some(sub)) = (jti.map(str::to_owned), sub.map(str::to_owned)) else {
            // Without a jti a refresh token cannot be held to one use.
            return Err(refuse(AuthFailure::MissingClaim));
        };
        let exp = v.int_claim("exp").unwrap_or(now + 86_400 * 30);
        let store = &deps.store;
        let first = async {
            // (A use whose outcome the store could not tell is the store's to recognise on
            // the client's retry: the embedded store takes a failed write back, Redis knows
            // its own unanswered write by its mark.)
            let first = store.use_once(&jti, exp, now).await?;
            if !first {
                // Presented twice: one of the two holders stole it. End the whole family.
                store.revoke_subject(&sub, now).await?;
            }
            Ok::<_, portcullis_guard::store::StoreError>(first)
        }
        .await
        .map_err(|e| {
            tracing::error!(target: "portcullis::auth", request_id = ctx.id.as_str(), error = %e, "state store failed");
            Rejection::Unavailable
        })?;
        if !first {
            tracing::warn!(target: "portcullis::auth", request_id = ctx.id.as_str(), "refresh token reused: the subject's tokens are revoked");
            return Err(refuse(AuthFailure::RefreshReused));
        }
        parts.extensions.insert(RefreshUse(jti));
        return Ok((parts, Pending::Read(bytes)));
    }
    if !auth.required.get(route).copied().unwrap_or(true) {
        return Ok((parts, Pending::Incoming(body)));
    }
    let token = verifier.token(&parts.headers).map_err(refuse)?;
    let v = verify(ctx, verifier, token, &auth.jwt.token_type, now)
        .await
        .map_err(refuse)?;
    if revoked(
        deps,
        ctx,
        v.str_claim("jti"),
        v.str_claim("sub"),
        v.int_claim("iat"),
    )
    .await?
    {
        return Err(refuse(AuthFailure::Revoked));
    }
    for (claim, header) in &auth.jwt.forward_claims {
        if let Some(Ok(value)) = v.claim_text(claim).map(|c| HeaderValue::from_str(&c)) {
            parts.headers.insert(header.clone(), value);
        }
    }
    // The verified claims, for the phases after this one (roles, ownership).
    parts.extensions.insert(v);
    Ok((parts, Pending::Incoming(body)))
}

/// Whether the token is revoked; a store that cannot answer refuses the request (503) unless
/// the backend was told to fail open, in which case it answered `false` itself.
async fn revoked(
    deps: &Deps,
    ctx: &Ctx,
    jti: Option<&str>,
    sub: Option<&str>,
    iat: Option<i64>,
) -> Result<bool, Rejection> {
    deps.store.is_revoked(jti, sub, iat).await.map_err(|e| {
        tracing::error!(target: "portcullis::auth", request_id = ctx.id.as_str(), error = %e, "revocation check failed: request refused");
        Rejection::Unavailable
    })
}

/// Reads a body a phase must see whole, within the body limits.
async fn read_body(
    limits: &portcullis_policy::Limits,
    body: Incoming,
) -> Result<bytes::Bytes, Rejection> {
    let max = usize::try_from(limits.max_body_bytes).unwrap_or(usize::MAX);
    match tokio::time::timeout(limits.body_read_timeout, Limited::new(body, max).collect()).await {
        Err(_) => Err(Rejection::RequestTimeout),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(Rejection::PayloadTooLarge),
        Ok(Err(_)) => Err(Rejection::BadRequest("the request body could not be read")),
        Ok(Ok(c)) => unambiguous(c.to_bytes()),
    }
}

/// A body a phase reads, refused when it is JSON that repeats a key: the gateway (serde keeps
/// the last copy) and the upstream (some parsers keep the first) would read two requests, one
/// checked (an account counted, a URL allowed, a password judged) and one acted on.
fn unambiguous(bytes: bytes::Bytes) -> Result<bytes::Bytes, Rejection> {
    if portcullis_guard::jwt::repeats_a_key(&bytes) {
        return Err(Rejection::BadRequest("the JSON body repeats a key"));
    }
    Ok(bytes)
}

/// A login attempt let through, to be settled when it ends.
struct Login<'p> {
    rule: &'p portcullis_policy::LoginRule,
    account: String,
    attempt: portcullis_guard::login::Attempt,
}

/// The login phase, before forwarding: the account the body names, counted as trying, or a
/// 429.
async fn login_check<'p>(
    deps: &Deps,
    ctx: &Ctx,
    rule: &'p portcullis_policy::LoginRule,
    body: Pending,
) -> Result<(Pending, Login<'p>), Rejection> {
    let bytes = body.read(&ctx.runtime.policy.limits).await?;
    // An attempt that names no account where the policy looks for it would escape every
    // count (an upstream may read `Email` or a form body): it is refused, not forwarded.
    let Some(account) = portcullis_guard::login::account(&bytes, &rule.account_pointer) else {
        return Err(Rejection::BadRequest(
            "the login body does not name an account",
        ));
    };
    let held = portcullis_guard::login::check(
        deps.store.as_ref(),
        rule,
        &account,
        &forward::Counted(ctx.client).to_string(),
        portcullis_guard::jwt::now(),
    )
    .await;
    match held {
        Ok(attempt) => Ok((
            Pending::Read(bytes),
            Login {
                rule,
                account,
                attempt,
            },
        )),
        Err(portcullis_guard::login::Held::Wait(s)) => Err(Rejection::TooManyRequests(s)),
        Err(portcullis_guard::login::Held::Unknown) => {
            tracing::error!(target: "portcullis::auth", request_id = ctx.id.as_str(), "login holds could not be read: attempt refused");
            Err(Rejection::Unavailable)
        }
    }
}

/// The login phase, once the attempt has ended: its outcome counted (`None`: it never got an
/// answer from the upstream, and does not count); one answer for every failure.
async fn login_settle(
    deps: &Deps,
    ctx: &Ctx,
    login: Login<'_>,
    status: Option<http::StatusCode>,
) -> Result<(), Rejection> {
    use portcullis_guard::login::Outcome;
    let outcome = match status {
        Some(s) if login.rule.failure_statuses.contains(&s.as_u16()) => Outcome::Failed,
        Some(s) if s.is_success() => Outcome::Succeeded,
        _ => Outcome::Undecided,
    };
    let stored = portcullis_guard::login::settle(
        deps.store.as_ref(),
        login.rule,
        &login.account,
        &forward::Counted(ctx.client).to_string(),
        login.attempt,
        outcome,
        portcullis_guard::jwt::now(),
    )
    .await;
    if stored.is_err() {
        tracing::error!(target: "portcullis::auth", request_id = ctx.id.as_str(), "login outcome not stored");
    }
    if outcome == Outcome::Failed && login.rule.uniform_failures {
        return Err(Rejection::LoginFailed);
    }
    Ok(())
}

/// The roles a caller holds: the roles claim, a string or an array of strings.
fn held_roles(claims: &portcullis_guard::jwt::Verified, claim: &str) -> Vec<String> {
    match claims.claims.get(claim) {
        Some(serde_json::Value::String(r)) => vec![r.clone()],
        Some(serde_json::Value::Array(rs)) => rs
            .iter()
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// The authorize phase: roles (403), then ownership from the request (404) or by a lookup
/// before a write (404). Returns the response-side check still to do: (pointer, caller).
async fn authorize(
    deps: &Deps,
    ctx: &Ctx,
    authz: &portcullis_policy::Authz,
    id: RouteId,
    parts: &http::request::Parts,
    path: &str,
) -> Result<Vec<(String, String)>, Rejection> {
    let Some(claims) = parts.extensions.get::<portcullis_guard::jwt::Verified>() else {
        let checked = authz.roles.get(id).is_some_and(|r| !r.is_empty())
            || authz.owners.iter().any(|o| o.route == id);
        return if checked {
            Err(Rejection::Unauthorized(AuthFailure::Missing))
        } else {
            Ok(Vec::new())
        };
    };
    let needed = &authz.roles[id];
    if !needed.is_empty() {
        let held = held_roles(claims, &authz.roles_claim);
        if !needed.iter().any(|n| held.contains(n)) {
            tracing::warn!(target: "portcullis::authz", request_id = ctx.id.as_str(), route = ctx.runtime.policy.inventory.routes[id].template.as_str(), "role missing");
            return Err(Rejection::Forbidden);
        }
    }
    // Every response-side rule of the route, each checked on the answer.
    let mut after = Vec::new();
    for rule in authz.owners.iter().filter(|o| o.route == id) {
        let me = claims.claim_text(&rule.claim).ok_or(Rejection::NotOwner)?;
        let params = || -> Vec<(String, String)> {
            let route = &ctx.runtime.policy.inventory.routes[id];
            match ctx.runtime.policy.inventory.lookup(&route.method, path) {
                Lookup::Found { params, .. } => route
                    .params
                    .iter()
                    .cloned()
                    .zip(params.values().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            }
        };
        match &rule.check {
            portcullis_policy::OwnerCheck::Param(name) => {
                if !params().iter().any(|(n, v)| n == name && *v == me) {
                    tracing::warn!(target: "portcullis::authz", request_id = ctx.id.as_str(), "object of another subject requested (path parameter)");
                    return Err(Rejection::NotOwner);
                }
            }
            portcullis_policy::OwnerCheck::Response(pointer) => after.push((pointer.clone(), me)),
            portcullis_policy::OwnerCheck::Lookup { route, pointer } => {
                let mut target = ctx.runtime.policy.inventory.routes[*route].template.clone();
                for (n, v) in params() {
                    target = target.replace(&format!("{{{n}}}"), &v);
                }
                if !lookup_owner(deps, ctx, parts, &target, pointer, &me).await? {
                    tracing::warn!(target: "portcullis::authz", request_id = ctx.id.as_str(), "write to an object of another subject refused");
                    return Err(Rejection::NotOwner);
                }
            }
        }
    }
    Ok(after)
}

/// Reads the object as the caller (same credentials) and compares its owner field.
async fn lookup_owner(
    deps: &Deps,
    ctx: &Ctx,
    parts: &http::request::Parts,
    path: &str,
    pointer: &str,
    me: &str,
) -> Result<bool, Rejection> {
    let policy = &ctx.runtime.policy;
    let mut req = Request::new(UpBody::Empty);
    *req.uri_mut() = Uri::from(
        path.parse::<PathAndQuery>()
            .map_err(|_| Rejection::NotOwner)?,
    );
    for name in [http::header::AUTHORIZATION, http::header::COOKIE] {
        if let Some(v) = parts.headers.get(&name) {
            req.headers_mut().insert(name, v.clone());
        }
    }
    if let Some(h) = &ctx.runtime.upstream_host {
        req.headers_mut().insert(HOST, h.clone());
    }
    req.headers_mut()
        .insert(X_REQUEST_ID, ctx.id.value().clone());
    let sent = deps
        .upstream
        .send(
            &policy.upstream.authority,
            policy.limits.upstream_connect_timeout,
            policy.limits.upstream_timeout,
            req,
            &[],
            Start::Plain,
        )
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(crate::upstream::UpstreamError::Timeout) => return Err(Rejection::UpstreamTimeout),
        Err(_) => return Err(Rejection::UpstreamUnavailable),
    };
    if !resp.status().is_success() {
        return Ok(false);
    }
    Ok(read_response(resp.into_body())
        .await
        .is_ok_and(|bytes| owns(&bytes, pointer, me)))
}

/// Whether the JSON body's owner field (a string, or a number as written) is `me`.
fn owns(bytes: &[u8], pointer: &str, me: &str) -> bool {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .is_ok_and(|v| crate::owner::owns(&v, pointer, me))
}

/// The schema pointer for a response status: the exact code, else `2XX`.
fn response_schema(route: &portcullis_policy::Route, status: http::StatusCode) -> Option<&str> {
    let code = status.as_str();
    route
        .response_schemas
        .iter()
        .find(|(c, _)| c == code)
        .or_else(|| route.response_schemas.iter().find(|(c, _)| c == "2XX"))
        // A success the description does not declare (a 203 or 206 where it says 200) is held
        // to the schema of one it does: an undeclared code must not be a way past the filter.
        .or_else(|| {
            route
                .response_schemas
                .iter()
                .find(|(c, _)| status.is_success() && c.starts_with('2'))
        })
        .map(|(_, p)| p.as_str())
}

/// Reads an upstream body that a respond-phase rule must see whole (1 MiB, 5 s).
async fn read_response(body: Body) -> Result<bytes::Bytes, Rejection> {
    Ok(tokio::time::timeout(
        Duration::from_secs(5),
        Limited::new(body, 1 << 20).collect(),
    )
    .await
    .map_err(|_| Rejection::UpstreamTimeout)?
    .map_err(|_| Rejection::UpstreamError(http::StatusCode::BAD_GATEWAY))?
    .to_bytes())
}

/// The response-side ownership check on a body read whole. A pointer with a `*` segment
/// (`/items/*/user_id`) names the owner of each item of a list: items of other subjects are
/// taken out (the new body is returned); a body without that list is refused. Otherwise the
/// object's owner must be the caller, or the answer is 404.
fn check_owner(
    ctx: &Ctx,
    bytes: &[u8],
    pointer: &str,
    me: &str,
) -> Result<Option<bytes::Bytes>, Rejection> {
    if !pointer.contains("/*/") {
        if !owns(bytes, pointer, me) {
            tracing::warn!(target: "portcullis::authz", request_id = ctx.id.as_str(), "object of another subject in the response; answered 404");
            return Err(Rejection::NotOwner);
        }
        return Ok(None);
    };
    let mut value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|_| Rejection::NotOwner)?;
    let Some(removed) = crate::owner::keep_owned(&mut value, pointer, me) else {
        tracing::warn!(target: "portcullis::authz", request_id = ctx.id.as_str(), "owner rule names a list the response does not have; answered 404");
        return Err(Rejection::NotOwner);
    };
    if removed == 0 {
        return Ok(None);
    }
    tracing::warn!(target: "portcullis::authz", request_id = ctx.id.as_str(), removed, "objects of other subjects taken out of a list");
    serde_json::to_vec(&value)
        .map(|v| Some(bytes::Bytes::from(v)))
        .map_err(|_| Rejection::NotOwner)
}

/// Undeclared properties out (or the response refused); a body that is not JSON at all is
/// not the declared type and never reaches the client (API10).
fn filter_response(
    ctx: &Ctx,
    bytes: &[u8],
    doc: &serde_json::Value,
    pointer: &str,
    mode: ResponseFields,
    roles: Option<&[String]>,
) -> Result<bytes::Bytes, Rejection> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(|_| {
        tracing::warn!(target: "portcullis::validate", request_id = ctx.id.as_str(), "upstream 2xx body is not JSON; refused");
        Rejection::UpstreamError(http::StatusCode::BAD_GATEWAY)
    })?;
    let Some(schema) = doc.pointer(pointer) else {
        return Ok(bytes::Bytes::copy_from_slice(bytes));
    };
    let pruned = crate::validate::prune(&mut value, schema, doc, 0, None);
    // Below the filter's depth nothing was looked at: refused rather than passed on unfiltered
    // (a recursive schema lets an upstream, or data a client stored, nest that deep).
    if pruned.too_deep {
        tracing::warn!(target: "portcullis::validate", request_id = ctx.id.as_str(), "upstream 2xx body nests deeper than the response filter goes; refused");
        return Err(Rejection::UpstreamError(http::StatusCode::BAD_GATEWAY));
    }
    if pruned.undeclared > 0 {
        tracing::warn!(target: "portcullis::validate", request_id = ctx.id.as_str(), removed = pruned.undeclared, "undeclared response properties");
        if mode == ResponseFields::Refuse {
            return Err(Rejection::UpstreamError(http::StatusCode::BAD_GATEWAY));
        }
    }
    // What is left must be what the contract says (API10): types, formats, enums, required
    // properties. Checked before per-role hiding could remove a required property.
    if let Some(validator) = ctx.runtime.validators.response(pointer)
        && let Err(problem) = crate::validate::check(&validator, &value)
    {
        tracing::warn!(target: "portcullis::validate", request_id = ctx.id.as_str(), problem = %problem, "upstream 2xx body does not match its declared schema; refused");
        return Err(Rejection::UpstreamError(http::StatusCode::BAD_GATEWAY));
    }
    // Then the caller's view: declared properties their roles may not see (`roles` is only
    // known when the description has per-role views).
    let hidden = match roles {
        Some(roles) => {
            let view = crate::validate::prune(&mut value, schema, doc, 0, Some(roles));
            if view.too_deep {
                return Err(Rejection::UpstreamError(http::StatusCode::BAD_GATEWAY));
            }
            view.hidden
        }
        _ => 0,
    };
    if pruned.undeclared + hidden > 0 {
        return serde_json::to_vec(&value)
            .map(bytes::Bytes::from)
            .map_err(|_| Rejection::Internal);
    }
    Ok(bytes::Bytes::copy_from_slice(bytes))
}

/// Verifies with the configured keys and the provider's JWKS; an unknown `kid` refreshes the
/// set (rate-limited) and retries once; a stale set is refreshed in the background.
async fn verify(
    ctx: &Ctx,
    verifier: &portcullis_guard::jwt::Verifier,
    token: &str,
    ty: &portcullis_policy::TokenType,
    now: i64,
) -> Result<portcullis_guard::jwt::Verified, AuthFailure> {
    let Some(jwks) = &ctx.runtime.jwks else {
        return verifier.verify(token, ty, now);
    };
    if jwks.refresh_due(now) {
        let (jwks, runtime) = (jwks.clone(), ctx.runtime.clone());
        tokio::spawn(async move {
            if let Some(v) = &runtime.verifier {
                jwks.refresh(v, now).await;
            }
        });
    }
    match verifier.verify_with(token, ty, now, jwks.current(now).as_deref()) {
        Err(AuthFailure::UnknownKey) if jwks.refresh(verifier, now).await => {
            verifier.verify_with(token, ty, now, jwks.current(now).as_deref())
        }
        other => other,
    }
}

/// A request body on its way upstream: still streaming, or already read by a phase.
enum Pending {
    Incoming(Incoming),
    Read(bytes::Bytes),
}

impl Pending {
    /// The whole body, read once (bounded by the policy's limits) for the phases that need it.
    async fn read(self, limits: &portcullis_policy::Limits) -> Result<bytes::Bytes, Rejection> {
        match self {
            Pending::Read(b) => Ok(b),
            Pending::Incoming(b) => read_body(limits, b).await,
        }
    }
}

/// A refresh token's single use, taken by the authentication phase (its `jti`).
#[derive(Clone, Debug)]
struct RefreshUse(String);

/// The route phase's verdict on a normalised path.
fn lookup(
    policy: &portcullis_policy::Policy,
    method: &http::Method,
    path: &str,
) -> Result<RouteId, Rejection> {
    match policy.inventory.lookup(method, path) {
        Lookup::Found { id, .. } => Ok(id),
        Lookup::MethodNotAllowed { allow } => Err(Rejection::MethodNotAllowed(allow)),
        Lookup::Retired => Err(Rejection::Gone),
        Lookup::NotFound => Err(Rejection::NotFound),
    }
}

/// What is left of the limits a request was counted against, for the `RateLimit-Policy` and
/// `RateLimit` headers (draft-ietf-httpapi-ratelimit-headers) of its answer.
#[derive(Debug, Default)]
struct Headroom {
    /// (rule, quota, window seconds, remaining)
    entries: Vec<(String, u64, u64, u64)>,
}

impl Headroom {
    fn apply(&self, headers: &mut http::HeaderMap) {
        if self.entries.is_empty() {
            return;
        }
        let policy = self
            .entries
            .iter()
            .map(|(r, q, w, _)| format!("\"{r}\";q={q};w={w}"))
            .collect::<Vec<_>>()
            .join(", ");
        let left = self
            .entries
            .iter()
            .map(|(r, _, _, left)| format!("\"{r}\";r={left}"))
            .collect::<Vec<_>>()
            .join(", ");
        for (name, value) in [("ratelimit-policy", policy), ("ratelimit", left)] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(http::HeaderName::from_static(name), v);
            }
        }
    }
}

async fn forward(
    deps: &Deps,
    ctx: &Ctx,
    mut req: Request<Incoming>,
    route: &mut Option<RouteId>,
    headroom: &mut Headroom,
    refresh: &mut Option<RefreshUse>,
) -> Result<Response<Body>, Rejection> {
    let rt = &ctx.runtime;
    let policy = &rt.policy;

    // Route.
    let changed = match path::normalize(req.uri().path()).map_err(Rejection::BadPath)? {
        Cow::Borrowed(p) => {
            *route = Some(lookup(policy, req.method(), p)?);
            None
        }
        Cow::Owned(p) => {
            *route = Some(lookup(policy, req.method(), &p)?);
            Some(p)
        }
    };

    // The client's hop-by-hop fields (and those it names in `Connection`) and the fields an
    // upstream may mistake for the gateway's, out before any phase adds its own: a
    // `Connection: x-auth-subject` cannot take out the claim the gateway forwards.
    forward::strip_hop_by_hop(req.headers_mut());
    forward::strip_untrusted(req.headers_mut());
    let limits = &policy.limits;
    // The declared length, as hyper read it (a map lookup and a parse fewer).
    if http_body::Body::size_hint(req.body())
        .exact()
        .is_some_and(|n| n > limits.max_body_bytes)
    {
        return Err(Rejection::PayloadTooLarge);
    }
    // The phases a policy may leave out (authentication, authorization, limits, quotas, SSRF,
    // login, response reading) are boxed where they are awaited: inline, their state would
    // make every request's future 10.7 KiB, allocated and copied whether or not they run;
    // boxed, it is 3.6 KiB and each phase costs an allocation only when it runs.
    let (mut parts, mut body) = match (&policy.auth, *route) {
        (Some(auth), Some(id)) => Box::pin(authenticate(deps, ctx, auth, id, req)).await?,
        _ => {
            let (p, b) = req.into_parts();
            (p, Pending::Incoming(b))
        }
    };
    *refresh = parts.extensions.remove::<RefreshUse>();
    // Authorize.
    let mut owner_after = Vec::new();
    // The caller's roles, for the per-role view of responses (`None`: every view, or no view
    // in the description).
    let mut viewer: Option<Vec<String>> = None;
    if let (Some(authz), Some(id)) = (&policy.authz, *route) {
        let path_now = changed.as_deref().unwrap_or(parts.uri.path()).to_owned();
        owner_after = Box::pin(authorize(deps, ctx, authz, id, &parts, &path_now)).await?;
        if !owner_after.is_empty() {
            // The owner is read from the answer's body: a conditional or partial request
            // would have the upstream answer without it (a 304 or 412 telling the object
            // exists, a 206 with part of it).
            for h in [
                http::header::IF_NONE_MATCH,
                http::header::IF_MODIFIED_SINCE,
                http::header::IF_MATCH,
                http::header::IF_UNMODIFIED_SINCE,
                http::header::IF_RANGE,
                http::header::RANGE,
            ] {
                parts.headers.remove(h);
            }
        }
        if policy.undeclared_response_fields != ResponseFields::Pass && ctx.runtime.validators.views
        {
            viewer = Some(
                parts
                    .extensions
                    .get::<portcullis_guard::jwt::Verified>()
                    .map(|c| held_roles(c, &authz.roles_claim))
                    .unwrap_or_default(),
            );
        }
    }

    // Limit: rates, concurrency, then quotas (checked here, their uses taken just before
    // forwarding, when no later phase can refuse the request any more).
    let mut quota_uses = Vec::new();
    // Held until the upstream's answer head: the request's places under concurrency limits.
    let mut _permit = None;
    if let Some(id) = *route {
        // A limit keyed on a body field (the account a login names) needs the body first.
        let keyed_on_body = ctx.runtime.rate_limits.keyed_on_body(id);
        let json = if keyed_on_body {
            let bytes = Box::pin(body.read(limits)).await?;
            let json = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
            body = Pending::Read(bytes);
            json
        } else {
            None
        };
        let facts = crate::ratelimit::Facts {
            client: ctx.client,
            claims: parts.extensions.get::<portcullis_guard::jwt::Verified>(),
            headers: &parts.headers,
            body: json.as_ref(),
        };
        // Only routes under a rate rule build (and box) the check's future.
        if ctx.runtime.rate_limits.applies(id)
            && let Some(h) = Box::pin(ctx.runtime.rate_limits.check(
                id,
                &facts,
                &deps.limiter,
                deps.redis.as_deref(),
            ))
            .await?
        {
            headroom
                .entries
                .push((h.rule, u64::from(h.quota), h.window, h.remaining));
        }
        let wants: Vec<(String, u32)> = policy
            .concurrency_limits
            .iter()
            .filter(|c| c.routes.contains(&id))
            .map(|c| {
                let key = crate::ratelimit::key_of(&c.key, &facts);
                (format!("{}|{key}", c.name), c.max)
            })
            .collect();
        if !wants.is_empty() {
            _permit = Some(deps.inflight.acquire(wants).map_err(|_| Rejection::Held {
                reason: "concurrency_limited",
                retry_after: 1,
            })?);
        }
        // Read once, and only for a route under a quota.
        let mut clock = None;
        for q in policy.quotas.iter().filter(|q| q.routes.contains(&id)) {
            let now = *clock.get_or_insert_with(portcullis_guard::jwt::now);
            let key = crate::ratelimit::key_of(&q.key, &facts);
            if let Some(rule) = &q.bursts {
                let now_ms = u64::try_from(now).unwrap_or(0) * 1000;
                let pace_key = format!("{}|{key}", q.name);
                if let crate::ratelimit::Verdict::Flagged { first, retry_after } =
                    deps.bursts.observe(&pace_key, rule, now_ms)
                {
                    if first {
                        deps.metrics.burst_flagged(&q.name);
                        tracing::warn!(target: "portcullis::abuse", request_id = ctx.id.as_str(), rule = %q.name, key = %crate::ratelimit::loggable_key(&key), blocked = rule.block, "burst on a sensitive flow: far above this key's own pace");
                    }
                    if rule.block {
                        return Err(Rejection::Held {
                            reason: "burst_detected",
                            retry_after,
                        });
                    }
                }
            }
            Box::pin(crate::ratelimit::quota::check(
                deps.store.as_ref(),
                q,
                &key,
                now,
            ))
            .await?;
            quota_uses.push((q, key));
        }
    }

    // Password policy, on the routes that set one.
    if let Some(rule) = policy
        .auth
        .as_ref()
        .and_then(|a| a.passwords.iter().find(|p| Some(p.route) == *route))
    {
        let bytes = Box::pin(body.read(limits)).await?;
        portcullis_guard::password::check(rule, &bytes).map_err(Rejection::Unprocessable)?;
        body = Pending::Read(bytes);
    }
    // SSRF: URL fields must not point inside.
    if let (Some(guard), Some(id)) = (&ctx.runtime.ssrf, *route)
        && guard.guards(id)
    {
        let bytes = Box::pin(body.read(limits)).await?;
        Box::pin(guard.check(id, &bytes)).await?;
        body = Pending::Read(bytes);
    }
    // Validate the JSON body against the operation's schema.
    let schema = route.and_then(|id| {
        policy.inventory.routes[id]
            .request_schema
            .as_deref()
            .map(|p| (id, p))
    });
    // Validate the parameters (path, query, headers) the operation declares.
    if let Some(id) = *route
        && let Some(pv) = ctx.runtime.validators.params(
            id,
            &policy.inventory.routes[id].template,
            &policy.inventory.routes[id].parameters,
        )
    {
        let path_now = changed.as_deref().unwrap_or(parts.uri.path());
        let values = path_params(&policy.inventory.routes[id].template, path_now);
        let pairs: Vec<(&str, &str)> = values.iter().map(|(n, v)| (*n, v.as_ref())).collect();
        pv.check(&pairs, parts.uri.query(), &parts.headers)
            .map_err(Rejection::Invalid)?;
    }
    if let Some(validator) = schema.and_then(|(id, p)| ctx.runtime.validators.get(id, p)) {
        let json_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                let essence = ct
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                essence == "application/json"
                    || (essence.starts_with("application/") && essence.ends_with("+json"))
            });
        let bytes = Box::pin(body.read(limits)).await?;
        if !bytes.is_empty() || json_type {
            if !json_type {
                return Err(Rejection::UnsupportedMediaType);
            }
            let value: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|_| Rejection::BadRequest("the body is not valid JSON"))?;
            let max_depth = policy.default_bounds.max_depth;
            if crate::validate::deeper_than(&value, max_depth) {
                return Err(Rejection::Invalid(format!(
                    "`/`: nested deeper than {max_depth} levels"
                )));
            }
            crate::validate::check(&validator, &value).map_err(Rejection::Invalid)?;
        }
        body = Pending::Read(bytes);
    }

    // Proxy. An answer a phase reads (owner checks, response filtering) is asked for without
    // a content coding: gzip bytes would not parse, and the answer would be refused.
    if !owner_after.is_empty()
        || (policy.undeclared_response_fields != ResponseFields::Pass
            && route.is_some_and(|id| !policy.inventory.routes[id].response_schemas.is_empty()))
    {
        parts.headers.remove(http::header::ACCEPT_ENCODING);
    }
    let host = parts.headers.get(HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    // Written as the request goes out, in place of the client's fields of those names.
    let [a, b, c, d, e, f] = forward::forwarding(
        &parts.headers,
        ctx.peer.ip(),
        ctx.client,
        &policy.trusted_proxies,
        ctx.tls,
        host.as_ref(),
        ctx.id.value(),
    );
    // The upstream's own authority as `Host` (the client's, or an HTTP/2 client's
    // `:authority`, only if that could not be a header value).
    let set = [
        (HOST, ctx.runtime.upstream_host.clone().or(host)),
        a,
        b,
        c,
        d,
        e,
        f,
    ];
    // The upstream gets the normalised path; when normalising changed nothing, the original
    // bytes are reused.
    let path_and_query = match (changed, parts.uri.query()) {
        (None, _) => parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
        (Some(p), Some(q)) => format!("{p}?{q}")
            .parse()
            .map_err(|_| Rejection::BadRequest("the request target is malformed"))?,
        (Some(p), None) => p
            .parse()
            .map_err(|_| Rejection::BadRequest("the request target is malformed"))?,
    };
    // Origin-form, as an HTTP/1.1 server expects from a client that is not a proxy.
    parts.uri = Uri::from(path_and_query);
    parts.version = Version::HTTP_11;
    // A login attempt counts from here: each way out below settles it.
    let mut login = None;
    if let Some(rule) = policy
        .auth
        .as_ref()
        .and_then(|a| a.login.as_ref())
        .filter(|l| Some(l.route) == *route)
    {
        let (b, attempt) = Box::pin(login_check(deps, ctx, rule, body)).await?;
        body = b;
        login = Some(attempt);
    }
    let max = usize::try_from(limits.max_body_bytes).unwrap_or(usize::MAX);
    let body = match body {
        Pending::Read(b) => UpBody::Bytes(Some(b)),
        Pending::Incoming(b) if http_body::Body::is_end_stream(&b) => UpBody::Empty,
        Pending::Incoming(b) => UpBody::Stream(Box::pin(Limited::new(
            Deadline::new(
                b,
                tokio::time::Instant::from_std(ctx.start + limits.body_read_timeout),
            ),
            max,
        ))),
    };
    // Quotas: each use is taken before forwarding, atomically, so parallel requests cannot
    // all slip under the limit; a use that must not count (a failure on a success-counted
    // quota, an upstream that never answered) is given back after.
    let mut taken: Vec<(&portcullis_policy::QuotaRule, String, u32)> = Vec::new();
    // Read once, and only for a request under a quota (as when they were checked).
    let mut clock = None;
    for (q, key) in quota_uses {
        let now = *clock.get_or_insert_with(portcullis_guard::jwt::now);
        match Box::pin(crate::ratelimit::quota::take(
            deps.store.as_ref(),
            q,
            &key,
            now,
        ))
        .await
        {
            Ok(used) => taken.push((q, key, used)),
            Err(rej) => {
                Box::pin(give_back_all(deps, &taken)).await;
                if let Some(l) = login {
                    Box::pin(login_settle(deps, ctx, l, None)).await?;
                }
                return Err(rej);
            }
        }
    }
    // A HEAD answer has no body, and a respond-phase rule that reads the body would find
    // none: the owner check would refuse the owner, the filter any answer. The upstream is
    // asked with GET, and the body is dropped on the way out, its length kept (`answer`).
    if parts.method == http::Method::HEAD
        && (!owner_after.is_empty()
            || (policy.undeclared_response_fields != ResponseFields::Pass
                && route
                    .is_some_and(|id| !policy.inventory.routes[id].response_schemas.is_empty())))
    {
        parts.method = http::Method::GET;
    }
    let sent = deps
        .upstream
        .send(
            &policy.upstream.authority,
            limits.upstream_connect_timeout,
            // From now: reading a body for a phase may have taken a while.
            limits.upstream_timeout,
            Request::from_parts(parts, body),
            &set,
            // The answer's map starts as the route's hardened one, or bare for a server that
            // writes the route's fields itself (see `handle`).
            if ctx.bare(*route) {
                Start::Bare(&ctx.runtime.respond_rules(*route).hardening)
            } else {
                Start::Hardened(&ctx.runtime.respond_rules(*route).hardening)
            },
        )
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            Box::pin(give_back_all(deps, &taken)).await;
            if let Some(l) = login {
                Box::pin(login_settle(deps, ctx, l, None)).await?;
            }
            return Err(classify(deps, ctx, &e));
        }
    };

    // Respond (upstream side).
    for (q, key, used) in taken {
        if q.count_success_only && !resp.status().is_success() {
            Box::pin(crate::ratelimit::quota::give_back(
                deps.store.as_ref(),
                q,
                &key,
            ))
            .await;
        } else {
            headroom.entries.push((
                q.name.clone(),
                u64::from(q.limit),
                q.window.as_secs(),
                u64::from(q.limit.saturating_sub(used)),
            ));
        }
    }
    if let Some(l) = login {
        Box::pin(login_settle(deps, ctx, l, Some(resp.status()))).await?;
    }
    let (mut parts, body) = resp.into_parts();
    // (The answer's CORS fields never entered its map: the route's hardening refused them.) A
    // `Connection` field may name any field, the hardening's own among them: they go back
    // (a bare map never had them: they are written from the route's block).
    if forward::strip_hop_by_hop(&mut parts.headers) && !ctx.bare(*route) {
        ctx.runtime
            .respond_rules(*route)
            .hardening
            .apply(&mut parts.headers);
    }
    internal_links_made_relative(&mut parts.headers, &policy.upstream.authority);
    // Ownership found in the response, and undeclared properties: both need the body whole;
    // only routes with such a rule pay for reading it.
    // An answer the owner checks cannot read (a 304 to a conditional request the upstream
    // was not sent, or a 3xx) confirms the object exists: it is refused as another's is.
    if !owner_after.is_empty() && parts.status.is_redirection() {
        return Err(Rejection::NotOwner);
    }
    let owner_check = if parts.status.is_success() {
        owner_after
    } else {
        Vec::new()
    };
    let schema =
        if parts.status.is_success() && policy.undeclared_response_fields != ResponseFields::Pass {
            route.and_then(|id| response_schema(&policy.inventory.routes[id], parts.status))
        } else {
            None
        };
    if !owner_check.is_empty() || schema.is_some() {
        let mut bytes = Box::pin(read_response(body)).await?;
        for (pointer, me) in &owner_check {
            if let Some(kept) = check_owner(ctx, &bytes, pointer, me)? {
                bytes = kept;
            }
        }
        let bytes = match (schema, policy.openapi_doc.as_deref()) {
            (Some(ptr), Some(doc)) => filter_response(
                ctx,
                &bytes,
                doc,
                ptr,
                policy.undeclared_response_fields,
                viewer.as_deref(),
            )?,
            _ => bytes,
        };
        parts.headers.remove(CONTENT_LENGTH);
        return Ok(Response::from_parts(parts, Body::bytes(bytes)));
    }
    if parts.status.is_server_error() && !policy.expose_upstream_errors {
        let snippet = Box::pin(snippet(body)).await;
        tracing::warn!(
            target: "portcullis::upstream",
            request_id = ctx.id.as_str(),
            status = parts.status.as_u16(),
            body = %redact::text(&snippet),
            "upstream server error replaced by a generic problem"
        );
        deps.metrics
            .upstream_errors
            .get_or_create(&crate::metrics::KindLabel { kind: "status_5xx" })
            .inc();
        return Err(Rejection::UpstreamError(parts.status));
    }
    if parts.status.is_client_error() && !policy.expose_upstream_errors {
        return Box::pin(scrub_client_error(ctx, parts, body)).await;
    }
    Ok(Response::from_parts(parts, body))
}

/// Gives back every quota use taken for a request that will not be forwarded after all.
async fn give_back_all(deps: &Deps, taken: &[(&portcullis_policy::QuotaRule, String, u32)]) {
    for (q, key, _) in taken {
        crate::ratelimit::quota::give_back(deps.store.as_ref(), q, key).await;
    }
}

/// The values of a template's whole-segment parameters (`/orders/{order_id}`) in a path,
/// percent-decoded.
fn path_params<'t>(template: &'t str, path: &str) -> Vec<(&'t str, Cow<'static, str>)> {
    template
        .split('/')
        .zip(path.split('/'))
        .filter_map(|(t, p)| {
            let name = t.strip_prefix('{')?.strip_suffix('}')?;
            (!name.contains('{')).then(|| {
                (
                    name,
                    Cow::Owned(
                        percent_encoding::percent_decode_str(p)
                            .decode_utf8_lossy()
                            .into_owned(),
                    ),
                )
            })
        })
        .collect()
}

/// `Vary` as one field naming each header once: the CORS layer adds `origin` beside the
/// upstream's own `Vary` (which may name it too).
fn one_vary(headers: &mut http::HeaderMap) {
    let values = headers.get_all(http::header::VARY);
    if values.iter().nth(1).is_none() {
        return;
    }
    let mut names: Vec<String> = Vec::new();
    for v in values.iter().filter_map(|v| v.to_str().ok()) {
        for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                names.push(name.to_owned());
            }
        }
    }
    if let Ok(v) = HeaderValue::from_str(&names.join(", ")) {
        headers.insert(http::header::VARY, v);
    }
}

fn strip_cors(headers: &mut http::HeaderMap) {
    let names: Vec<http::HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for n in names {
        headers.remove(n);
    }
}

/// Keys that carry debugging detail in error bodies (stack traces, source paths, SQL, driver
/// errors), compared lower-cased and without `_` or `-` (`stack_trace`, `StackTrace` and
/// `stack-trace` alike): Rails, Django, Spring, ASP.NET, Express with mysql and pg drivers.
const DEBUG_KEYS: &[&str] = &[
    "backtrace",
    "stack",
    "stacktrace",
    "trace",
    "traceback",
    "exception",
    "exceptionmessage",
    "exceptiontype",
    "innerexception",
    "debug",
    "location",
    "sourcefile",
    "file",
    "line",
    "sql",
    "sqlmessage",
    "sqlstate",
    "errno",
    "routine",
    "query",
    "internal",
    "cause",
];

/// Whether `key` is one of [`DEBUG_KEYS`], however it is spelled.
fn is_debug_key(key: &str) -> bool {
    let folded: String = key
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    DEBUG_KEYS.contains(&folded.as_str())
}

/// Upstream 4xx answers keep their status and their message, but lose debugging detail: JSON
/// bodies lose the keys above (at any depth), other bodies (HTML error pages) are replaced by a
/// generic problem. Bodies over 64 KiB are replaced too.
async fn scrub_client_error(
    ctx: &Ctx,
    mut parts: http::response::Parts,
    body: Body,
) -> Result<Response<Body>, Rejection> {
    let is_json = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.starts_with("application/json") || ct.starts_with("application/problem+json")
        });
    let collected = tokio::time::timeout(
        Duration::from_secs(5),
        Limited::new(body, 64 * 1024).collect(),
    )
    .await;
    let bytes = match collected {
        Ok(Ok(c)) => c.to_bytes(),
        _ => return Err(Rejection::UpstreamError(parts.status)),
    };
    if bytes.is_empty() {
        return Ok(Response::from_parts(parts, Body::Empty));
    }
    let cleaned = is_json
        .then(|| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .flatten()
        .map(|mut v| {
            let removed = scrub(&mut v);
            (v, removed)
        });
    match cleaned {
        Some((v, removed)) => {
            if removed > 0 {
                tracing::warn!(target: "portcullis::upstream", request_id = ctx.id.as_str(), status = parts.status.as_u16(), removed, "debug detail removed from an upstream error");
            }
            let out = serde_json::to_vec(&v).map_err(|_| Rejection::Internal)?;
            parts.headers.remove(CONTENT_LENGTH);
            Ok(Response::from_parts(parts, Body::bytes(out)))
        }
        None => Err(Rejection::UpstreamError(parts.status)),
    }
}

/// Removes [`DEBUG_KEYS`] everywhere in `v`; returns how many it removed.
fn scrub(v: &mut serde_json::Value) -> usize {
    match v {
        serde_json::Value::Object(map) => {
            let before = map.len();
            map.retain(|k, _| !is_debug_key(k));
            let mut n = before - map.len();
            for child in map.values_mut() {
                n += scrub(child);
            }
            n
        }
        serde_json::Value::Array(items) => items.iter_mut().map(scrub).sum(),
        _ => 0,
    }
}

/// Sorts an upstream request failure into whose fault it was.
fn classify(deps: &Deps, ctx: &Ctx, e: &crate::upstream::UpstreamError) -> Rejection {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return Rejection::PayloadTooLarge;
        }
        if err.is::<crate::body::BodyTimedOut>() {
            return Rejection::RequestTimeout;
        }
        source = err.source();
    }
    if matches!(e, crate::upstream::UpstreamError::Timeout) {
        deps.metrics
            .upstream_errors
            .get_or_create(&crate::metrics::KindLabel { kind: "timeout" })
            .inc();
        return Rejection::UpstreamTimeout;
    }
    let kind = match e {
        _ if e.is_connect() => "connect",
        // An answer refused for its framing: a broken upstream, or one trying to smuggle.
        crate::upstream::UpstreamError::Malformed(_) => "malformed",
        _ => "io",
    };
    deps.metrics
        .upstream_errors
        .get_or_create(&crate::metrics::KindLabel { kind })
        .inc();
    tracing::warn!(target: "portcullis::upstream", request_id = ctx.id.as_str(), kind, error = %e, "upstream request failed");
    Rejection::UpstreamUnavailable
}

/// The first bytes of an upstream error body, for the log; bounded in size and time.
async fn snippet(body: Body) -> String {
    let limited = Limited::new(body, 2048);
    match tokio::time::timeout(Duration::from_secs(1), limited.collect()).await {
        Ok(Ok(c)) => String::from_utf8_lossy(&c.to_bytes()).into_owned(),
        _ => "(body over 2 KiB or slow; not logged)".to_owned(),
    }
}

/// Accept-phase entry: ids, client address, CORS, respond-phase headers, the log line.
pub async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    tls: bool,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    // (Without `h1`, no block: every field is in the map.)
    Ok(answer(shared, peer, tls, false, req).await.0)
}

/// Answers a request; over HTTP/1 (`h1`), an upstream answer comes with its route's hardening
/// fields apart, as header lines (`Hardening::block`) for the server to write after its
/// status line: cloning them into each answer's map and encoding them one by one cost more
/// than the rest of writing the answer's head.
pub async fn answer(
    shared: Arc<Shared>,
    peer: SocketAddr,
    tls: bool,
    h1: bool,
    mut req: Request<Incoming>,
) -> (Response<Body>, Option<bytes::Bytes>) {
    let start = Instant::now();
    let head = req.method() == http::Method::HEAD;
    let runtime = shared.view();
    let id = RequestId::new();
    let client = forward::client_ip(peer.ip(), req.headers(), &runtime.policy.trusted_proxies);
    // Only copied when the access log is on.
    let logged = tracing::enabled!(target: "portcullis::access", tracing::Level::INFO).then(|| {
        (
            req.method().clone(),
            req.uri().path().to_owned(),
            req.uri().query().map(redact::query),
        )
    });
    let ctx = Ctx {
        id: id.clone(),
        start,
        peer,
        client,
        tls,
        h1,
        runtime: runtime.clone(),
        deps: shared.deps.clone(),
    };

    let (mut resp, decision) = match &*runtime.cors {
        Some(svc) => {
            req.extensions_mut().insert(ctx);
            let mut svc = svc.clone();
            let mut resp = match svc.call(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            // No decision: the CORS layer answered a preflight itself.
            let decision = resp
                .extensions()
                .get::<Decision>()
                .copied()
                .unwrap_or(Decision {
                    route: None,
                    reason: "cors_preflight",
                    hardened: false,
                });
            // tower-http adds `Access-Control-Allow-Credentials` whatever the origin; a
            // disallowed origin gets no CORS header at all.
            if !resp
                .headers()
                .contains_key(http::header::ACCESS_CONTROL_ALLOW_ORIGIN)
            {
                strip_cors(resp.headers_mut());
            }
            one_vary(resp.headers_mut());
            (resp, decision)
        }
        None => pipeline(ctx, req).await,
    };

    // Respond (client side): the gateway's own answers get the route's fields now, the
    // upstream's got them when their map was started (and again now when the rules name a
    // field added since).
    let rules = runtime.respond_rules(decision.route);
    // The upstream's answer over HTTP/1 started bare (`Ctx::bare`): its fields are the block.
    let block = (decision.hardened && h1 && !rules.again)
        .then(|| runtime.block(decision.route).cloned())
        .flatten();
    if !decision.hardened || rules.again {
        rules.hardening.apply(resp.headers_mut());
    }
    if let Some(v) = decision
        .route
        .and_then(|r| runtime.policy.inventory.routes[r].version)
        && runtime.policy.inventory.versions[v].status != VersionStatus::Active
    {
        for (n, val) in &runtime.version_headers[v] {
            resp.headers_mut().insert(n.clone(), val.clone());
        }
    }
    resp.headers_mut().insert(X_REQUEST_ID, id.value().clone());
    if head {
        bodiless(&mut resp);
    }

    // Log.
    let elapsed = start.elapsed();
    let route_metrics = decision
        .route
        .map_or(&runtime.unmatched, |r| &runtime.route_metrics[r]);
    let status = resp.status().as_u16();
    route_metrics.record(&shared.deps.metrics, status, decision.reason, elapsed);
    let route = &route_metrics.label;
    if let Some((method, path, query)) = logged {
        tracing::info!(
            target: "portcullis::access",
            request_id = id.as_str(),
            client_ip = %client,
            method = %method,
            path = %path,
            query = query.as_deref().unwrap_or(""),
            route = &**route,
            status,
            decision = Rejection::verdict(decision.reason),
            reason = decision.reason,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
        );
    }
    (resp, block)
}

/// The answer to a HEAD request: no body (a gateway's problem, or a GET's answer read by a
/// respond-phase rule), the length it would have had kept.
fn bodiless(resp: &mut Response<Body>) {
    if let Some(n) = http_body::Body::size_hint(resp.body()).exact()
        && n > 0
        && !resp.headers().contains_key(CONTENT_LENGTH)
    {
        resp.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(n));
    }
    *resp.body_mut() = Body::Empty;
}

/// `Location` and `Content-Location` that name the upstream itself (a framework builds them
/// from the `Host` it was sent, which is the upstream's authority) become relative
/// references: the internal address never reaches a client, and the link still works through
/// the gateway (RFC 9110, 10.2.2 allows a relative `Location`), as nginx's `proxy_redirect
/// default` does.
fn internal_links_made_relative(headers: &mut http::HeaderMap, upstream: &http::uri::Authority) {
    // Most answers carry neither: one pass comparing names is cheaper than two hashed lookups.
    let links =
        |n: &http::HeaderName| n == http::header::LOCATION || n == http::header::CONTENT_LOCATION;
    if !headers.keys().any(links) {
        return;
    }
    for name in [http::header::LOCATION, http::header::CONTENT_LOCATION] {
        let Some(relative) = headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<http::Uri>().ok())
            .filter(|u| {
                u.authority()
                    .is_some_and(|a| a.as_str().eq_ignore_ascii_case(upstream.as_str()))
            })
            .and_then(|u| {
                let path = u.path_and_query().map_or("/", |p| p.as_str());
                HeaderValue::from_str(path).ok()
            })
        else {
            continue;
        };
        headers.insert(name, relative);
    }
}

/// The answer to a request the HTTP/1 server could not read: a problem with a request id of
/// its own and the default response fields, counted as an unmatched request and logged as
/// every request is, with what was wrong (a fixed phrase, never the request's bytes). Its
/// client is the connection's peer: no field of an unread head is believed.
pub fn unreadable(shared: &Shared, peer: SocketAddr, u: crate::h1::Unreadable) -> Response<Body> {
    let runtime = shared.current.runtime.load();
    let id = RequestId::new();
    let rej = Rejection::Unreadable(u.status, u.why);
    let mut resp = from_guard(rej.response(id.as_str()));
    runtime
        .respond_rules(None)
        .hardening
        .apply(resp.headers_mut());
    resp.headers_mut().insert(X_REQUEST_ID, id.value().clone());
    runtime.unmatched.record(
        &shared.deps.metrics,
        u.status.as_u16(),
        rej.reason(),
        Duration::ZERO,
    );
    tracing::info!(
        target: "portcullis::access",
        request_id = id.as_str(),
        client_ip = %peer.ip(),
        route = "-",
        status = u.status.as_u16(),
        decision = "refused",
        reason = rej.reason(),
        why = u.why,
        latency_ms = 0.0,
    );
    resp
}

/// A request's id: 96 random bits as 24 hex digits, kept as the header value it goes out as
/// (upstream, and to the client), and read as text for logs and problems.
#[derive(Clone, Debug)]
pub struct RequestId(HeaderValue);

impl RequestId {
    fn new() -> Self {
        use rand::RngCore;
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut b = [0u8; 12];
        rand::rng().fill_bytes(&mut b);
        let mut out = [0u8; 24];
        for (i, x) in b.iter().enumerate() {
            out[2 * i] = HEX[usize::from(x >> 4)];
            out[2 * i + 1] = HEX[usize::from(x & 15)];
        }
        // Owned by its bytes' own allocation: each copy (upstream, answer, problem) is then a
        // count, where a `Vec`'s bytes would be moved to a shared block at the first copy.
        // (Hex digits are always a valid value.)
        Self(
            HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(out))
                .unwrap_or(HeaderValue::from_static("-")),
        )
    }

    pub fn value(&self) -> &HeaderValue {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or("-")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn debug_keys_are_found_however_spelled() {
        let mut v = serde_json::json!({
            "error": "duplicate entry",
            "sqlMessage": "Duplicate entry 'a@b.c' for key 'users.email'",
            "sqlState": "23000",
            "errno": 1062,
            "details": { "Stack_Trace": "at Db.insert", "ExceptionMessage": "x", "field": "email" }
        });
        assert_eq!(super::scrub(&mut v), 5);
        assert_eq!(
            v,
            serde_json::json!({ "error": "duplicate entry", "details": { "field": "email" } })
        );
    }
}
