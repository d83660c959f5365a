//! Loading real policy files: the shipped example, and broken ones whose every problem must be
//! reported with its position and key.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use http::Method;
use portcullis_policy::{Lookup, Mode, Problems, Severity, VersionStatus, load, load_str};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop/portcullis.yaml")
}

#[test]
fn the_shop_example_loads() {
    let loaded = load(&example()).unwrap_or_else(|p| panic!("{p}"));
    // The one warning: this example has no `auth`, so the description's admin roles cannot
    // be enforced (`portcullis-auth.yaml` enforces them).
    let warnings: Vec<String> = loaded.warnings.0.iter().map(|w| w.to_string()).collect();
    assert_eq!(warnings.len(), 1, "{}", loaded.warnings);
    assert!(
        warnings[0].contains("x-portcullis-roles"),
        "{}",
        warnings[0]
    );
    let p = loaded.policy;
    assert_eq!(p.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(p.upstream.authority.as_str(), "127.0.0.1:8081");
    assert_eq!(p.mode, Mode::Production);
    assert_eq!(p.inventory.len(), portcullis_shop_routes());
    assert!(matches!(
        p.inventory.lookup(&Method::GET, "/v2/orders/ord_x"),
        Lookup::Found { .. }
    ));
    assert_eq!(p.inventory.versions[0].status, VersionStatus::Deprecated);
    assert_eq!(p.limits.max_body_bytes, 64 * 1024);
    let cors = p.cors.unwrap();
    assert!(cors.allow_credentials);
    assert_eq!(cors.allow_origins, ["https://shop.example"]);
}

/// The number of operations in the shop's description.
fn portcullis_shop_routes() -> usize {
    21
}

fn problems(text: &str) -> Problems {
    load_str(Path::new("/etc/portcullis/bad.yaml"), text).expect_err("the policy must be refused")
}

#[test]
fn every_problem_is_reported_with_position_and_key() {
    let text = "\
listen: 0.0.0.0:80x
upstream: https://api.internal:8443/base
mode: development
routes:
  - GET /ok
  - FETCH /nope
  - GET no-slash
cors:
  allow_origins: ['*']
  allow_credentials: true
admin:
  listen: 10.0.0.5:9901
trusted_proxies: [10.0.0.0/33]
limits:
  header_read_timeout: 10 minutes
  pin_workers: sometimes
versions:
  - { prefix: /v1, status: sunsetting }
";
    let p = problems(text);
    let rendered = p.to_string();
    let expect = [
        ("bad.yaml:1:9: error: listen: `0.0.0.0:80x` is not an address"),
        ("bad.yaml:2:11: error: upstream: `https://api.internal:8443/base` must be an http:// URL"),
        ("bad.yaml:6:5: error: routes[1]: `FETCH` is not an HTTP method"),
        ("bad.yaml:7:5: error: routes[2]: `no-slash` is not a path"),
        ("bad.yaml:9:19: error: cors.allow_origins[0]: `*` with `allow_credentials: true`"),
        ("bad.yaml:12:11: error: admin.listen: an admin listener beyond loopback needs a token"),
        ("bad.yaml:13:19: error: trusted_proxies[0]: `10.0.0.0/33`"),
        ("bad.yaml:15:24: error: limits.header_read_timeout: `10 minutes` is not a duration"),
        ("bad.yaml:16:16: error: limits.pin_workers: must be true or false"),
        ("bad.yaml:18:28: error: versions[0].status: `sunsetting`"),
    ];
    for e in expect {
        assert!(rendered.contains(e), "missing `{e}` in:\n{rendered}");
    }
    let lines: Vec<u64> = p.iter().filter_map(|x| x.pos.map(|p| p.line)).collect();
    assert!(
        lines.windows(2).all(|w| w[0] <= w[1]),
        "problems come in file order: {lines:?}"
    );
    assert!(p.iter().all(|x| x.severity == Severity::Error));
}

#[test]
fn unknown_keys_and_wrong_types_are_refused_with_a_position() {
    let p = problems(
        "listen: 127.0.0.1:8080\nupstream: http://127.0.0.1:1\nroutes: [GET /]\nlimts: {}\n",
    );
    let s = p.to_string();
    assert!(
        s.contains("bad.yaml:4:1: error:") && s.contains("limts"),
        "{s}"
    );
    let p = problems("listen: 127.0.0.1:8080\nupstream: http://127.0.0.1:1\nroutes: GET /\n");
    assert!(p.to_string().contains("bad.yaml:3:"), "{p}");
    let p = problems("listen: [\n");
    assert!(p.to_string().contains("bad.yaml:"), "{p}");
    let p =
        problems("listen: 127.0.0.1:8080\nupstream: http://127.0.0.1:1\nroutes: [GET /a/{id}]\n");
    let s = p.to_string();
    assert!(
        s.contains("bad.yaml:3:") && !s.contains("error: error:") && !s.contains(": line 3"),
        "{s}"
    );
}

/// The shipped examples, and `every-key.yaml`, which has every key the schema knows.
fn shape_fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    vec![
        root.join("../../examples/shop/portcullis.yaml"),
        root.join("../../examples/shop/portcullis-auth.yaml"),
        root.join("tests/every-key.yaml"),
    ]
}

