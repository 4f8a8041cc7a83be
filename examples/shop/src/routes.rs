//! The routes, with the HTTP layer in front of them.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cache_runtime::http::CacheLayer;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;

use crate::db::{self, Db, DbError, NewProduct};

#[derive(Clone)]
struct Shop {
    db: Db,
    metrics: PrometheusHandle,
}

/// The shop's router. Product pages live in the HTTP layer's group
/// `http_products`, list pages in `http_lists`. Each page depends on what
/// its handler read through the cache, so a write of a product makes the
/// pages that show it misses, and only those.
pub fn app(db: Db, metrics: PrometheusHandle) -> Router {
    let cache = db.cache.clone();
    let pages = Router::new()
        .route("/products/{id}", get(show).put(replace).delete(remove))
        .route_layer(
            CacheLayer::new("http_products")
                .ttl(db.ttl(60))
                .cache(cache.clone()),
        );
    let lists = Router::new()
        .route("/products", get(list).post(create))
        .route_layer(CacheLayer::new("http_lists").ttl(db.ttl(30)).cache(cache));
    Router::new()
        .merge(pages)
        .merge(lists)
        .route("/metrics", get(render))
        .with_state(Shop { db, metrics })
}

/// The router with `/admin/database` besides: `PUT` `down` or `up` starts
/// or ends a simulated outage (every query fails), `GET` returns the read
/// queries tried during the last one, by what they read. For the load test.
pub fn app_with_faults(db: Db, metrics: PrometheusHandle) -> Router {
    let outage = db.outage.clone();
    app(db, metrics).route(
        "/admin/database",
        get({
            let outage = outage.clone();
            move || async move { Json(outage.tried()) }
        })
        .put(move |body: String| async move {
            outage.set(body.trim() == "down");
            StatusCode::NO_CONTENT
        }),
    )
}

/// A data-layer error as an HTTP response.
struct Failed(DbError);

impl IntoResponse for Failed {
    fn into_response(self) -> Response {
        let status = match self.0 {
            DbError::NotFound => StatusCode::NOT_FOUND,
            DbError::Sql(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, self.0.to_string()).into_response()
    }
}

async fn show(State(shop): State<Shop>, Path(id): Path<i64>) -> Result<impl IntoResponse, Failed> {
    db::get_product(&shop.db, id)
        .await
        .map(Json)
        .map_err(Failed)
}

#[derive(Deserialize)]
struct ListQuery {
    category: Option<String>,
    page: Option<i64>,
}

async fn list(
    State(shop): State<Shop>,
    Query(query): Query<ListQuery>,
) -> Result<impl IntoResponse, Failed> {
    let page = query.page.unwrap_or(0);
    db::list_products(&shop.db, query.category, page)
        .await
        .map(Json)
        .map_err(Failed)
}

async fn create(
    State(shop): State<Shop>,
    Json(input): Json<NewProduct>,
) -> Result<impl IntoResponse, Failed> {
    let created = db::create_product(&shop.db, input).await.map_err(Failed)?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn replace(
    State(shop): State<Shop>,
    Path(id): Path<i64>,
    Json(input): Json<NewProduct>,
) -> Result<impl IntoResponse, Failed> {
    db::update_product(&shop.db, id, input)
        .await
        .map(Json)
        .map_err(Failed)
}

async fn remove(State(shop): State<Shop>, Path(id): Path<i64>) -> Result<StatusCode, Failed> {
    db::delete_product(&shop.db, id).await.map_err(Failed)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn render(State(shop): State<Shop>) -> String {
    shop.metrics.render()
}
