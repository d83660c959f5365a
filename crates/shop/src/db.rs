//! The shop's SQLite database: one connection behind a mutex, used from blocking threads,
//! with the schema migrations and the seed data built in.
//!
//! Every query in the secure default is parameterised; the string-built ones live behind the
//! `sqli` (product search, promo redemption) and `jwt-kid-injection` (key lookup) switches.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use crate::error::{ApiError, ApiResult};

/// Ordered migrations; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    id              TEXT PRIMARY KEY,
    email           TEXT NOT NULL UNIQUE,
    password_hash   TEXT NOT NULL,
    name            TEXT NOT NULL,
    role            TEXT NOT NULL DEFAULT 'customer',
    balance_cents   INTEGER NOT NULL DEFAULT 0,
    avatar_url      TEXT,
    internal_notes  TEXT NOT NULL DEFAULT '',
    last_login_ip   TEXT,
    created_at      INTEGER NOT NULL
);
CREATE TABLE products (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    description     TEXT NOT NULL,
    price_cents     INTEGER NOT NULL,
    stock           INTEGER NOT NULL,
    published       INTEGER NOT NULL DEFAULT 1,
    cost_cents      INTEGER NOT NULL,
    supplier        TEXT NOT NULL
);
CREATE TABLE orders (
    id               TEXT PRIMARY KEY,
    user_id          TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    product_id       TEXT NOT NULL REFERENCES products(id),
    quantity         INTEGER NOT NULL,
    unit_price_cents INTEGER NOT NULL,
    total_cents      INTEGER NOT NULL,
    discount_code    TEXT,
    shipping_address TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'pending',
    internal_notes   TEXT NOT NULL DEFAULT '',
    created_at       INTEGER NOT NULL
);
CREATE INDEX orders_by_user ON orders(user_id, created_at);
CREATE TABLE promo_codes (
    code          TEXT PRIMARY KEY,
    credit_cents  INTEGER NOT NULL
);
CREATE TABLE promo_redemptions (
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    code         TEXT NOT NULL,
    redeemed_at  INTEGER NOT NULL
);
CREATE INDEX redemptions_by_user ON promo_redemptions(user_id, redeemed_at);
CREATE TABLE refresh_tokens (
    jti      TEXT PRIMARY KEY,
    family   TEXT NOT NULL,
    user_id  TEXT NOT NULL,
    exp      INTEGER NOT NULL,
    used     INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE revoked_tokens (
    jti  TEXT PRIMARY KEY,
    exp  INTEGER NOT NULL
);
CREATE TABLE revoked_families (
    family  TEXT PRIMARY KEY,
    exp     INTEGER NOT NULL
);
CREATE TABLE login_failures (
    account       TEXT PRIMARY KEY,
    failures      INTEGER NOT NULL,
    window_start  INTEGER NOT NULL,
    locked_until  INTEGER NOT NULL DEFAULT 0
);
"#,
    r#"
CREATE TABLE jwt_keys (
    kid             TEXT PRIMARY KEY,
    secret          TEXT NOT NULL
);
"#,
];

/// Seeded catalogue: (id, name, description, price, stock, published, cost, supplier).
/// The unpublished product is what the `sqli` exploit digs out.
type SeedProduct = (
    &'static str,
    &'static str,
    &'static str,
    i64,
    i64,
    bool,
    i64,
    &'static str,
);
const PRODUCTS: &[SeedProduct] = &[
    (
        "prod_K3y8Qm2LpX",
        "Portcullis Mug",
        "Stoneware, 350 ml",
        1500,
        120,
        true,
        420,
        "Kiln & Co",
    ),
    (
        "prod_T7vB9nR4sW",
        "Drawbridge Hoodie",
        "Organic cotton",
        5900,
        40,
        true,
        1800,
        "Loom Ltd",
    ),
    (
        "prod_H2cF6jP8dZ",
        "Moat Water Bottle",
        "Steel, 750 ml",
        2400,
        75,
        true,
        900,
        "Forge AG",
    ),
    (
        "prod_M5wN1qA7eR",
        "Battlement Sticker Pack",
        "12 vinyl stickers",
        600,
        500,
        true,
        80,
        "Print GmbH",
    ),
    (
        "prod_D9gL4xC3uY",
        "Keep Notebook",
        "A5, dotted",
        1200,
        200,
        true,
        300,
        "Paper Oy",
    ),
    (
        "prod_B6kS8tV2mJ",
        "Gatehouse Cap",
        "One size",
        2200,
        60,
        true,
        700,
        "Loom Ltd",
    ),
    (
        "prod_R1zE5hW9pQ",
        "Siege Socks",
        "Wool blend",
        1400,
        90,
        true,
        350,
        "Loom Ltd",
    ),
    (
        "prod_X4aU7yG3nK",
        "Arrow Slit Poster",
        "A2 print",
        1800,
        30,
        true,
        400,
        "Print GmbH",
    ),
    (
        "prod_S0cr3tPr0t0",
        "Unreleased Prototype",
        "internal: launch 2027-Q3",
        99900,
        1,
        false,
        45000,
        "Skunkworks",
    ),
];

const PROMO_CODES: &[(&str, i64)] = &[("WELCOME10", 1000), ("SPRING5", 500)];

/// Discount codes accepted on orders, as percent off.
pub const DISCOUNTS: &[(&str, i64)] = &[("SAVE10", 10), ("SAVE20", 20)];

/// Shared handle to the database.
#[derive(Clone, Debug)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Db {
    /// Opens (or creates) the database, migrates it and seeds it once.
    pub fn open(path: Option<&Path>, admin: (&str, &str, &str)) -> Result<Self, rusqlite::Error> {
        let conn = match path {
            Some(p) => Connection::open(p)?,
            None => Connection::open_in_memory()?,
        };
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let version = usize::try_from(version).unwrap_or(0);
        let fresh = version == 0;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            conn.execute_batch(sql)?;
            conn.pragma_update(None, "user_version", i as i64 + 1)?;
        }
        if fresh {
            seed(&conn, admin)?;
        }
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on a blocking thread.
    pub async fn call<R, F>(&self, f: F) -> ApiResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> ApiResult<R> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| ApiError::internal("database lock poisoned"))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| ApiError::internal(format!("database task failed: {e}")))?
    }
}

fn seed(
    conn: &Connection,
    (email, name, password_hash): (&str, &str, &str),
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO users (id, email, password_hash, name, role, created_at, internal_notes)
         VALUES (?1, ?2, ?3, ?4, 'admin', ?5, 'seeded administrator')",
        rusqlite::params![new_id("usr"), email, password_hash, name, now()],
    )?;
    for p in PRODUCTS {
        conn.execute(
            "INSERT INTO products VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            rusqlite::params![p.0, p.1, p.2, p.3, p.4, p.5, p.6, p.7],
        )?;
    }
    for (code, credit) in PROMO_CODES {
        conn.execute(
            "INSERT INTO promo_codes VALUES (?1, ?2)",
            rusqlite::params![code, credit],
        )?;
    }
    Ok(())
}

/// Ids that cannot be guessed: a prefix and 20 random alphanumerics.
pub fn new_id(prefix: &str) -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    let tail: String = rand::rng()
        .sample_iter(&Alphanumeric)
        .take(20)
        .map(char::from)
        .collect();
    format!("{prefix}_{tail}")
}