/// `every-key.yaml` keeps up with the schema, so the test below reaches every key.
#[test]
fn every_key_of_the_schema_is_in_the_shape_fixture() {
    use std::collections::BTreeSet;
    fn schema_keys(
        schema: &serde_json::Value,
        n: &serde_json::Value,
        at: &str,
        out: &mut BTreeSet<String>,
    ) {
        if let Some(target) = n.get("$ref").and_then(|r| r.as_str()) {
            let target = schema.pointer(target.trim_start_matches('#')).unwrap();
            schema_keys(schema, target, at, out);
        }
        for group in ["allOf", "oneOf", "anyOf"] {
            for sub in n
                .get(group)
                .and_then(|g| g.as_array())
                .into_iter()
                .flatten()
            {
                schema_keys(schema, sub, at, out);
            }
        }
        if let Some(props) = n.get("properties").and_then(|p| p.as_object()) {
            for (k, v) in props {
                let here = child(at, k);
                out.insert(here.clone());
                schema_keys(schema, v, &here, out);
            }
        }
        if let Some(items) = n.get("items") {
            schema_keys(schema, items, &format!("{at}[]"), out);
        }
    }
    fn doc_keys(v: &serde_json::Value, at: &str, out: &mut BTreeSet<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let here = child(at, k);
                    out.insert(here.clone());
                    doc_keys(v, &here, out);
                }
            }
            serde_json::Value::Array(items) => {
                for v in items {
                    doc_keys(v, &format!("{at}[]"), out);
                }
            }
            _ => {}
        }
    }
    /// `at.key`, or `key` at the top.
    fn child(at: &str, key: &str) -> String {
        if at.is_empty() {
            key.to_owned()
        } else {
            format!("{at}.{key}")
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("schemas/portcullis.schema.json")).unwrap(),
    )
    .unwrap();
    let mut wanted = BTreeSet::new();
    schema_keys(&schema, &schema, "", &mut wanted);
    let fixture: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(shape_fixtures().pop().unwrap()).unwrap())
            .unwrap();
    let mut have = BTreeSet::new();
    doc_keys(&fixture, "", &mut have);
    let missing: Vec<&String> = wanted.difference(&have).collect();
    assert!(wanted.len() > 150, "{wanted:?}");
    assert!(missing.is_empty(), "every-key.yaml lacks {missing:?}");
}

