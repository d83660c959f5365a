//! `portcullis demo`: the shop with every weakness on, the gateway in front of it with the
//! shipped example policy, both on loopback, and a tour of attacks that pass straight to the
//! shop and are stopped by the gateway.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use portcullis_shop::{AppState, ShopConfig, VulnSet};

const POLICY: &str = include_str!("../../../examples/shop/portcullis.yaml");
const SPEC: &str = include_str!("../../../examples/shop/openapi.yaml");

pub(crate) async fn run(port: u16, shop_port: u16) -> ExitCode {
    let dir = std::env::temp_dir().join(format!("portcullis-demo-{}", std::process::id()));
    let policy_path = dir.join("portcullis.yaml");
    let policy_text = POLICY
        .replace(
            "listen: 127.0.0.1:8080",
            &format!("listen: 127.0.0.1:{port}"),
        )
        .replace(
            "upstream: http://127.0.0.1:8081",
            &format!("upstream: http://127.0.0.1:{shop_port}"),
        )
        .replace("token_env: PORTCULLIS_ADMIN_TOKEN\n", "")
        .replace("listen: 127.0.0.1:9901", "listen: 127.0.0.1:0");
    // The shop signs RS256 (its `jwt-key-confusion` weakness needs an RSA key) and the gateway
    // verifies with the key set the shop publishes, pinned to RS256. (With the shop's
    // dictionary-word HMAC key, `jwt-weak-secret`, the gateway would refuse to start, as it
    // should: that weakness stays off.)
    let policy_text = format!(
        "{policy_text}\nstate: {{ backend: memory }}\nauth:\n  jwt:\n    jwks: {{ url: http://127.0.0.1:{shop_port}/.well-known/jwks.json, algs: [RS256] }}\n    require: [exp, iat, sub, jti]\n    token_type: {{ claim: type, value: access }}\n  refresh: {{ route: POST /v2/auth/refresh, token_pointer: /refresh_token }}\n  login: {{ route: POST /v2/auth/login, account_pointer: /email }}\n  passwords:\n    - {{ route: POST /v2/auth/register, pointer: /password, account_pointer: /email }}\n"
    );
    if let Err(e) = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&policy_path, policy_text))
        .and_then(|()| std::fs::write(dir.join("openapi.yaml"), SPEC))
    {
        eprintln!(
            "portcullis demo: cannot write the demo policy to {}: {e}",
            dir.display()
        );
        return ExitCode::from(70);
    }
    let admin_password = format!("demo-{}", std::process::id() as u64 * 7919);
    let mut vulns = VulnSet::all();
    vulns = VulnSet::only(
        &vulns
            .iter()
            .filter(|v| *v != portcullis_shop::Vuln::JwtWeakSecret)
            .collect::<Vec<_>>(),
    );
    let config = ShopConfig {
        vulns,
        admin_password: format!("{admin_password}-password"),
        ..ShopConfig::default()
    };
    let state = match AppState::new(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("portcullis demo: the shop cannot start: {e}");
            return ExitCode::from(70);
        }
    };
    let shop_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, shop_port));
    let listener = match tokio::net::TcpListener::bind(shop_addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "portcullis demo: cannot listen on {shop_addr} for the shop: {e} (use --shop-port)"
            );
            return ExitCode::from(69);
        }
    };
    let (stop_shop, shop_stopped) = tokio::sync::oneshot::channel::<()>();
    let shop = tokio::spawn(portcullis_shop::serve(listener, state, async {
        let _ = shop_stopped.await;
    }));
    let loaded = match portcullis_policy::load(&policy_path) {
        Ok(l) => l,
        Err(p) => {
            eprint!("{p}");
            return ExitCode::from(70);
        }
    };
    let gateway = match portcullis_gateway::Gateway::start(loaded.policy).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("portcullis demo: {e} (use --port)");
            return ExitCode::from(69);
        }
    };
    eprintln!(
        "{}",
        tour(shop_port, gateway.addr.port(), gateway.admin_addr)
    );
    crate::terminated().await;
    gateway.stop().await;
    let _ = stop_shop.send(());
    let _ = shop.await;
    let _ = std::fs::remove_dir_all(&dir);
    ExitCode::SUCCESS
}

fn tour(shop: u16, gw: u16, admin: Option<SocketAddr>) -> String {
    let admin = admin
        .map(|a| format!("curl -s http://{a}/metrics | grep portcullis_requests"))
        .unwrap_or_default();
    format!(
        r#"
Portcullis demo
  shop (every weakness on): http://127.0.0.1:{shop}
  gateway in front of it:   http://127.0.0.1:{gw}
Each pair below sends the same request to the shop, then through the gateway.

1. Stack traces and SQL in errors (API8): the shop leaks, the gateway answers a generic problem.
   curl -s "http://127.0.0.1:{shop}/v2/products/search?q=%27" | head -c 300; echo
   curl -s "http://127.0.0.1:{gw}/v2/products/search?q=%27"; echo

2. Any origin may read responses with credentials (API8): CORS reflection, then none.
   curl -si -H 'Origin: https://evil.example' http://127.0.0.1:{shop}/v2/products | grep -i access-control
   curl -si -H 'Origin: https://evil.example' http://127.0.0.1:{gw}/v2/products | grep -i access-control

3. Banners and missing security headers (API8).
   curl -sI http://127.0.0.1:{shop}/healthz
   curl -sI http://127.0.0.1:{gw}/healthz

4. Undeclared routes and path tricks (API9): only the described operations pass.
   curl -si --path-as-is "http://127.0.0.1:{gw}/v2/products/..;/admin/users" | head -1
   curl -si -X PUT http://127.0.0.1:{gw}/v2/products | head -1

5. A refresh token used as an access token (API2): the shop takes it, the gateway does not.
   curl -s -XPOST http://127.0.0.1:{shop}/v2/auth/register -H 'content-type: application/json' -d '{{"email":"tour@example.com","password":"a long tour passphrase","name":"Tour"}}'; echo
   R=$(curl -s -XPOST http://127.0.0.1:{shop}/v2/auth/login -H 'content-type: application/json' -d '{{"email":"tour@example.com","password":"a long tour passphrase"}}' | sed 's/.*"refresh_token":"\([^"]*\)".*/\1/')
   curl -s -o /dev/null -w '%{{http_code}}\n' -H "Authorization: Bearer $R" http://127.0.0.1:{shop}/v2/users/me
   curl -s -o /dev/null -w '%{{http_code}}\n' -H "Authorization: Bearer $R" http://127.0.0.1:{gw}/v2/users/me

6. The deprecated v1 (API9): the gateway says so (Deprecation, Sunset, Link).
   curl -sI http://127.0.0.1:{gw}/v1/orders/ord_AAAAAAAAAAAAAAAAAAAA

7. Metrics: {admin}

Ctrl-C stops both.
"#
    )
}
