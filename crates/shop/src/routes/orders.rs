//! Orders. In the secure default every query is filtered by owner, so another user's order is
//! indistinguishable from a missing one (404). `bola` drops the owner filter; under
//! `mass-assignment` a client may set the price and the status of its order.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use rusqlite::{OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::AuthUser;
use crate::config::Vuln;
use crate::db::{DISCOUNTS, new_id, now};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, RawJson, parse_json};
use crate::routes::plain_text;
use crate::routes::products::valid_product_id;
use crate::state::AppState;

#[derive(Debug, Serialize)]
pub struct OrderRow {
    pub id: String,
    pub user_id: String,
    pub product_id: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
    pub total_cents: i64,
    pub discount_code: Option<String>,
    pub shipping_address: String,
    pub status: String,
    pub internal_notes: String,
    pub created_at: i64,
}

pub const ORDER_COLUMNS: &str = "id, user_id, product_id, quantity, unit_price_cents, total_cents, discount_code, shipping_address, status, internal_notes, created_at";

impl OrderRow {
    pub fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            user_id: r.get(1)?,
            product_id: r.get(2)?,
            quantity: r.get(3)?,
            unit_price_cents: r.get(4)?,
            total_cents: r.get(5)?,
            discount_code: r.get(6)?,
            shipping_address: r.get(7)?,
            status: r.get(8)?,
            internal_notes: r.get(9)?,
            created_at: r.get(10)?,
        })
    }

    pub fn view(&self, exposed: bool) -> serde_json::Value {
        if exposed {
            return serde_json::to_value(self).unwrap_or_default();
        }
        json!({
            "id": self.id,
            "user_id": self.user_id,
            "product_id": self.product_id,
            "quantity": self.quantity,
            "unit_price_cents": self.unit_price_cents,
            "total_cents": self.total_cents,
            "discount_code": self.discount_code,
            "shipping_address": self.shipping_address,
            "status": self.status,
            "created_at": self.created_at,
        })
    }
}

/// `ord_` and 8 to 32 ASCII alphanumerics.
pub fn valid_order_id(id: &str) -> bool {
    id.strip_prefix("ord_").is_some_and(|t| {
        (8..=32).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// Loads an order; `owner: None` is the `bola` weakness (and the admin's view).
pub(crate) async fn load_order(
    state: &AppState,
    id: String,
    owner: Option<String>,
) -> ApiResult<OrderRow> {
    if !valid_order_id(&id) {
        return Err(ApiError::not_found());
    }
    state
        .db
        .call(move |c| {
            let sql = format!(
                "SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1 AND (?2 IS NULL OR user_id = ?2)"
            );
            c.query_row(&sql, rusqlite::params![id, owner], OrderRow::from_row)
                .optional()
                .map_err(|e| ApiError::db(&sql, &e))
        })
        .await?
        .ok_or_else(ApiError::not_found)
}

/// The owner filter of the secure default.
fn owner_filter(state: &AppState, user: &AuthUser) -> Option<String> {
    (!state.config.vulns.has(Vuln::Bola)).then(|| user.id.clone())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    product_id: String,
    quantity: i64,
    discount_code: Option<String>,
    shipping_address: String,
}

/// What `mass-assignment` binds on create.
#[derive(Debug, Deserialize)]
pub struct CreateOrderOpen {
    product_id: String,
    quantity: i64,
    discount_code: Option<String>,
    shipping_address: String,
    unit_price_cents: Option<i64>,
    status: Option<String>,
}

fn check_quantity(q: i64) -> ApiResult<()> {
    if (1..=100).contains(&q) {
        Ok(())
    } else {
        Err(ApiError::unprocessable(
            "`quantity` must be between 1 and 100",
        ))
    }
}

pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    RawJson(body): RawJson,
) -> ApiResult<impl IntoResponse> {
    let req = if state.config.vulns.has(Vuln::MassAssignment) {
        parse_json::<CreateOrderOpen>(&body)?
    } else {
        let r = parse_json::<CreateOrder>(&body)?;
        CreateOrderOpen {
            product_id: r.product_id,
            quantity: r.quantity,
            discount_code: r.discount_code,
            shipping_address: r.shipping_address,
            unit_price_cents: None,
            status: None,
        }
    };
    if !valid_product_id(&req.product_id) {
        return Err(ApiError::unprocessable("`product_id` is malformed"));
    }
    check_quantity(req.quantity)?;
    plain_text("shipping_address", &req.shipping_address, 200)?;
    let percent_off = match &req.discount_code {
        None => 0,
        Some(code) if code.len() > 20 => {
            return Err(ApiError::unprocessable(
                "`discount_code` must have at most 20 characters",
            ));
        }
        Some(code) => DISCOUNTS
            .iter()
            .find(|(c, _)| c == code)
            .map(|(_, p)| *p)
            .ok_or_else(|| ApiError::unprocessable("`discount_code` is not valid"))?,
    };
    let id = new_id("ord");
    let exposed = state.config.vulns.has(Vuln::DataExposure);
    let (oid, uid) = (id.clone(), user.id.clone());
    let row = state
        .db
        .call(move |c| {
            const PRICE: &str = "SELECT price_cents FROM products WHERE id = ?1 AND published = 1";
            let price: i64 = c
                .query_row(PRICE, [&req.product_id], |r| r.get(0))
                .optional()
                .map_err(|e| ApiError::db(PRICE, &e))?
                .ok_or_else(|| ApiError::unprocessable("`product_id` names no product"))?;
            let unit = req.unit_price_cents.unwrap_or(price);
            let total = unit * req.quantity * (100 - percent_off) / 100;
            let status = req.status.unwrap_or_else(|| "pending".into());
            const SQL: &str = "INSERT INTO orders (id, user_id, product_id, quantity, unit_price_cents, total_cents,
                discount_code, shipping_address, status, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";
            c.execute(
                SQL,
                rusqlite::params![oid, uid, req.product_id, req.quantity, unit, total, req.discount_code, req.shipping_address, status, now()],
            )
            .map_err(|e| ApiError::db(SQL, &e))?;
            let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1");
            c.query_row(&sql, [oid], OrderRow::from_row).map_err(|e| ApiError::db(&sql, &e))
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::LOCATION, format!("/v2/orders/{id}"))],
        Json(row.view(exposed)),
    ))
}