/// The typed read stops at its first problem; the rest of a file's misspelt keys and
/// wrong-typed values come from the shipped schema, each at its own line and key, and with
/// them blanked out the rest of the file is checked as usual: every problem at once.
#[test]
fn every_misspelt_key_and_wrong_typed_value_is_reported_at_once() {
    let text = "\
listen: 0.0.0.0:80x
upstream: http://127.0.0.1:1
timeouts: { header_read: 5s }
mode: debug
routes: [GET /a, FETCH /b]
limits:
  workers: two
  max_connections: -5
  header_timeout: 5s
  idle_timeout: 5 minutes
cors:
  allow_origins: [https://a.example]
  allow_credentials: maybe
  allow_methods:
    - GET
versions:
- prefix: /v1
  status: sunsetting
  zunset: 2027-01-01
";
    let p = problems(text);
    let s = p.to_string();
    let expect = [
        // Checked by the loader once the shape problems are out of its way.
        "bad.yaml:1:9: error: listen: `0.0.0.0:80x` is not an address",
        "bad.yaml:3:1: error: timeouts: unknown field `timeouts`, expected one of ",
        "bad.yaml:4:7: error: mode: `debug` is not `production` or `development`",
        "bad.yaml:5:18: error: routes[1]: `FETCH` is not an HTTP method",
        "bad.yaml:7:12: error: limits.workers: `two` is not a whole number",
        "bad.yaml:8:20: error: limits.max_connections: `-5` is not a whole number",
        "bad.yaml:9:3: error: limits.header_timeout: unknown field `header_timeout`, expected one of ",
        "bad.yaml:10:17: error: limits.idle_timeout: `5 minutes` is not a duration",
        "bad.yaml:13:22: error: cors.allow_credentials: expected a boolean, found `maybe`",
        "bad.yaml:18:11: error: versions[0].status: `sunsetting`",
        "bad.yaml:19:3: error: versions[0].zunset: unknown field `zunset`",
    ];
    for e in expect {
        assert!(s.contains(e), "missing `{e}` in:\n{s}");
    }
    assert_eq!(p.iter().count(), expect.len(), "{s}");
    let lines: Vec<u64> = p.iter().filter_map(|x| x.pos.map(|p| p.line)).collect();
    assert!(
        lines.windows(2).all(|w| w[0] <= w[1]),
        "file order: {lines:?}"
    );
}

/// Entries in braces are stepped over as well: the misspelt one and its comma go, the rest
/// of the mapping is read and checked.
#[test]
fn misspelt_keys_in_braces_are_stepped_over_too() {
    let text = "\
listen: 0.0.0.0:80x
upstream: http://127.0.0.1:1
routes: [GET /a]
limits: { workers: two, header_timeout: 5s, idle_timeout: 5 minutes, pin_workers: [x] }
rate_limits:
  - { match: GET /a, key: ip, rate: 10/second, burts: 5 }
  - { burts: 5, match: GET /a, key: ip, rate: lots }
  - { match: GET /a, key: ip, rate: 10/fortnight, burts: 5 }
";
    let p = problems(text);
    let s = p.to_string();
    let expect = [
        "bad.yaml:1:9: error: listen: `0.0.0.0:80x` is not an address",
        "bad.yaml:4:20: error: limits.workers: `two` is not a whole number",
        "bad.yaml:4:25: error: limits.header_timeout: unknown field `header_timeout`",
        "bad.yaml:4:59: error: limits.idle_timeout: `5 minutes` is not a duration",
        "bad.yaml:4:83: error: limits.pin_workers: expected",
        "bad.yaml:6:48: error: rate_limits[0].burts: unknown field `burts`",
        "bad.yaml:7:7: error: rate_limits[1].burts: unknown field `burts`",
        "bad.yaml:7:47: error: rate_limits[1].rate:",
        "bad.yaml:8:37: error: rate_limits[2].rate:",
        "bad.yaml:8:51: error: rate_limits[2].burts: unknown field `burts`",
    ];
    for e in expect {
        assert!(s.contains(e), "missing `{e}` in:\n{s}");
    }
}

/// A problem that cannot be blanked out (a key missing, an item of a list): the schema's word
/// alone for every value, and a secret named by its key, never shown.
#[test]
fn shape_problems_the_loader_cannot_step_over_are_still_all_reported() {
    let text = "\
listen: 127.0.0.1:8080
upstream: http://127.0.0.1:1
limits: { workers: two, idle_timeout: 5 minutes, header_timeout: 5s }
auth:
  jwt:
    keys:
      - { kid: k1, secret: [hunter2] }
";
    let p = problems(text);
    let s = p.to_string();
    let expect = [
        "bad.yaml:3:20: error: limits.workers: expected the form `^[0-9]+$` (a whole number), found `two`",
        "bad.yaml:3:39: error: limits.idle_timeout: expected the form `^[0-9]+(ms|s|m|h|d)$` (500ms, 10s, 15m, 2h, 1d), found `5 minutes`",
        "bad.yaml:3:50: error: limits.header_timeout: unknown field `header_timeout`",
        "bad.yaml:7:9: error: auth.jwt.keys[0]: missing field `alg`",
        "bad.yaml:7:28: error: auth.jwt.keys[0].secret: expected a string",
    ];
    for e in expect {
        assert!(s.contains(e), "missing `{e}` in:\n{s}");
    }
    assert!(!s.contains("hunter2"), "{s}");
}

/// A value of the wrong shape is shown only when it cannot hold a secret: never a mapping
/// (its own keys may be secret ones), never a URL with credentials, whatever the key above it.
#[test]
fn no_message_repeats_a_secret_held_in_a_value_of_the_wrong_shape() {
    let base = "listen: 127.0.0.1:8080\nupstream: http://127.0.0.1:1\nroutes: [GET /]\n";
    let cases = [
        // A mapping where a list is expected (the `-` forgotten), in braces and in a block.
        format!("{base}auth:\n  jwt:\n    keys: {{ alg: HS256, secret: hunter2-braces }}\n"),
        format!("{base}auth:\n  jwt:\n    keys:\n      secret: hunter2-block\n      alg: HS256\n"),
        // Redis URLs with a password, where the shape is wrong and the repair cannot run.
        format!(
            "{base}state:\n  redis: {{ url: \"redis://:hunter2-url@127.0.0.1:6379\", url_env: R }}\n"
        ),
        format!(
            "{base}state:\n  backend: redis\n  redis:\n    cluster: [\"rediss://u:hunter2-cluster@127.0.0.1:1\", 5]\n"
        ),
        format!(
            "{base}state:\n  backend: redis\n  redis:\n    url: [\"redis://:hunter2-list@127.0.0.1:6379\"]\n"
        ),
    ];
    for text in &cases {
        let p = problems(text);
        let s = p.to_string();
        assert!(p.has_errors(), "{s}");
        assert!(!s.contains("hunter2"), "a secret in:\n{s}");
    }
}

/// Every key path of the shipped examples, misspelt or given a value of the wrong type
/// behind a first problem the typed read stops at, is still reported: the schema knows every
/// key the loader reads and every map that refuses unknown keys.
#[test]
fn the_schema_finds_what_the_typed_read_refuses_behind_a_first_problem() {
    fn walk(v: &serde_json::Value, at: &str, out: &mut Vec<(String, bool)>) {
        match v {
            serde_json::Value::Object(m) => {
                out.push((at.to_owned(), true));
                for (k, v) in m {
                    walk(v, &format!("{at}/{k}"), out);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, &format!("{at}/{i}"), out);
                }
            }
            _ => out.push((at.to_owned(), false)),
        }
    }
    fn dotted(pointer: &str) -> String {
        let mut out = String::new();
        for seg in pointer.split('/').skip(1) {
            if seg.bytes().all(|b| b.is_ascii_digit()) {
                out.push_str(&format!("[{seg}]"));
            } else {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(seg);
            }
        }
        out
    }
    let mut checked = Vec::new();
    for file in shape_fixtures() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let doc: serde_json::Value =
            serde_saphyr::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let mut paths = Vec::new();
        walk(&doc, "", &mut paths);
        for (at, is_map) in paths {
            let mut bad = doc.clone();
            // The description is read only where it is what changed (it is slow to read, and
            // the shape of the rest does not depend on it).
            if at != "/openapi" {
                bad.as_object_mut().unwrap().remove("openapi");
            }
            let target = bad.pointer_mut(&at).unwrap();
            let (key, what) = if is_map {
                target["zz_unknown"] = serde_json::json!(1);
                (dotted(&format!("{at}/zz_unknown")), "zz_unknown")
            } else {
                *target = serde_json::json!({ "zz": [1] });
                (dotted(&at), "")
            };
            let yaml = serde_saphyr::to_string(&bad).unwrap();
            let alone = load_str(&file, &yaml);
            let refused_here = alone
                .as_ref()
                .err()
                .is_some_and(|p| p.iter().any(|x| x.key == key && x.message.contains(what)));
            if !refused_here {
                continue; // a free-form map, or a value of any shape
            }
            let behind = load_str(&file, &format!("aa_first: 1\n{yaml}"))
                .expect_err("an unknown key is refused");
            assert!(
                behind
                    .iter()
                    .any(|x| x.key == key && x.message.contains(what)),
                "{name}: `{key}` refused alone but not behind a first problem:\n{behind}"
            );
            checked.push(key);
        }
    }
    let maps = checked.iter().filter(|k| k.ends_with("zz_unknown")).count();
    assert!(maps > 40 && checked.len() - maps > 150, "{checked:?}");
}

