//! Loopback test harness shared by every integration test: start the shop with chosen
//! weaknesses on an ephemeral port, log identities in, forge tokens, run a canary listener,
//! and talk HTTP. Everything here binds and connects to 127.0.0.0/8 only.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // test code: a failed set-up should panic

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_shop::{AppState, ShopConfig, Vuln, VulnSet};
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub use reqwest;
pub use serde_json;

pub const ADMIN_EMAIL: &str = "admin@shop.example";
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";
/// The signing secret of test shops (the secure default draws a random one per process).
pub const JWT_SECRET: &[u8] = b"test-only signing key, 32 bytes!";
/// The password every test user gets.
pub const PASSWORD: &str = "a long and unguessable passphrase";

/// A shop running in this process on a loopback port; stopped when dropped.
#[derive(Debug)]
pub struct Shop {
    pub addr: SocketAddr,
    pub base: String,
    pub config: ShopConfig,
    stop: Option<oneshot::Sender<()>>,
}

impl Shop {
    /// The shop with exactly these weaknesses switched on.
    pub async fn with(vulns: &[Vuln]) -> Shop {
        Self::start(test_config(VulnSet::only(vulns))).await
    }

    /// The secure default.
    pub async fn secure() -> Shop {
        Self::with(&[]).await
    }

    pub async fn start(config: ShopConfig) -> Shop {
        let state = AppState::new(config.clone())
            .await
            .expect("shop state builds");
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(portcullis_shop::serve(listener, state, async {
            let _ = stopped.await;
        }));
        Shop {
            addr,
            base: format!("http://{addr}"),
            config,
            stop: Some(stop),
        }
    }

