//! The public catalogue. Only published products are listed; under `sqli` the search builds
//! its SQL from the query text and so lists whatever the attacker asks for.

use axum::extract::State;
use axum::response::IntoResponse;
use rusqlite::{OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::Vuln;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

/// Largest page in the secure default.
pub const MAX_LIMIT: u32 = 100;
/// Deepest page.
pub const MAX_OFFSET: u32 = 1_000_000;

#[derive(Debug, Serialize)]
pub struct ProductRow {
    id: String,
    name: String,
    description: String,
    price_cents: i64,
    stock: i64,
    cost_cents: i64,
    supplier: String,
}

const COLUMNS: &str = "id, name, description, price_cents, stock, cost_cents, supplier";

impl ProductRow {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            name: r.get(1)?,
            description: r.get(2)?,
            price_cents: r.get(3)?,
            stock: r.get(4)?,
            cost_cents: r.get(5)?,
            supplier: r.get(6)?,
        })
    }

    fn view(&self, exposed: bool) -> serde_json::Value {
        let mut v = json!({
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "price_cents": self.price_cents,
            "in_stock": self.stock > 0,
        });
        // The weakness: the whole row goes out, internal columns included.
        if exposed && let Some(m) = v.as_object_mut() {
            m.insert("stock".into(), self.stock.into());
            m.insert("cost_cents".into(), self.cost_cents.into());
            m.insert("supplier".into(), self.supplier.clone().into());
        }
        v
    }
}

/// `prod_` and 8 to 32 ASCII alphanumerics.
pub fn valid_product_id(id: &str) -> bool {
    id.strip_prefix("prod_").is_some_and(|t| {
        (8..=32).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    limit: Option<u32>,
    offset: Option<u32>,
}

pub async fn list(
    State(state): State<AppState>,
    Query(page): Query<Page>,
) -> ApiResult<impl IntoResponse> {
    let unbounded = state.config.vulns.has(Vuln::NoRateLimit);
    let limit = page.limit.unwrap_or(20);
    if !unbounded && !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "`limit` must be between 1 and {MAX_LIMIT}"
        )));
    }
    let offset = page.offset.unwrap_or(0);
    if offset > MAX_OFFSET {
        return Err(ApiError::bad_request(format!(
            "`offset` must be at most {MAX_OFFSET}"
        )));
    }
    let exposed = state.config.vulns.has(Vuln::DataExposure);
    let (items, total) = state
        .db
        .call(move |c| {
            let sql = format!(
                "SELECT {COLUMNS} FROM products WHERE published = 1 ORDER BY id LIMIT ?1 OFFSET ?2"
            );
            let mut stmt = c.prepare_cached(&sql).map_err(|e| ApiError::db(&sql, &e))?;
            let rows = stmt
                .query_map([limit, offset], ProductRow::from_row)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(|e| ApiError::db(&sql, &e))?;
            const COUNT: &str = "SELECT COUNT(*) FROM products WHERE published = 1";
            let total: i64 = c
                .query_row(COUNT, [], |r| r.get(0))
                .map_err(|e| ApiError::db(COUNT, &e))?;
            Ok((rows, total))
        })
        .await?;
    let items: Vec<_> = items.iter().map(|p| p.view(exposed)).collect();
    Ok(Json(
        json!({ "items": items, "limit": limit, "offset": offset, "total": total }),
    ))
}

pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    if !valid_product_id(&id) {
        return Err(ApiError::bad_request("`product_id` is malformed"));
    }
    let exposed = state.config.vulns.has(Vuln::DataExposure);
    let row = state
        .db
        .call(move |c| {
            let sql = format!("SELECT {COLUMNS} FROM products WHERE id = ?1 AND published = 1");
            c.query_row(&sql, [id], ProductRow::from_row)
                .optional()
                .map_err(|e| ApiError::db(&sql, &e))
        })
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(row.view(exposed)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Search {
    q: String,
}

pub async fn search(
    State(state): State<AppState>,
    uri: axum::http::Uri,
) -> ApiResult<axum::response::Response> {
    if state.config.vulns.has(Vuln::Nosqli)
        && let Some(filter) = operator_query(&uri)
    {
        return operator_search(&state, filter).await;
    }
    let Search { q } = axum::extract::Query::<Search>::try_from_uri(&uri)
        .map_err(ApiError::from)?
        .0;
    let n = q.chars().count();
    if !(1..=100).contains(&n) {
        return Err(ApiError::bad_request("`q` must have 1 to 100 characters"));
    }
    let exposed = state.config.vulns.has(Vuln::DataExposure);
    let injectable = state.config.vulns.has(Vuln::Sqli);
    let items = state
        .db
        .call(move |c| {
            let (sql, params) = if injectable {
                // The weakness: the query text becomes SQL.
                (
                    format!("SELECT {COLUMNS} FROM products WHERE published = 1 AND name LIKE '%{q}%' ORDER BY id"),
                    Vec::new(),
                )
            } else {
                let escaped = q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
                (
                    format!("SELECT {COLUMNS} FROM products WHERE published = 1 AND name LIKE ?1 ESCAPE '\\' ORDER BY id LIMIT {MAX_LIMIT}"),
                    vec![format!("%{escaped}%")],
                )
            };
            let mut stmt = c.prepare(&sql).map_err(|e| ApiError::db(&sql, &e))?;
            stmt.query_map(rusqlite::params_from_iter(params), ProductRow::from_row)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(|e| ApiError::db(&sql, &e))
        })
        .await?;
    let items: Vec<_> = items.iter().map(|p| p.view(exposed)).collect();
    Ok(Json(json!({ "items": items })).into_response())
}

/// `q[$ne]=x` style parameters, as a query filter (`{"$ne": "x"}`), when there are any.
fn operator_query(uri: &axum::http::Uri) -> Option<serde_json::Value> {
    let mut ops = serde_json::Map::new();
    for (k, v) in url::form_urlencoded::parse(uri.query()?.as_bytes()) {
        if let Some(op) = k.strip_prefix("q[").and_then(|r| r.strip_suffix(']')) {
            ops.insert(op.to_owned(), serde_json::Value::String(v.into_owned()));
        }
    }
    (!ops.is_empty()).then_some(serde_json::Value::Object(ops))
}

/// The `nosqli` weakness: the search parameters are handed to a document-store style query,
/// so `q[$ne]=nothing` matches every published product.
async fn operator_search(
    state: &AppState,
    filter: serde_json::Value,
) -> ApiResult<axum::response::Response> {
    let exposed = state.config.vulns.has(Vuln::DataExposure);
    let rows = state
        .db
        .call(|c| {
            let sql = format!("SELECT {COLUMNS} FROM products WHERE published = 1 ORDER BY id");
            let mut stmt = c.prepare(&sql).map_err(|e| ApiError::db(&sql, &e))?;
            stmt.query_map([], ProductRow::from_row)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(|e| ApiError::db(&sql, &e))
        })
        .await?;
    let items: Vec<_> = rows
        .iter()
        .filter(|p| crate::routes::matches_filter(&filter, &p.name))
        .map(|p| p.view(exposed))
        .collect();
    Ok(Json(json!({ "items": items })).into_response())
}
