//! The cart service: HTTP in front of a ringkv client, as an application team would write it.
//!
//! A cart is an `ORMap<item, PNCounter>` stored under `cart:{id}`. Every change is a
//! read-merge-write ([`ringkv::Client::modify`]): concurrent versions (siblings) are merged and
//! the result written back, so an add is never lost, and a remove only removes what it saw.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /carts/{id}` | `200 {"cart", "items": {item: quantity}, "siblings"}`; an unknown cart is empty |
//! | `POST /carts/{id}/items` `{"item", "quantity"}` | adds `quantity` (1 to 1000) of `item` |
//! | `DELETE /carts/{id}/items/{item}` | removes `item` |
//!
//! Bad input is `400` with `{"error"}`; a quorum that cannot be met is `503` with the reason.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use ringkv::crdt::{ORMap, PNCounter};
use ringkv::{Client, ClientError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A cart: item name to quantity.
pub type Cart = ORMap<String, PNCounter>;

/// Longest cart id and item name, in bytes.
pub const MAX_NAME: usize = 128;
/// Largest quantity one request may add.
pub const MAX_QUANTITY: i64 = 1000;

/// What `GET` (and every change) answers.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CartView {
    /// The cart id.
    pub cart: String,
    /// Items with a positive quantity.
    pub items: BTreeMap<String, i64>,
    /// How many concurrent versions the read found (and merged).
    pub siblings: usize,
}

/// The body of `POST /carts/{id}/items`.
#[derive(Debug, Serialize, Deserialize)]
pub struct AddItem {
    /// The item.
    pub item: String,
    /// How many to add.
    pub quantity: i64,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> Self {
        let status = match &e {
            ClientError::InvalidInput { .. } => StatusCode::BAD_REQUEST,
            ClientError::Codec { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            // Quorum not met, outcome unknown, nodes unreachable: try again later.
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.to_string())
    }
}

fn bad(reason: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, reason.into())
}

fn check_name(what: &str, name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(bad(format!("{what} is empty")));
    }
    if name.len() > MAX_NAME {
        return Err(bad(format!(
            "{what} is {} bytes, the limit is {MAX_NAME}",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(bad(format!("{what} contains control characters")));
    }
    Ok(())
}

fn key(cart: &str) -> String {
    format!("cart:{cart}")
}

fn view(cart: String, value: &Cart, siblings: usize) -> CartView {
    CartView {
        cart,
        items: value
            .iter()
            .map(|(k, v)| (k.clone(), v.value()))
            .filter(|(_, q)| *q > 0)
            .collect(),
        siblings,
    }
}

/// The service's routes over `client`.
pub fn router(client: Client) -> Router {
    Router::new()
        .route("/carts/{id}", get(get_cart))
        .route("/carts/{id}/items", post(add_item))
        .route("/carts/{id}/items/{item}", delete(remove_item))
        .with_state(client)
}

async fn get_cart(
    State(client): State<Client>,
    Path(id): Path<String>,
) -> Result<Json<CartView>, ApiError> {
    check_name("cart id", &id)?;
    let read = client.get_merged::<Cart>(key(&id)).await?;
    Ok(Json(view(id, &read.value, read.siblings)))
}

async fn add_item(
    State(client): State<Client>,
    Path(id): Path<String>,
    body: Result<Json<AddItem>, JsonRejection>,
) -> Result<Json<CartView>, ApiError> {
    check_name("cart id", &id)?;
    let Json(add) = body.map_err(|e| {
        bad(format!(
            "body must be {{\"item\": string, \"quantity\": number}}: {e}"
        ))
    })?;
    check_name("item", &add.item)?;
    if !(1..=MAX_QUANTITY).contains(&add.quantity) {
        return Err(bad(format!(
            "quantity must be between 1 and {MAX_QUANTITY}, got {}",
            add.quantity
        )));
    }
    let written = client
        .modify(key(&id), |cart: &mut Cart, me| {
            cart.update(add.item.clone(), me, |q| q.add(me, add.quantity));
        })
        .await?;
    Ok(Json(view(id, &written.value, written.siblings)))
}

async fn remove_item(
    State(client): State<Client>,
    Path((id, item)): Path<(String, String)>,
) -> Result<Json<CartView>, ApiError> {
    check_name("cart id", &id)?;
    check_name("item", &item)?;
    let written = client
        .modify(key(&id), |cart: &mut Cart, me| {
            cart.remove(&item, me);
        })
        .await?;
    Ok(Json(view(id, &written.value, written.siblings)))
}