#[test]
fn a_value_of_the_wrong_type_is_named_by_its_key_and_shown() {
    let base = "listen: 127.0.0.1:8080\nupstream: http://127.0.0.1:1\nroutes: [GET /]\n";
    let p = problems(&format!(
        "{base}cors:\n  allow_origins: ['https://a.example']\n  allow_credentials: maybe # no\n"
    ));
    let s = p.to_string();
    assert!(
        s.contains("bad.yaml:6:22: error: cors.allow_credentials: ") && s.contains("`maybe`"),
        "{s}"
    );
    let p = problems(&format!(
        "{base}limits: {{ max_body_bytes: lots, workers: 2 }}\n"
    ));
    let s = p.to_string();
    assert!(
        s.contains("error: limits.max_body_bytes: ") && s.contains("`lots`"),
        "{s}"
    );
    let p = problems(&format!(
        "{base}versions:\n  - prefix: /v1\n    status: [3, 4]\n"
    ));
    assert!(
        p.to_string().contains("versions[0].status: ") && p.to_string().contains("`[3, 4]`"),
        "{p}"
    );
    // A secret's value is never repeated, even when it is of the wrong shape.
    let p = problems(&format!(
        "{base}auth:\n  jwt:\n    keys: [{{ alg: HS256, secret: {{ hunter2: x }} }}]\n"
    ));
    let s = p.to_string();
    assert!(
        s.contains("auth.jwt.keys[0].secret") && !s.contains("hunter2"),
        "{s}"
    );
}