pub async fn list(State(state): State<AppState>, user: AuthUser) -> ApiResult<impl IntoResponse> {
    let exposed = state.config.vulns.has(Vuln::DataExposure);
    let uid = user.id;
    let rows = state
        .db
        .call(move |c| {
            let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = ?1 ORDER BY created_at DESC, id LIMIT 100");
            let mut stmt = c.prepare_cached(&sql).map_err(|e| ApiError::db(&sql, &e))?;
            stmt.query_map([uid], OrderRow::from_row)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(|e| ApiError::db(&sql, &e))
        })
        .await?;
    let items: Vec<_> = rows.iter().map(|o| o.view(exposed)).collect();
    Ok(Json(json!({ "items": items })))
}

pub async fn get_one(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let owner = owner_filter(&state, &user);
    let row = load_order(&state, id, owner).await?;
    Ok(Json(row.view(state.config.vulns.has(Vuln::DataExposure))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateOrder {
    quantity: Option<i64>,
    shipping_address: Option<String>,
}

/// What `mass-assignment` binds on update.
#[derive(Debug, Deserialize)]
pub struct UpdateOrderOpen {
    quantity: Option<i64>,
    shipping_address: Option<String>,
    status: Option<String>,
    unit_price_cents: Option<i64>,
}

pub async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    RawJson(body): RawJson,
) -> ApiResult<impl IntoResponse> {
    let req = if state.config.vulns.has(Vuln::MassAssignment) {
        parse_json::<UpdateOrderOpen>(&body)?
    } else {
        let r = parse_json::<UpdateOrder>(&body)?;
        UpdateOrderOpen {
            quantity: r.quantity,
            shipping_address: r.shipping_address,
            status: None,
            unit_price_cents: None,
        }
    };
    if let Some(q) = req.quantity {
        check_quantity(q)?;
    }
    if let Some(a) = &req.shipping_address {
        plain_text("shipping_address", a, 200)?;
    }
    let owner = owner_filter(&state, &user);
    let current = load_order(&state, id, owner).await?;
    if current.status != "pending" && req.status.is_none() {
        return Err(ApiError::conflict("only pending orders can be changed"));
    }
    let unit = req.unit_price_cents.unwrap_or(current.unit_price_cents);
    let quantity = req.quantity.unwrap_or(current.quantity);
    let percent_off = current
        .discount_code
        .as_deref()
        .and_then(|code| DISCOUNTS.iter().find(|(c, _)| *c == code))
        .map_or(0, |(_, p)| *p);
    let total = unit * quantity * (100 - percent_off) / 100;
    let oid = current.id.clone();
    let row = state
        .db
        .call(move |c| {
            const SQL: &str = "UPDATE orders SET quantity = ?2, unit_price_cents = ?3, total_cents = ?4,
                shipping_address = COALESCE(?5, shipping_address), status = COALESCE(?6, status) WHERE id = ?1";
            c.execute(SQL, rusqlite::params![oid, quantity, unit, total, req.shipping_address, req.status])
                .map_err(|e| ApiError::db(SQL, &e))?;
            let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1");
            c.query_row(&sql, [oid], OrderRow::from_row).map_err(|e| ApiError::db(&sql, &e))
        })
        .await?;
    Ok(Json(row.view(state.config.vulns.has(Vuln::DataExposure))))
}

pub async fn remove(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let owner = owner_filter(&state, &user);
    let current = load_order(&state, id, owner).await?;
    state
        .db
        .call(move |c| {
            const SQL: &str = "DELETE FROM orders WHERE id = ?1";
            c.execute(SQL, [current.id])
                .map_err(|e| ApiError::db(SQL, &e))
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
