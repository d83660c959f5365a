//! The `portcullis` binary as an operator meets it: `check` exit codes and messages, `serve`
//! as a real process (JSON access log without secrets, reload on SIGHUP and on file change,
//! refusal of a broken policy at start), and `demo`.

#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::Duration;

use portcullis_test_support::reqwest::{Method, StatusCode};
use portcullis_test_support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("portcullis-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn check_accepts_the_example_and_refuses_broken_policies_with_positions() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/shop/portcullis.yaml"
    );
    let (code, err) = check(example);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("ok (21 routes"), "{err}");

    let dir = temp_dir("check");
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "listen: 127.0.0.1:8080\nupstream: http://127.0.0.1:8081\nroutes: [GET /a]\ncors:\n  allow_origins: ['*']\n  allow_credentials: true\nadmin: { listen: 0.0.0.0:9901 }\n").unwrap();
    let (code, err) = check(bad.to_str().unwrap());
    assert_eq!(code, Some(64));
    assert!(
        err.contains("bad.yaml:5:19: error: cors.allow_origins[0]"),
        "{err}"
    );
    assert!(err.contains("bad.yaml:7:18: error: admin.listen"), "{err}");
    assert!(err.contains("2 error(s)"), "{err}");
    // Misspelt keys and wrong-typed values: all of them, not the first alone...
    std::fs::write(&bad, "listen: 127.0.0.1:8080\nupstream: http://127.0.0.1:8081\nlimts: {}\ncors: { allow_origins: [https://a.example], allow_credentials: maybe }\nmode: debug\n").unwrap();
    let (code, err) = check(bad.to_str().unwrap());
    assert_eq!(code, Some(64));
    assert!(
        err.contains("bad.yaml:3:1: error: limts: unknown field"),
        "{err}"
    );
    assert!(
        err.contains(
            "bad.yaml:4:64: error: cors.allow_credentials: expected a boolean, found `maybe`"
        ),
        "{err}"
    );
    // And, with those stepped over, what the loader finds in the rest.
    assert!(
        err.contains("bad.yaml:5:7: error: mode: `debug` is not"),
        "{err}"
    );
    assert!(
        err.contains("error: routes: no routes are declared"),
        "{err}"
    );
    assert!(err.contains("4 error(s)"), "{err}");
    let (code, err) = check("/nonexistent/p.yaml");
    assert_eq!(code, Some(64));
    assert!(
        err.contains("/nonexistent/p.yaml: error: cannot read the policy file"),
        "{err}"
    );
    // A request schema the gateway could not compile (a look-ahead pattern) would leave its
    // route unchecked: `check` refuses it as `serve` does.
    std::fs::write(
        dir.join("api.yaml"),
        "openapi: 3.1.0\ninfo: { title: t, version: '1' }\npaths:\n  /a:\n    post:\n      requestBody:\n        content:\n          application/json:\n            schema: { type: object, properties: { p: { type: string, pattern: '^(?=x)' } } }\n      responses: { '201': { description: ok } }\n",
    )
    .unwrap();
    let uncompiled = dir.join("uncompiled.yaml");
    std::fs::write(
        &uncompiled,
        format!(
            "listen: 127.0.0.1:8080\nupstream: http://127.0.0.1:8081\nopenapi: {}\n",
            dir.join("api.yaml").display()
        ),
    )
    .unwrap();
    let (code, err) = check(uncompiled.to_str().unwrap());
    assert_eq!(code, Some(64));
    assert!(
        err.contains("uncompiled.yaml: error: openapi: POST /a: the request schema"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The status of a GET of `path` from the gateway at `base`.
async fn status(base: &str, path: &str) -> StatusCode {
    client()
        .get(format!("{base}{path}"))
        .send()
        .await
        .unwrap()
        .status()
}

/// A policy for `up` forwarding `routes`, with its state in memory.
fn routes_policy(up: &Recorder, routes: &str) -> String {
    format!(
        "listen: 127.0.0.1:0\nupstream: http://{}\nstate: {{ backend: memory }}\nroutes: [{routes}]\n",
        up.addr
    )
}

/// `portcullis check -c policy`: its exit code and what it wrote to stderr.
fn check(policy: &str) -> (Option<i32>, String) {
    let out = std::process::Command::new(BIN)
        .args(["check", "-c", policy])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn serve(policy: &std::path::Path) -> Served {
    Served::start(BIN, policy).await
}

#[tokio::test]
async fn serve_logs_one_json_line_per_request_and_never_a_secret() {
    let shop = Shop::secure().await;
    let dir = temp_dir("log");
    let policy = dir.join("p.yaml");
    std::fs::write(&policy, shop_policy(shop.addr, "")).unwrap();
    let mut served = serve(&policy).await;
    let c = client();
    let password = "correct-horse-9f8e7d6c";
    let r = send(
        &c,
        Method::POST,
        &format!("{}/v2/auth/register", served.base),
        None,
        Some(serde_json::json!({"email": "logme@example.com", "password": password, "name": "L"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = send(
        &c,
        Method::POST,
        &format!("{}/v2/auth/login", served.base),
        None,
        Some(serde_json::json!({"email": "logme@example.com", "password": password})),
    )
    .await;
    let token = r.json()["access_token"].as_str().unwrap().to_owned();
    let r = c
        .get(format!(
            "{}/v2/users/me?access_token=query-secret-123&api_key=key-secret-456",
            served.base
        ))
        .bearer_auth(&token)
        .header("cookie", "session=cookie-secret-789")
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    served.wait_for_log("/v2/users/me").await;
    // A request the server cannot read is logged too: a smuggling attempt is seen.
    let addr = served.base.trim_start_matches("http://").to_owned();
    let mut raw = tokio::net::TcpStream::connect(&addr).await.unwrap();
    raw.write_all(b"POST /v2/auth/login HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nCookie: session=smuggled-secret-321\r\n\r\n0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut answer)).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    served
        .wait_for_log("both Content-Length and Transfer-Encoding")
        .await;
    let log = served.log();
    for secret in [
        password,
        token.as_str(),
        "query-secret-123",
        "key-secret-456",
        "cookie-secret-789",
        "smuggled-secret-321",
        "Bearer",
    ] {
        assert!(!log.contains(secret), "`{secret}` is in the log:\n{log}");
    }
    let access: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "portcullis::access")
        .collect();
    assert_eq!(access.len(), 4, "one line per request:\n{log}");
    let me = access.iter().find(|v| v["path"] == "/v2/users/me").unwrap();
    assert_eq!(me["route"], "/v2/users/me");
    assert_eq!(me["query"], "access_token=REDACTED&api_key=REDACTED");
    assert_eq!(me["status"], 200, "{me}");
    assert_eq!(
        (&me["decision"], &me["reason"]),
        (&"allowed".into(), &"allowed".into())
    );
    for field in ["request_id", "client_ip", "latency_ms"] {
        assert!(me.get(field).is_some(), "{field} missing: {me}");
    }
    let smuggled = access.iter().find(|v| v["status"] == 400).unwrap();
    assert_eq!(smuggled["decision"], "refused", "{smuggled}");
    assert_eq!(smuggled["reason"], "bad_request", "{smuggled}");
    assert_eq!(smuggled["client_ip"], "127.0.0.1", "{smuggled}");
    assert!(
        smuggled["request_id"]
            .as_str()
            .is_some_and(|id| id.len() == 24),
        "{smuggled}"
    );
    served.child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(unix)]
#[tokio::test]
async fn serve_reloads_on_sighup_and_on_file_change() {
    let up = Recorder::start().await;
    let dir = temp_dir("reload");
    let policy = dir.join("p.yaml");
    let text = |routes: &str| {
        format!(
            "listen: 127.0.0.1:0\nupstream: http://{}\nroutes: [{routes}]\n",
            up.addr
        )
    };
    std::fs::write(&policy, text("GET /a")).unwrap();
    let mut served = serve(&policy).await;
    assert_eq!(status(&served.base, "/b").await, StatusCode::NOT_FOUND);
    // A file change alone triggers the reload.
    std::fs::write(&policy, text("GET /a, GET /b")).unwrap();
    served.wait_for_log("policy reloaded").await;
    assert_eq!(status(&served.base, "/b").await, StatusCode::OK);
    // A broken file is refused and logged; the running policy stays.
    std::fs::write(&policy, "listen: [oops\n").unwrap();
    served.wait_for_log("policy refused").await;
    assert_eq!(status(&served.base, "/b").await, StatusCode::OK);
    // Each problem of a refused file is logged with its place.
    std::fs::write(
        &policy,
        format!(
            "{}limts: {{}}\nmode: debug\n",
            text("GET /a, GET /b, GET /x")
        ),
    )
    .unwrap();
    served.wait_for_log("limts: unknown field").await;
    let log = served.log();
    assert!(
        log.contains("p.yaml:4:1: error: limts: unknown field"),
        "{log}"
    );
    assert!(
        log.contains("p.yaml:5:7: error: mode: `debug` is not"),
        "{log}"
    );
    assert_eq!(
        status(&served.base, "/x").await,
        StatusCode::NOT_FOUND,
        "the old policy stays"
    );
    // SIGHUP after fixing the file.
    std::fs::write(&policy, text("GET /a, GET /b, GET /c")).unwrap();
    let pid = served.child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    for _ in 0..100 {
        if status(&served.base, "/c").await == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status(&served.base, "/c").await, StatusCode::OK);
    served.child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Hot reload follows the files the policy is built from (here its OpenAPI description), and
/// nothing else in their directory: a log or a database beside the policy, written on every
/// request, must not recompile the policy each time.
#[cfg(unix)]
#[tokio::test]
async fn serve_reloads_when_a_source_changes_and_not_for_other_files_beside_it() {
    let up = Recorder::start().await;
    let dir = temp_dir("sources");
    let spec = |paths: &[&str]| {
        let ops: String = paths
            .iter()
            .map(|p| {
                format!(
                    "  {p}:\n    get:\n      responses:\n        '200': {{ description: ok }}\n"
                )
            })
            .collect();
        format!("openapi: 3.1.0\ninfo: {{ title: t, version: '1' }}\npaths:\n{ops}")
    };
    std::fs::write(dir.join("spec.yaml"), spec(&["/a"])).unwrap();
    let policy = dir.join("p.yaml");
    std::fs::write(
        &policy,
        format!(
            "listen: 127.0.0.1:0\nupstream: http://{}\nopenapi: spec.yaml\nstate: {{ backend: memory }}\n",
            up.addr
        ),
    )
    .unwrap();
    let served = serve(&policy).await;
    assert_eq!(status(&served.base, "/a").await, StatusCode::OK);
    assert_eq!(status(&served.base, "/b").await, StatusCode::NOT_FOUND);
    for i in 0..5 {
        std::fs::write(dir.join("access.log"), format!("line {i}\n")).unwrap();
        std::fs::write(dir.join("shop.db"), [i; 16]).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Past a look and its settling time: a reload would have been logged by now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !served.log().contains("policy reloaded"),
        "other files triggered a reload:\n{}",
        served.log()
    );
    std::fs::write(dir.join("spec.yaml"), spec(&["/a", "/b"])).unwrap();
    served.wait_for_log("policy reloaded").await;
    assert_eq!(status(&served.base, "/b").await, StatusCode::OK);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A policy reached through a symlink beside it (`p.yaml -> p.prod.yaml`) reloads when the
/// file it leads to is edited in place.
#[cfg(unix)]
#[tokio::test]
async fn serve_reloads_when_a_symlinked_policy_is_edited_in_place() {
    use std::io::Write;
    let up = Recorder::start().await;
    let dir = temp_dir("symlinked");
    let text = |routes: &str| routes_policy(&up, routes);
    std::fs::write(dir.join("p.prod.yaml"), text("GET /a")).unwrap();
    std::os::unix::fs::symlink("p.prod.yaml", dir.join("p.yaml")).unwrap();
    let served = serve(&dir.join("p.yaml")).await;
    assert_eq!(status(&served.base, "/b").await, StatusCode::NOT_FOUND);
    // In place: the same file, truncated and written again.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(dir.join("p.prod.yaml"))
        .unwrap();
    f.write_all(text("GET /a, GET /b").as_bytes()).unwrap();
    drop(f);
    served.wait_for_log("policy reloaded").await;
    assert_eq!(status(&served.base, "/b").await, StatusCode::OK);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An upstream's 5xx page reaches the client as a generic problem; the log keeps what it
/// said, for the operator, with its credentials and secret values masked.
#[tokio::test]
async fn an_upstream_error_page_is_logged_redacted_and_never_shown() {
    let up = canned_upstream(
        Duration::ZERO,
        b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\ncontent-length: 118\r\n\r\n\
          Traceback: db down at orders.py:42 {\"password\": \"upstream-pw-5150\"} \
          Authorization: Bearer upstream-bearer-6161 ok!!!!!",
    )
    .await;
    let dir = temp_dir("upstream-5xx");
    let policy = dir.join("p.yaml");
    std::fs::write(
        &policy,
        format!("listen: 127.0.0.1:0\nupstream: http://{up}\nroutes: [GET /a]\n"),
    )
    .unwrap();
    let served = serve(&policy).await;
    let r = send(
        &client(),
        Method::GET,
        &format!("{}/a", served.base),
        None,
        None,
    )
    .await;
    // The status stays the upstream's; the body is the gateway's.
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.text);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    for leak in [
        "Traceback",
        "orders.py",
        "upstream-pw-5150",
        "upstream-bearer-6161",
    ] {
        assert!(
            !r.text.contains(leak),
            "{leak} reached the client: {}",
            r.text
        );
    }
    let id = r.json()["request_id"].as_str().unwrap().to_owned();
    served.wait_for_log("upstream server error replaced").await;
    let log = served.log();
    let line = log
        .lines()
        .find(|l| l.contains("upstream server error replaced"))
        .unwrap();
    assert!(line.contains(&id), "the line names the request: {line}");
    assert!(
        line.contains("orders.py:42"),
        "the operator sees what failed: {line}"
    );
    for secret in ["upstream-pw-5150", "upstream-bearer-6161"] {
        assert!(!log.contains(secret), "{secret} is in the log:\n{log}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The admin token named by an environment variable guards `/metrics`; without the
/// variable `serve` refuses to start and names it.
#[tokio::test]
async fn serve_takes_the_admin_token_from_the_environment() {
    let up = Recorder::start().await;
    let dir = temp_dir("admin-env");
    let policy = dir.join("p.yaml");
    std::fs::write(
        &policy,
        format!(
            "listen: 127.0.0.1:0\nupstream: http://{}\nroutes: [GET /a]\nadmin: {{ listen: 127.0.0.1:0, token_env: PORTCULLIS_TEST_ADMIN_TOKEN }}\n",
            up.addr
        ),
    )
    .unwrap();
    let token = "an-admin-token-from-the-environment";
    let served =
        Served::start_with_env(BIN, &policy, &[("PORTCULLIS_TEST_ADMIN_TOKEN", token)]).await;
    let metrics = format!("{}/metrics", served.admin.clone().unwrap());
    let c = client();
    let r = send(&c, Method::GET, &metrics, None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = send(&c, Method::GET, &metrics, Some("not-the-token"), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = send(&c, Method::GET, &metrics, Some(token), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.text.contains("portcullis_request_duration_seconds"),
        "{}",
        r.text
    );
    assert!(!served.log().contains(token), "{}", served.log());
    drop(served);
    let out = std::process::Command::new(BIN)
        .args(["serve", "-c", policy.to_str().unwrap()])
        .env_remove("PORTCULLIS_TEST_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PORTCULLIS_TEST_ADMIN_TOKEN"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serve_refuses_a_broken_policy_before_binding() {
    let dir = temp_dir("refuse");
    let policy = dir.join("p.yaml");
    std::fs::write(&policy, "listen: 127.0.0.1:0\nupstream: http://127.0.0.1:1\nroutes: [GET /]\nlimits: { max_body_bytes: lots }\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "-c", policy.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("p.yaml:4:27: error: limits.max_body_bytes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn demo_shows_an_attack_passing_direct_and_stopped_by_the_gateway() {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (gw_port, shop_port) = (free(), free());
    let mut child = Command::new(BIN)
        .args([
            "demo",
            "--port",
            &gw_port.to_string(),
            "--shop-port",
            &shop_port.to_string(),
        ])
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("Ctrl-C stops both") {
                return;
            }
        }
        panic!("the demo exited");
    })
    .await
    .unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let c = client();
    let q = "/v2/products/search?q=%27";
    let direct = send(
        &c,
        Method::GET,
        &format!("http://127.0.0.1:{shop_port}{q}"),
        None,
        None,
    )
    .await;
    assert!(direct.text.contains("backtrace"), "the demo shop leaks");
    let via = send(
        &c,
        Method::GET,
        &format!("http://127.0.0.1:{gw_port}{q}"),
        None,
        None,
    )
    .await;
    assert_eq!(via.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!via.text.contains("backtrace") && !via.text.contains("SELECT"));
    // The tour's token step: a refresh token passes the shop, not the gateway.
    let shop_url = format!("http://127.0.0.1:{shop_port}");
    let reg = send(&c, Method::POST, &format!("{shop_url}/v2/auth/register"), None, Some(serde_json::json!({ "email": "tour@example.com", "password": "a long tour passphrase", "name": "Tour" }))).await;
    assert_eq!(reg.status, StatusCode::CREATED);
    let login = send(&c, Method::POST, &format!("{shop_url}/v2/auth/login"), None, Some(serde_json::json!({ "email": "tour@example.com", "password": "a long tour passphrase" }))).await.json();
    let refresh = login["refresh_token"].as_str().unwrap();
    assert_eq!(
        send(
            &c,
            Method::GET,
            &format!("{shop_url}/v2/users/me"),
            Some(refresh),
            None
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(
        send(
            &c,
            Method::GET,
            &format!("http://127.0.0.1:{gw_port}/v2/users/me"),
            Some(refresh),
            None
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    let access = login["access_token"].as_str().unwrap();
    assert_eq!(
        send(
            &c,
            Method::GET,
            &format!("http://127.0.0.1:{gw_port}/v2/users/me"),
            Some(access),
            None
        )
        .await
        .status,
        StatusCode::OK
    );
    let gw_url = format!("http://127.0.0.1:{gw_port}");
    // The tour's CORS step: the shop reflects any origin, the gateway grants it nothing.
    let from_evil = |base: &str| {
        c.get(format!("{base}/v2/products"))
            .header("origin", "https://evil.example")
            .send()
    };
    let direct = from_evil(&shop_url).await.unwrap();
    assert_eq!(
        direct.headers()["access-control-allow-origin"],
        "https://evil.example"
    );
    let via = from_evil(&gw_url).await.unwrap();
    assert!(
        !via.headers()
            .keys()
            .any(|k| k.as_str().starts_with("access-control-")),
        "{:?}",
        via.headers()
    );
    // The headers step: banners and no hardening at the shop; the reverse through the gateway.
    let direct = c.head(format!("{shop_url}/healthz")).send().await.unwrap();
    assert!(direct.headers().get("server").is_some());
    assert!(direct.headers().get("x-content-type-options").is_none());
    let via = c.head(format!("{gw_url}/healthz")).send().await.unwrap();
    assert!(via.headers().get("server").is_none(), "{:?}", via.headers());
    assert_eq!(via.headers()["x-content-type-options"], "nosniff");
    // The inventory step: a path trick and an undeclared method go nowhere.
    let trick = raw_status(gw_port, "GET /v2/products/..;/admin/users HTTP/1.1").await;
    assert!(matches!(trick, 400 | 404), "{trick}");
    let put = c.put(format!("{gw_url}/v2/products")).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(put.headers().get("allow").is_some());
    // The deprecated v1: said so on every answer, a refusal included.
    let v1 = c
        .head(format!("{gw_url}/v1/orders/ord_AAAAAAAAAAAAAAAAAAAA"))
        .send()
        .await
        .unwrap();
    for field in ["deprecation", "sunset", "link"] {
        assert!(
            v1.headers().get(field).is_some(),
            "{field}: {:?}",
            v1.headers()
        );
    }
    child.kill().await.unwrap();
}

/// The status of a request sent as written (`--path-as-is`: no client tidies its path).
async fn raw_status(port: u16, request_line: &str) -> u16 {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("{request_line}\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer)
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// A revocation acknowledged by the admin API survives `kill -9` right after the answer.
#[tokio::test]
async fn revocations_survive_a_crash() {
    let up = Recorder::start().await;
    let dir = temp_dir("crash");
    let key = dir.join("jwt.key");
    std::fs::write(&key, JWT_SECRET).unwrap();
    let admin_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let policy = dir.join("p.yaml");
    std::fs::write(
        &policy,
        format!(
            "listen: 127.0.0.1:0\nupstream: http://{}\nroutes: [GET /api/items]\nstate: {{ backend: embedded, path: {} }}\nadmin: {{ listen: 127.0.0.1:{admin_port}, token: admin-token-for-tests-0001 }}\nauth:\n  jwt:\n    keys: [{{ alg: HS256, secret_file: {} }}]\n",
            up.addr,
            dir.join("state").display(),
            key.display()
        ),
    )
    .unwrap();
    let now = now();
    let token = sign_hs256(
        JWT_SECRET,
        &serde_json::json!({ "sub": "usr_k", "iat": now, "exp": now + 600, "jti": "jti-crash", "type": "access" }),
    );
    let c = client();
    let mut served = serve(&policy).await;
    assert_eq!(
        send(
            &c,
            Method::GET,
            &format!("{}/api/items", served.base),
            Some(&token),
            None
        )
        .await
        .status,
        StatusCode::OK
    );
    let r = send(
        &c,
        Method::POST,
        &format!("http://127.0.0.1:{admin_port}/revocations"),
        Some("admin-token-for-tests-0001"),
        Some(serde_json::json!({ "jti": "jti-crash", "exp": now + 600 })),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // SIGKILL: no shutdown, no flush.
    served.child.start_kill().unwrap();
    served.child.wait().await.unwrap();
    let mut served = serve(&policy).await;
    assert_eq!(
        send(
            &c,
            Method::GET,
            &format!("{}/api/items", served.base),
            Some(&token),
            None
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    served.child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn token_mints_what_the_gateway_accepts_and_prints_public_jwks() {
    let up = Recorder::start().await;
    let dir = temp_dir("token");
    let key = dir.join("jwt.key");
    // A key file as editors and `base64` write it: with a trailing newline.
    std::fs::write(&key, [JWT_SECRET, b"\n"].concat()).unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "token",
            "mint",
            "--alg",
            "HS256",
            "--secret-file",
            key.to_str().unwrap(),
            "--sub",
            "usr_cli",
            "--claim",
            "type=access",
            "--claim",
            "roles=[\"admin\"]",
            "--ttl",
            "5m",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let claims = claims_of(&token);
    assert_eq!(claims["sub"], "usr_cli");
    assert_eq!(claims["roles"][0], "admin");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300
    );
    let gw = Gw::start(&format!(
        "listen: 127.0.0.1:0\nupstream: http://{}\nroutes: [GET /api/items]\nstate: {{ backend: memory }}\nauth:\n  jwt:\n    keys: [{{ alg: HS256, secret_file: {} }}]\n",
        up.addr,
        key.display()
    ))
    .await;
    assert_eq!(
        send(
            &client(),
            Method::GET,
            &gw.url("/api/items"),
            Some(&token),
            None
        )
        .await
        .status,
        StatusCode::OK
    );

    {
        let rsa =
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                .unwrap();
        let pem = dir.join("rsa.pem");
        std::fs::write(&pem, rsa.serialize_pem()).unwrap();
        let out = std::process::Command::new(BIN)
            .args([
                "token",
                "jwks",
                "--alg",
                "RS256",
                "--key-file",
                pem.to_str().unwrap(),
                "--kid",
                "k1",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let jwks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let k = &jwks["keys"][0];
        assert_eq!(
            (k["kty"].as_str(), k["kid"].as_str(), k["alg"].as_str()),
            (Some("RSA"), Some("k1"), Some("RS256"))
        );
        assert!(
            k.get("n").is_some() && k.get("d").is_none(),
            "public parts only: {k}"
        );
    }
    let out = std::process::Command::new(BIN)
        .args(["token", "mint", "--alg", "none", "--sub", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--alg none: not one of"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn lint_exit_codes_formats_and_explanations() {
    let spec = shop_spec();
    let run = |args: &[&str]| {
        std::process::Command::new(BIN)
            .arg("lint")
            .args(args)
            .output()
            .unwrap()
    };
    let clean = run(&[spec.to_str().unwrap()]);
    assert_eq!(
        clean.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&clean.stdout)
    );
    let dir = temp_dir("lint");
    let weak = dir.join("weak.yaml");
    std::fs::write(
        &weak,
        "openapi: 3.1.0\ninfo: { title: t, version: \"1\" }\npaths:\n  /orders/{id}:\n    get:\n      parameters:\n        - { name: id, in: path, required: true, schema: { type: integer } }\n      responses: { \"200\": { description: ok } }\n",
    )
    .unwrap();
    let out = run(&[weak.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("weak.yaml:7:19: medium[authz-sequential-id]"),
        "{text}"
    );
    // Below the threshold: exit 0.
    assert_eq!(
        run(&[weak.to_str().unwrap(), "--fail-on", "critical"])
            .status
            .code(),
        Some(0)
    );
    let sarif = run(&[weak.to_str().unwrap(), "--format", "sarif"]);
    let v: serde_json::Value = serde_json::from_slice(&sarif.stdout).unwrap();
    let hit = v["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ruleId"] == "authz-sequential-id")
        .unwrap();
    assert_eq!(
        hit["locations"][0]["physicalLocation"]["region"]["startLine"],
        7
    );
    let junit = run(&[weak.to_str().unwrap(), "--format", "junit"]);
    assert!(String::from_utf8_lossy(&junit.stdout).contains("<testsuites"));
    // A rule switched off in a config file.
    let config = dir.join("lint.yaml");
    std::fs::write(
        &config,
        "disable: [authz-sequential-id, auth-no-security]\n",
    )
    .unwrap();
    assert_eq!(
        run(&[weak.to_str().unwrap(), "--config", config.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    std::fs::write(&config, "disable: [no-such-rule]\n").unwrap();
    assert_eq!(
        run(&[weak.to_str().unwrap(), "--config", config.to_str().unwrap()])
            .status
            .code(),
        Some(2)
    );
    // Errors: exit 2, also for input read only in part, whatever the threshold.
    assert_eq!(run(&["/nonexistent/api.yaml"]).status.code(), Some(2));
    let swagger = dir.join("swagger.yaml");
    std::fs::write(
        &swagger,
        "swagger: \"2.0\"\ninfo: { title: t, version: \"1\" }\npaths: {}\n",
    )
    .unwrap();
    let partial = dir.join("partial.yaml");
    std::fs::write(
        &partial,
        "openapi: 3.1.0\ninfo: { title: t, version: \"1\" }\npaths: {}\ncomponents:\n  schemas:\n    A: { $ref: '/dev/zero' }\n",
    )
    .unwrap();
    for input in [&swagger, &partial] {
        assert_eq!(
            run(&[input.to_str().unwrap(), "--fail-on", "critical"])
                .status
                .code(),
            Some(2),
            "{}",
            input.display()
        );
    }
    let explain = run(&["--explain", "property-open-request-object"]);
    assert_eq!(explain.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&explain.stdout).contains("additionalProperties"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn scan_from_the_command_line() {
    let shop = Shop::with(&[portcullis_shop::Vuln::CorsWildcard]).await;
    let c = client();
    let (a, b) = (
        register(&shop, &c, "alice").await,
        register(&shop, &c, "bob").await,
    );
    let dir = temp_dir("scan");
    let ids = dir.join("identities.yaml");
    std::fs::write(
        &ids,
        format!(
            "identities:\n  - name: alice\n    login: {{ path: /v2/auth/login, body: {{ email: {}, password: \"{PASSWORD}\" }}, token: /access_token }}\n  - name: bob\n    login: {{ path: /v2/auth/login, body: {{ email: {}, password: \"{PASSWORD}\" }}, token: /access_token }}\n",
            a.email, b.email
        ),
    )
    .unwrap();
    let seeds = dir.join("seeds.yaml");
    std::fs::write(&seeds, "product_id: prod_K3y8Qm2LpX\n").unwrap();
    let sarif = dir.join("scan.sarif");
    let scan = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args([
            "scan",
            "--quiet",
            "--target",
            &shop.base,
            "--identities",
            ids.to_str().unwrap(),
        ])
        .args(["--seeds", seeds.to_str().unwrap(), "--probes", "misconfig"])
        .args(extra);
        cmd
    };
    // The description fetched from the running API itself.
    let spec_url = shop.url("/openapi.json");
    let out = tokio::task::spawn_blocking({
        let mut cmd = scan(&[
            "--spec",
            &spec_url,
            "--format",
            "sarif",
            "-o",
            sarif.to_str().unwrap(),
        ]);
        move || cmd.output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&sarif).unwrap()).unwrap();
    assert!(
        v["runs"][0]["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["ruleId"] == "cors-permissive"),
        "{v}"
    );
    // The summary still reaches the terminal, without secrets.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cors-permissive") || err.contains("CORS"),
        "{err}"
    );
    assert!(!err.contains(PASSWORD) && !err.contains("eyJ"), "{err}");
    // Above the threshold only: exit 0.
    let spec = shop_spec();
    let out = tokio::task::spawn_blocking({
        let mut cmd = scan(&[
            "--spec",
            spec.to_str().unwrap(),
            "--fail-on",
            "critical",
            "--format",
            "json",
        ]);
        move || cmd.output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A remote target: refused, exit 2.
    let out = std::process::Command::new(BIN)
        .args([
            "scan",
            "--quiet",
            "--target",
            "http://192.0.2.1/",
            "--spec",
            spec.to_str().unwrap(),
        ])
        .args(["--identities", ids.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

/// CPU time (user + system, clock ticks) of process `pid` so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields 14 and 15, counted after the command name's closing parenthesis.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// A client that sends its body slowly costs the gateway nothing while it waits: the body
/// and the connection do not wake each other in a loop (they did, for a moment of this
/// server's history: a whole core while any upload trickled in).
#[tokio::test]
async fn a_slow_upload_costs_no_cpu_while_it_waits() {
    let up = Recorder::start().await;
    let dir = temp_dir("slow-upload");
    let policy = dir.join("p.yaml");
    std::fs::write(
        &policy,
        format!(
            "listen: 127.0.0.1:0\nupstream: http://{}\nroutes: [POST /api/items]\nlimits: {{ workers: 1, body_read_timeout: 10s }}\n",
            up.addr
        ),
    )
    .unwrap();
    let served = serve(&policy).await;
    let pid = served.child.id().unwrap();
    let mut s = tokio::net::TcpStream::connect(served.base.trim_start_matches("http://"))
        .await
        .unwrap();
    s.write_all(b"POST /api/items HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\na")
        .await
        .unwrap();
    // Long enough for the request to reach the upstream's send, waiting on the body.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let before = cpu_ticks(pid);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let spent = cpu_ticks(pid) - before;
    let hz = 100; // USER_HZ on Linux
    assert!(
        spent * 1000 / hz < 200,
        "{spent} ticks in 2 s of waiting for a body"
    );
    s.write_all(b"bcd").await.unwrap();
    let mut answer = vec![0u8; 12];
    s.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Kubernetes ConfigMap mount: `p.yaml` is a symlink through `..data`, and an update swaps
/// `..data` to a new directory by rename: the path is the same, the file it leads to another.
#[cfg(unix)]
#[tokio::test]
async fn serve_reloads_when_a_mounted_config_map_is_swapped() {
    use std::os::unix::fs::symlink;
    let up = Recorder::start().await;
    let dir = temp_dir("configmap");
    let text = |routes: &str| routes_policy(&up, routes);
    std::fs::create_dir_all(dir.join("..2026_11_30_1")).unwrap();
    std::fs::write(dir.join("..2026_11_30_1/p.yaml"), text("GET /a")).unwrap();
    symlink("..2026_11_30_1", dir.join("..data")).unwrap();
    symlink("..data/p.yaml", dir.join("p.yaml")).unwrap();
    let served = serve(&dir.join("p.yaml")).await;
    assert_eq!(status(&served.base, "/b").await, StatusCode::NOT_FOUND);
    std::fs::create_dir_all(dir.join("..2026_11_30_2")).unwrap();
    std::fs::write(dir.join("..2026_11_30_2/p.yaml"), text("GET /a, GET /b")).unwrap();
    symlink("..2026_11_30_2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    served.wait_for_log("policy reloaded").await;
    assert_eq!(status(&served.base, "/b").await, StatusCode::OK);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A copy that keeps the modification time (`rsync -a`, `cp -p`) of a policy of the same
/// size, renamed into place: size and modification time read as before; the file is another
/// one (its inode and change time), and is reloaded.
#[cfg(unix)]
#[tokio::test]
async fn serve_reloads_a_same_size_copy_that_keeps_the_modification_time() {
    let up = Recorder::start().await;
    let dir = temp_dir("same-mtime");
    let text = |routes: &str| routes_policy(&up, routes);
    let policy = dir.join("p.yaml");
    std::fs::write(&policy, text("GET /a, GET /x")).unwrap();
    let modified = std::fs::metadata(&policy).unwrap().modified().unwrap();
    let served = serve(&policy).await;
    assert_eq!(status(&served.base, "/b").await, StatusCode::NOT_FOUND);
    let copy = dir.join(".p.yaml.tmp");
    std::fs::write(&copy, text("GET /a, GET /b")).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&copy)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    std::fs::rename(&copy, &policy).unwrap();
    let meta = std::fs::metadata(&policy).unwrap();
    assert_eq!(meta.modified().unwrap(), modified);
    assert_eq!(meta.len() as usize, text("GET /a, GET /x").len());
    served.wait_for_log("policy reloaded").await;
    assert_eq!(status(&served.base, "/b").await, StatusCode::OK);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The CPUs in a `Cpus_allowed_list` line of `/proc/.../status` (`0-3,6`).
#[cfg(target_os = "linux")]
fn cpus_allowed(status_path: &str) -> Vec<usize> {
    let status = std::fs::read_to_string(status_path).unwrap();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim();
    let mut cpus = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

/// What each worker thread of a gateway started with `limits` may run on, and each thread
/// of the workers' blocking pools (started by the upstream's name lookups).
#[cfg(target_os = "linux")]
async fn worker_cpus(limits: &str) -> (Vec<Vec<usize>>, Vec<Vec<usize>>) {
    let up = Recorder::start().await;
    let dir = temp_dir(&format!("pin-{}", limits.len()));
    let policy = dir.join("p.yaml");
    std::fs::write(
        &policy,
        format!(
            "listen: 127.0.0.1:0\nupstream: http://localhost:{}\nroutes: [GET /a]\nstate: {{ backend: memory }}\nlimits: {limits}\n",
            up.addr.port()
        ),
    )
    .unwrap();
    let served = serve(&policy).await;
    // Connections of their own, so that each worker is likely to open an upstream one.
    for _ in 0..8 {
        let c = portcullis_test_support::reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let r = c.get(format!("{}/a", served.base)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let pid = served.child.id().unwrap();
    let (mut workers, mut helpers) = (Vec::new(), Vec::new());
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        // Thread names are cut to 15 bytes: `portcullis-worker-0` reads `portcullis-work`,
        // `portcullis-blocking-0` (a worker's blocking pool) `portcullis-bloc`.
        let comm = std::fs::read_to_string(task.join("comm")).unwrap();
        let cpus = || cpus_allowed(task.join("status").to_str().unwrap());
        match comm.trim() {
            "portcullis-work" => workers.push(cpus()),
            "portcullis-bloc" => helpers.push(cpus()),
            _ => {}
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    (workers, helpers)
}

/// With one worker per CPU the process may use, each worker is bound to its own CPU;
/// `pin_workers: false`, or fewer workers than CPUs, leaves them all where the scheduler
/// likes. (The gateway inherits this test's affinity, so "the CPUs it may use" are ours.)
#[cfg(target_os = "linux")]
#[tokio::test]
async fn workers_are_bound_one_per_cpu_unless_told_not_to() {
    let ours = cpus_allowed("/proc/self/status");
    let n = ours.len();
    let (mut bound, helpers) = worker_cpus(&format!("{{ workers: {n} }}")).await;
    assert_eq!(bound.len(), n);
    if n < 2 {
        // One CPU: nothing to choose, nothing bound.
        assert_eq!(bound, vec![ours.clone()]);
        return;
    }
    assert!(bound.iter().all(|cpus| cpus.len() == 1), "{bound:?}");
    bound.sort();
    assert_eq!(bound.concat(), ours, "one worker on each CPU");
    // A worker's helper threads are not held to its CPU.
    assert!(
        !helpers.is_empty(),
        "no name lookup ran on a blocking thread"
    );
    assert_eq!(helpers, vec![ours.clone(); helpers.len()]);

    let (free, _) = worker_cpus(&format!("{{ workers: {n}, pin_workers: false }}")).await;
    assert_eq!(free, vec![ours.clone(); n]);
    let (fewer, _) = worker_cpus(&format!("{{ workers: {} }}", n - 1)).await;
    assert_eq!(fewer, vec![ours.clone(); n - 1]);
}
