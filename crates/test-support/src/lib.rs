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
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
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