#[test]
fn insecure_combinations_are_refused_or_flagged() {
    let base = "listen: 127.0.0.1:8080\nupstream: http://127.0.0.1:1\nroutes: [GET /]\n";
    // Upstream error bodies only in development.
    let p = problems(&format!(
        "{base}errors: {{ expose_upstream_errors: true }}\n"
    ));
    assert!(
        p.to_string()
            .contains("only allowed with `mode: development`"),
        "{p}"
    );
    // Development mode only on loopback.
    let p = problems(
        "listen: 0.0.0.0:8080\nupstream: http://127.0.0.1:1\nroutes: [GET /]\nmode: development\n",
    );
    assert!(
        p.to_string().contains("development mode leaks detail"),
        "{p}"
    );
    // The admin listener is on loopback unless told otherwise, and needs no token there.
    let loaded = load_str(Path::new("p.yaml"), &format!("{base}admin: {{}}\n")).unwrap();
    let admin = loaded.policy.admin.unwrap();
    assert_eq!(admin.listen.to_string(), "127.0.0.1:9901");
    assert!(admin.token.is_none());
    // Two token sources are one too many, pointed at the section.
    let p = problems(&format!(
        "{base}admin:\n  token_env: A\n  token_file: /nonexistent/b\n"
    ));
    assert!(
        p.to_string()
            .contains("bad.yaml:5:3: error: admin: give one of"),
        "{p}"
    );
    // A plain-text admin token loads, with a warning that points at it.
    let loaded = load_str(
        Path::new("p.yaml"),
        &format!("{base}admin: {{ listen: 127.0.0.1:9901, token: 0123456789abcdef0123 }}\n"),
    )
    .unwrap();
    let w = loaded.warnings.to_string();
    assert!(
        w.contains("p.yaml:4:") && w.contains("warning: admin.token: a plain-text secret"),
        "{w}"
    );
    assert!(
        !w.contains("0123456789abcdef"),
        "the secret is not echoed: {w}"
    );
    // No routes at all.
    let p = problems("listen: 127.0.0.1:8080\nupstream: http://127.0.0.1:1\n");
    assert!(p.to_string().contains("no routes are declared"), "{p}");
    // Every address a trusted proxy: each client would name its own address.
    for all in ["0.0.0.0/0", "::/0"] {
        let p = problems(&format!("{base}trusted_proxies: [10.0.0.1, \"{all}\"]\n"));
        assert!(
            p.to_string().contains("trusted_proxies[1]")
                && p.to_string().contains("trusts every address"),
            "{p}"
        );
    }
    load_str(
        Path::new("p.yaml"),
        &format!("{base}trusted_proxies: [10.0.0.0/8, \"::1\"]\n"),
    )
    .unwrap();
    // Response rules cannot reach the fields the gateway owns: CORS (an `Access-Control-Allow-
    // Origin: null` with credentials for every origin), `Vary`, framing, the request id.
    let p = problems(&format!(
        "{base}security_headers:\n  set: {{ Access-Control-Allow-Origin: \"null\", access-control-allow-credentials: \"true\", content-length: \"0\" }}\n  remove: [vary, X-Request-Id, server]\n"
    ));
    let text = p.to_string();
    for key in [
        "security_headers.set.Access-Control-Allow-Origin",
        "security_headers.set.access-control-allow-credentials",
        "security_headers.set.content-length",
        "security_headers.remove[0]",
        "security_headers.remove[1]",
    ] {
        assert!(text.contains(&format!("{key}: ")), "{key}: {text}");
    }
    assert!(!text.contains("remove[2]"), "{text}");
    // CORS header lists without wildcards.
    let p = problems(&format!(
        "{base}cors: {{ allow_origins: [\"https://app.example\"], allow_headers: [\"*\"], expose_headers: [x-trace, \"*\"] }}\n"
    ));
    let text = p.to_string();
    for key in ["cors.allow_headers[0]", "cors.expose_headers[1]"] {
        assert!(
            text.contains(&format!("{key}: a wildcard is not allowed")),
            "{text}"
        );
    }
}