    /// The key the shop signs tokens with (the weak word under `jwt-weak-secret`).
    pub fn signing_secret(&self) -> Vec<u8> {
        if self.config.vulns.has(Vuln::JwtWeakSecret) {
            portcullis_shop::config::WEAK_JWT_SECRET.as_bytes().to_vec()
        } else {
            self.config
                .jwt_secret
                .clone()
                .expect("test shops have a known secret")
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Shop {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The configuration tests use: production defaults, with known secrets.
pub fn test_config(vulns: VulnSet) -> ShopConfig {
    ShopConfig {
        vulns,
        jwt_secret: Some(JWT_SECRET.to_vec()),
        admin_email: ADMIN_EMAIL.into(),
        admin_password: ADMIN_PASSWORD.into(),
        ..ShopConfig::default()
    }
}

/// An HTTP client for loopback: no proxy, no redirects, a short timeout.
pub fn client() -> reqwest::Client {
    builder().build().unwrap()
}

/// A client whose connections leave from `ip` (any 127.0.0.x works on Linux).
pub fn client_from(ip: IpAddr) -> reqwest::Client {
    builder().local_address(ip).build().unwrap()
}

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends a request with an optional bearer token and JSON body.
pub async fn send(
    c: &reqwest::Client,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Reply {
    let mut req = c.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("request to {url} failed: {e}"));
    let (status, headers) = (resp.status(), resp.headers().clone());
    let text = resp.text().await.unwrap();
    Reply {
        status,
        headers,
        text,
    }
}

/// A logged-in user.
#[derive(Clone, Debug)]
pub struct Identity {
    pub id: String,
    pub email: String,
    pub access: String,
    pub refresh: String,
}

/// Registers `name` (a unique email is derived from it) and logs in.
pub async fn register(shop: &Shop, c: &reqwest::Client, name: &str) -> Identity {
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    let email = format!("{name}.{}@example.com", SEQ.fetch_add(1, Ordering::Relaxed));
    let r = send(
        c,
        Method::POST,
        &shop.url("/v2/auth/register"),
        None,
        Some(json!({ "email": email, "password": PASSWORD, "name": name })),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "register {name}: {}", r.text);
    login(shop, c, &email, PASSWORD).await
}

/// Logs in and panics unless it works.
pub async fn login(shop: &Shop, c: &reqwest::Client, email: &str, password: &str) -> Identity {
    let r = send(
        c,
        Method::POST,
        &shop.url("/v2/auth/login"),
        None,
        Some(json!({ "email": email, "password": password })),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "login {email}: {}", r.text);
    let j = r.json();
    let access = j["access_token"].as_str().unwrap().to_owned();
    let id = claims_of(&access)["sub"].as_str().unwrap().to_owned();
    Identity {
        id,
        email: email.into(),
        access,
        refresh: j["refresh_token"].as_str().unwrap().to_owned(),
    }
}

/// The administrator, logged in.
pub async fn admin(shop: &Shop, c: &reqwest::Client) -> Identity {
    login(shop, c, ADMIN_EMAIL, ADMIN_PASSWORD).await
}

/// Decodes a JWT's payload without verifying it.
pub fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// An unsigned token (`alg` as given, empty signature) carrying `claims`.
pub fn forge_unsigned(alg: &str, claims: &Value) -> String {
    let h = URL_SAFE_NO_PAD.encode(json!({ "alg": alg, "typ": "JWT" }).to_string());
    let p = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{h}.{p}.")
}

/// An HS256 token signed with `secret`.
pub fn sign_hs256(secret: &[u8], claims: &Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &key,
    )
    .unwrap()
}

/// Finds the HMAC secret of `token` in `words`: the offline dictionary attack.
pub fn crack_hs256(token: &str, words: &[&str]) -> Option<String> {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    words.iter().find_map(|w| {
        let key = jsonwebtoken::DecodingKey::from_secret(w.as_bytes()).ok()?;
        jsonwebtoken::decode::<Value>(token, &key, &validation)
            .ok()
            .map(|_| w.to_string())
    })
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A loopback HTTP listener that counts the requests it gets: the target of SSRF tests.
#[derive(Debug)]
pub struct Canary {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
}

/// Serves `app` on `addr` (loopback) until the returned sender is dropped or fired.
async fn serve_app(
    addr: impl tokio::net::ToSocketAddrs,
    app: axum::Router,
) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    (addr, stop)
}

/// Serves `app` on an ephemeral loopback port for the rest of the test: an ad-hoc upstream.
pub async fn serve_router(app: axum::Router) -> SocketAddr {
    let (addr, stop) = serve_app((Ipv4Addr::LOCALHOST, 0), app).await;
    // Never fired: the server lives as long as the test's runtime.
    std::mem::forget(stop);
    addr
}

/// What the canary answers: something no public image host would say.
pub const CANARY_BODY: &str = "internal-metadata: iam-role-credentials";

impl Canary {
    pub async fn start() -> Canary {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().fallback(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                (
                    [(axum::http::header::CONTENT_TYPE, "image/png")],
                    CANARY_BODY,
                )
            }
        });
        let (addr, stop) = serve_app((Ipv4Addr::LOCALHOST, 0), app).await;
        Canary {
            addr,
            hits,
            stop: Some(stop),
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The shop's OpenAPI description on disk.
pub fn shop_spec() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop/openapi.yaml")
}

/// A policy for a gateway on an ephemeral loopback port in front of `upstream`, with the
/// shop's description as inventory, plus `extra` YAML.
pub fn shop_policy(upstream: SocketAddr, extra: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nupstream: http://{upstream}\nopenapi: {}\n{extra}",
        shop_spec().display()
    )
}

/// A gateway running in this process; its policy file lives in a temporary folder.
#[derive(Debug)]
pub struct Gw {
    pub gateway: Option<portcullis_gateway::Gateway>,
    pub base: String,
    pub admin: Option<String>,
    pub dir: std::path::PathBuf,
    pub policy_path: std::path::PathBuf,
}

impl Gw {
    /// Writes `policy` and starts a gateway on it; panics if it does not load.
    pub async fn start(policy: &str) -> Gw {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "portcullis-gw-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let policy_path = dir.join("portcullis.yaml");
        std::fs::write(&policy_path, policy).unwrap();
        let loaded = portcullis_policy::load(&policy_path)
            .unwrap_or_else(|p| panic!("test policy refused:\n{p}"));
        let gateway = portcullis_gateway::Gateway::start(loaded.policy)
            .await
            .unwrap();
        Gw {
            base: format!("http://{}", gateway.addr),
            admin: gateway.admin_addr.map(|a| format!("http://{a}")),
            gateway: Some(gateway),
            dir,
            policy_path,
        }
    }

    /// The gateway in front of `shop` with the shop's description and `extra` policy.
    pub async fn in_front_of(shop: &Shop, extra: &str) -> Gw {
        Gw::start(&shop_policy(shop.addr, extra)).await
    }

    /// The gateway in front of `shop` verifying the shop's own tokens (HS256 with the test key,
    /// the shop's claims required, state in memory), with `auth_rules` added under `auth:`
    /// (indented by two spaces) and `extra` at the top level.
    pub async fn verifying_shop_tokens(shop: &Shop, auth_rules: &str, extra: &str) -> Gw {
        let secret = String::from_utf8(JWT_SECRET.to_vec()).unwrap();
        let policy = format!(
            "state: {{ backend: memory }}\nauth:\n  jwt:\n    keys: [{{ alg: HS256, secret: \"{secret}\" }}]\n    require: [exp, iat, sub, jti]\n    token_type: {{ claim: type, value: access }}\n{auth_rules}{extra}"
        );
        Gw::in_front_of(shop, &policy).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn gateway(&self) -> &portcullis_gateway::Gateway {
        self.gateway.as_ref().unwrap()
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(g) = self.gateway.take() {
            let _ = g.shutdown_handle().send(true);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A request as an upstream saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as received.
    pub target: String,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

/// A loopback upstream that records every request. It answers `200 {"ok":true}` with version
/// banners, except under `/fail/{status}`, where it answers that status with a verbose error
/// body (a stack trace, a source path, SQL text and a password) the way careless frameworks do.
#[derive(Debug)]
pub struct Recorder {
    pub addr: SocketAddr,
    seen: Arc<std::sync::Mutex<Vec<Recorded>>>,
    stop: Option<oneshot::Sender<()>>,
}

/// What a failing recorder route puts in its body: none of it may reach a client.
pub const LEAKY_ERROR: &str = "Traceback (most recent call last): File \"/srv/app/views.py\", line 42; SELECT * FROM users WHERE password = 'hunter2'";

impl Recorder {
    pub async fn start() -> Recorder {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    pub async fn start_on(addr: SocketAddr) -> Recorder {
        let seen: Arc<std::sync::Mutex<Vec<Recorded>>> = Arc::default();
        let log = seen.clone();
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let log = log.clone();
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, 16 << 20).await.map(|b| b.to_vec()).unwrap_or_default();
                let target = parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default();
                log.lock().unwrap().push(Recorded { method: parts.method.to_string(), target: target.clone(), headers: parts.headers, body });
                use axum::response::IntoResponse;
                let banners = [("server", "Werkzeug/2.0.1 Python/3.8.10"), ("x-powered-by", "Express 4.17.1")];
                if let Some(code) = target.strip_prefix("/fail/").and_then(|r| r.get(..3)).and_then(|c| c.parse::<u16>().ok()) {
                    let status = axum::http::StatusCode::from_u16(code).unwrap();
                    if target.contains("json") {
                        let body = json!({ "error": "bad input", "stack": LEAKY_ERROR, "debug": { "sql": "SELECT 1" } });
                        return (status, banners, [("content-type", "application/json")], body.to_string()).into_response();
                    }
                    return (status, banners, [("content-type", "text/html")], LEAKY_ERROR).into_response();
                }
                (banners, [("content-type", "application/json"), ("access-control-allow-origin", "*")], "{\"ok\":true}").into_response()
            }
        });
        let (addr, stop) = serve_app(addr, app).await;
        Recorder {
            addr,
            seen,
            stop: Some(stop),
        }
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A real `redis-server` on a loopback port, owned by the test: it can be killed and started
/// again on the same port. Needs `redis-server` on the PATH (`apt-get install -y
/// redis-server`; `.ci/run` installs it).
#[derive(Debug)]
pub struct RedisServer {
    child: Option<std::process::Child>,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        Self::start_on(port)
    }

    /// Starts on `port`, without persistence, and waits until it answers `PING`.
    pub fn start_on(port: u16) -> RedisServer {
        Self::spawn(port, &[])
    }

    /// A free loopback port below 55535 (a Cluster node also listens on port + 10000).
    pub fn free_port() -> u16 {
        loop {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .unwrap();
            if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
                return port;
            }
        }
    }

    /// Three empty Cluster masters sharing the slots, created with `redis-cli --cluster`.
    pub fn start_cluster(dir: &std::path::Path) -> Vec<RedisServer> {
        std::fs::create_dir_all(dir).unwrap();
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                let port = Self::free_port();
                let conf = dir.join(format!("nodes-{port}.conf"));
                Self::spawn(
                    port,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        conf.to_str().unwrap(),
                        "--cluster-node-timeout",
                        "2000",
                        "--dir",
                        dir.to_str().unwrap(),
                    ],
                )
            })
            .collect();
        let mut args = vec!["--cluster".to_owned(), "create".to_owned()];
        args.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"].map(String::from));
        let out = std::process::Command::new("redis-cli")
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while nodes.iter().any(|n| {
            let out = std::process::Command::new("redis-cli")
                .args(["-p", &n.port.to_string(), "cluster", "info"])
                .output()
                .unwrap();
            !String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok")
        }) {
            assert!(
                std::time::Instant::now() < deadline,
                "the cluster never became ok"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        nodes
    }

    /// A Sentinel watching the master on `master_port` under the name `mymaster`.
    pub fn start_sentinel(master_port: u16, dir: &std::path::Path) -> RedisServer {
        Self::sentinel(master_port, dir, "")
    }

    /// A server that asks for `password` (`requirepass`; [`RedisServer::url`] does not carry it).
    pub fn start_with_password(password: &str) -> RedisServer {
        Self::spawn(Self::free_port(), &["--requirepass", password])
    }

    /// A Sentinel that asks for `password` itself and gives it to the master it watches.
    pub fn start_sentinel_with_password(
        master_port: u16,
        dir: &std::path::Path,
        password: &str,
    ) -> RedisServer {
        Self::sentinel(
            master_port,
            dir,
            &format!("requirepass {password}\nsentinel auth-pass mymaster {password}\n"),
        )
    }

    fn sentinel(master_port: u16, dir: &std::path::Path, more: &str) -> RedisServer {
        std::fs::create_dir_all(dir).unwrap();
        let port = Self::free_port();
        let conf = dir.join(format!("sentinel-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {master_port} 1\nsentinel down-after-milliseconds mymaster 2000\n{more}"
            ),
        )
        .unwrap();
        Self::spawn_args(port, &[conf.to_str().unwrap(), "--sentinel"])
    }

    fn spawn(port: u16, extra: &[&str]) -> RedisServer {
        let port_s = port.to_string();
        let mut args = vec![
            "--port",
            &port_s,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--loglevel",
            "warning",
        ];
        args.extend_from_slice(extra);
        Self::spawn_args(port, &args)
    }

    fn spawn_args(port: u16, args: &[&str]) -> RedisServer {
        let child = std::process::Command::new("redis-server")
            .args(args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install it with `apt-get install -y redis-server`")
            });
        let server = RedisServer {
            child: Some(child),
            port,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if server.ping() {
                return server;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not answer on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        // A server with a password answers `-NOAUTH ...`: up all the same.
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok()
            && s.read_exact(&mut buf).is_ok()
            && (&buf == b"+PONG\r\n" || buf.starts_with(b"-NOAUTH"))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it to go.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `portcullis serve` process whose stderr (the JSON log) is collected.
#[derive(Debug)]
pub struct Served {
    pub child: tokio::process::Child,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    pub base: String,
    /// The admin listener, when the policy has one.
    pub admin: Option<String>,
}

impl Served {
    /// Starts `bin serve -c policy` and waits for it to listen.
    pub async fn start(bin: &str, policy: &std::path::Path) -> Served {
        Self::start_with_env(bin, policy, &[]).await
    }

    /// Starts `bin serve -c policy` with `env` set, and waits for it to listen.
    pub async fn start_with_env(
        bin: &str,
        policy: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Served {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let mut child = tokio::process::Command::new(bin)
            .args(["serve", "-c", policy.to_str().unwrap()])
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let log: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sink = log.clone();
        tokio::spawn(async move {
            let mut tx = Some(tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(tx) = tx.take_if(|_| line.contains("gateway listening")) {
                    let v: Value = serde_json::from_str(&line).unwrap();
                    let listen = v["listen"].as_str().unwrap().to_owned();
                    // `admin` is logged as `Some(127.0.0.1:port)` or `None`.
                    let admin = v["admin"]
                        .as_str()
                        .and_then(|a| a.strip_prefix("Some(")?.strip_suffix(')'))
                        .map(|a| format!("http://{a}"));
                    let _ = tx.send((listen, admin));
                }
                sink.lock().unwrap().push(line);
            }
        });
        let started = tokio::time::timeout(Duration::from_secs(20), rx).await;
        let Ok(Ok((addr, admin))) = started else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            panic!(
                "the gateway did not start:\n{}",
                log.lock().unwrap().join("\n")
            );
        };
        Served {
            child,
            log,
            base: format!("http://{addr}"),
            admin,
        }
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits up to 5 s for `needle` to be logged.
    pub async fn wait_for_log(&self, needle: &str) {
        for _ in 0..100 {
            if self.log().contains(needle) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("`{needle}` never logged:\n{}", self.log());
    }
}

/// Reads one HTTP/1 response (head and `Content-Length` body) from `s`; `None` if the server
/// closed first.
pub async fn read_response<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    // Whatever follows would belong to the next response: callers never pipeline past it.
    assert_eq!(buf.len(), head_end + len, "bytes past the response");
    Some(head)
}

/// An upstream that answers each request (a GET, in one read) with `reply`, after `delay`.
pub async fn canned_upstream(delay: Duration, reply: &'static [u8]) -> std::net::SocketAddr {
    let slow = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = slow.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = slow.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(1..) = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await {
                    tokio::time::sleep(delay).await;
                    if tokio::io::AsyncWriteExt::write_all(&mut s, reply)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}
