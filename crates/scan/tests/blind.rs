//! Blind SQL injection, found by time alone: a careless API on loopback that counts searches
//! in a real SQL database (SQLite with MySQL's `SLEEP()` added, standing in for a MySQL server),
//! built by string concatenation, and answers the same whatever happens, errors included.
//! Error-based and boolean probes see nothing; the time-based probe must. And a parameterised
//! twin of the same API, where the payloads are inert: nothing.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
mod common;

use portcullis_test_support::*;
use rusqlite::Connection;
use rusqlite::functions::FunctionFlags;

const SPEC: &str = r#"openapi: 3.1.0
info: { title: counter, version: "1" }
security: [{ bearer: [] }]
paths:
  /search:
    get:
      parameters:
        - { name: q, in: query, required: true, schema: { type: string, maxLength: 200 }, example: lamp }
      responses:
        '200':
          description: ok
          content: { application/json: { schema: { type: object, properties: { ok: { type: boolean } } } } }
components:
  securitySchemes:
    bearer: { type: http, scheme: bearer, bearerFormat: JWT }
"#;

#[derive(serde::Deserialize)]
struct Search {
    q: String,
}

/// The API, with the query built by concatenation or bound as a parameter.
async fn counter(concatenate: bool) -> std::net::SocketAddr {
    let db = Connection::open_in_memory().unwrap();
    db.execute_batch(
        "CREATE TABLE items (name TEXT); INSERT INTO items VALUES ('lamp'), ('desk');",
    )
    .unwrap();
    db.create_scalar_function("SLEEP", 1, FunctionFlags::SQLITE_UTF8, |ctx| {
        let secs = ctx.get::<i64>(0)?.clamp(0, 5);
        std::thread::sleep(Duration::from_secs(secs as u64));
        Ok(0i64)
    })
    .unwrap();
    let db = Arc::new(Mutex::new(db));
    let app = axum::Router::new()
        .route(
            "/search",
            axum::routing::get(
                move |State(db): State<Arc<Mutex<Connection>>>, Query(s): Query<Search>| async move {
                    tokio::task::spawn_blocking(move || {
                        let db = db.lock().unwrap();
                        // Whatever happens, the same answer: the result and errors are ignored.
                        let _ = if concatenate {
                            db.query_row(
                                &format!("SELECT count(*) FROM items WHERE name = '{}'", s.q),
                                [],
                                |r| r.get::<_, i64>(0),
                            )
                        } else {
                            db.query_row(
                                "SELECT count(*) FROM items WHERE name = ?1",
                                [&s.q],
                                |r| r.get::<_, i64>(0),
                            )
                        };
                    })
                    .await
                    .unwrap();
                    axum::Json(serde_json::json!({ "ok": true }))
                },
            ),
        )
        .with_state(db);
    serve_router(app).await
}

async fn scan(addr: std::net::SocketAddr, dir: &std::path::Path) -> portcullis_scan::Report {
    common::scan(addr, dir, ["token-a", "token-b"], &["injection"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blind_sql_injection_is_found_by_time_and_only_where_it_is() {
    let dir = common::folder("blind");
    std::fs::write(dir.join("api.yaml"), SPEC).unwrap();

    let report = scan(counter(true).await, &dir).await;
    let sqli: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.rule == "sql-injection")
        .collect();
    assert_eq!(sqli.len(), 1, "{:#?}", report.findings);
    assert!(
        sqli[0].detail.contains("SLEEP") && sqli[0].detail.contains("Parameter `q`"),
        "{}",
        sqli[0].detail
    );
    assert_eq!(sqli[0].operation, "GET /search");
    assert!(sqli[0].reproduce.starts_with("curl"));

    let report = scan(counter(false).await, &dir).await;
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    let _ = std::fs::remove_dir_all(&dir);
}