#[test]
fn openapi_problems_point_into_the_description() {
    let dir = std::env::temp_dir().join(format!("portcullis-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("swagger.yaml"), "swagger: '2.0'\npaths: {}\n").unwrap();
    std::fs::write(
        dir.join("broken.yaml"),
        "openapi: 3.1.0\npaths:\n  /a:\n    get: {\n",
    )
    .unwrap();
    let policy = |spec: &str| {
        format!("listen: 127.0.0.1:8080\nupstream: http://127.0.0.1:1\nopenapi: {spec}\n")
    };
    let p = load_str(&dir.join("p.yaml"), &policy("swagger.yaml"))
        .err()
        .unwrap();
    assert!(
        p.to_string()
            .contains("swagger.yaml: error: Swagger 2.0 is not supported"),
        "{p}"
    );
    let p = load_str(&dir.join("p.yaml"), &policy("broken.yaml"))
        .err()
        .unwrap();
    assert!(p.to_string().contains("broken.yaml:"), "{p}");
    let p = load_str(&dir.join("p.yaml"), &policy("missing.yaml"))
        .err()
        .unwrap();
    assert!(
        p.to_string().contains("missing.yaml: error: cannot read"),
        "{p}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_large_github_description_imports() {
    let spec =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/specs/github-rest-api.json");
    if !spec.exists() {
        return; // the shared specs are beside the checkout in CI and on developer machines
    }
    let text = format!(
        "listen: 127.0.0.1:8080\nupstream: http://127.0.0.1:1\nopenapi: {}\n",
        spec.display()
    );
    let loaded = load_str(Path::new("p.yaml"), &text).unwrap_or_else(|p| panic!("{p}"));
    assert_eq!(loaded.policy.inventory.len(), 1223);
    assert!(matches!(
        loaded
            .policy
            .inventory
            .lookup(&Method::GET, "/repos/octocat/hello-world/issues/42"),
        Lookup::Found { .. }
    ));
}

/// The JSON Schema shipped for editors agrees with the loader: the example validates, and a
/// misspelt key fails both.
#[test]
fn the_editor_schema_accepts_the_example_and_rejects_unknown_keys() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("schemas/portcullis.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let example: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(example()).unwrap()).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&example)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let auth_example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop/portcullis-auth.yaml");
    let auth: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(auth_example).unwrap()).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&auth)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let mut typo = example.clone();
    typo["limts"] = serde_json::json!({});
    assert!(!validator.is_valid(&typo));
    let mut bad_route = example;
    bad_route["security_headers"]["routes"][0]["rout"] = serde_json::json!("GET /x");
    assert!(!validator.is_valid(&bad_route));
}

#[test]
fn the_auth_example_loads_with_its_key_and_names_the_missing_one() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shop/portcullis-auth.yaml");
    // Without the key: refused, with the key's position and the variable's name.
    if std::env::var_os("SHOP_JWT_SECRET").is_none() {
        let p = load(&path).expect_err("the key is missing");
        assert!(
            p.to_string().contains(
                "auth.jwt.keys[0].secret_env: environment variable `SHOP_JWT_SECRET` is not set"
            ),
            "{p}"
        );
    }
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "secret_env: SHOP_JWT_SECRET",
        "secret: k7Qw9zR2xV5mN8pL3tY6uB1cF4hJ0dS2gA",
    );
    let loaded = load_str(&path, &text).unwrap_or_else(|p| panic!("{p}"));
    let auth = loaded.policy.auth.unwrap();
    let id = |m: Method, p: &str| {
        loaded
            .policy
            .inventory
            .routes
            .iter()
            .position(|r| r.method == m && r.template == p)
            .unwrap()
    };
    assert!(
        auth.required[id(Method::GET, "/v2/users/me")],
        "secured in the description"
    );
    assert!(
        !auth.required[id(Method::GET, "/v2/products")],
        "`security: []` in the description"
    );
    assert!(
        !auth.required[id(Method::POST, "/v2/auth/refresh")],
        "the refresh call carries a refresh token"
    );
    assert!(auth.login.is_some() && auth.refresh.is_some() && auth.passwords.len() == 1);
}

#[test]
fn weak_and_misplaced_keys_are_refused() {
    let base = "listen: 127.0.0.1:8080\nupstream: http://127.0.0.1:1\nroutes: [GET /]\nauth:\n  jwt:\n    keys:\n";
    for (key, msg) in [
        (
            "      - { alg: HS256, secret: secret }\n",
            "every JWT cracking word list",
        ),
        (
            "      - { alg: HS256, secret: short-but-not-listed }\n",
            "needs at least 32 bytes",
        ),
        (
            "      - { alg: HS512, secret: k7Qw9zR2xV5mN8pL3tY6uB1cF4hJ0dS2gA }\n",
            "needs at least 64 bytes",
        ),
        (
            "      - { alg: HS256, secret: abababababababababababababababababab }\n",
            "repeats a few characters",
        ),
        (
            "      - { alg: RS256, secret: k7Qw9zR2xV5mN8pL3tY6uB1cF4hJ0dS2gA }\n",
            "never a secret",
        ),
        (
            "      - { alg: none, secret: k7Qw9zR2xV5mN8pL3tY6uB1cF4hJ0dS2gA }\n",
            "`none` is not one of",
        ),
        (
            "      - { alg: HS256, secret_env: PORTCULLIS_TEST_UNSET_VARIABLE }\n",
            "is not set",
        ),
    ] {
        let p = load_str(Path::new("p.yaml"), &format!("{base}{key}")).expect_err(key);
        assert!(p.to_string().contains("p.yaml:7:"), "{p}");
        assert!(p.to_string().contains(msg), "{key}: {p}");
        assert!(
            !p.to_string().contains("k7Qw9zR2"),
            "the secret is never echoed: {p}"
        );
    }
}

#[test]
fn rate_limits_are_checked_at_load() {
    let base = "listen: 127.0.0.1:8080\nupstream: http://127.0.0.1:1\nroutes: [GET /a, GET /b]\nrate_limits:\n";
    let ok = load_str(Path::new("p.yaml"), &format!("{base}  - {{ match: /**, key: ip, rate: 10/minute, burst: 3 }}\n  - {{ match: GET /a, key: header:x-api-key, rate: 1/second }}\n")).unwrap();
    let rules = &ok.policy.rate_limits;
    assert_eq!(
        (rules[0].routes.len(), rules[0].count, rules[0].burst),
        (2, 10, 3)
    );
    assert_eq!(rules[1].burst, 1, "burst defaults to the count");
    for (rule, msg) in [
        (
            "{ match: /a, key: ip, rate: 10 per minute }",
            "p.yaml:5:33: error: rate_limits[0].rate",
        ),
        (
            "{ match: /a, key: cookie:x, rate: 1/second }",
            "is not `ip`, `user`, `claim:NAME`, `header:NAME` or `body:/POINTER`",
        ),
        (
            "{ match: /a, key: ip+body:email, rate: 1/second }",
            "`body:email` is not",
        ),
        (
            "{ match: /zzz/**, key: ip, rate: 1/second }",
            "matches no declared route",
        ),
        ("{ match: /a, key: ip, rate: 0/second }", "is not a rate"),
    ] {
        let p = load_str(Path::new("p.yaml"), &format!("{base}  - {rule}\n")).expect_err(rule);
        assert!(p.to_string().contains(msg), "{rule}: {p}");
    }
}
