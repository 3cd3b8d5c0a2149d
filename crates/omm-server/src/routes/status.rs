//! Liveness, readiness and the site map.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;

use crate::state::{AppState, Readiness};

const ALIVE: &str = "I-AM-ALIVE";

fn text(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Readiness: 503 until the matcher's first load completed or when it is stale.
#[utoipa::path(get, path = "/status", tag = "status",
    responses(
        (status = 200, description = "Ready: `I-AM-ALIVE`", body = String, content_type = "text/plain"),
        (status = 503, description = "`INDEX-NOT-LOADED` or `INDEX-STALE`", body = String, content_type = "text/plain"),
    ))]
pub async fn status(State(state): State<AppState>) -> Response {
    readiness_response(&state)
}

/// Readiness under the Kubernetes name; same answers as `/status`.
#[utoipa::path(get, path = "/readyz", tag = "status",
    responses(
        (status = 200, description = "Ready", body = String, content_type = "text/plain"),
        (status = 503, description = "Not ready", body = String, content_type = "text/plain"),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    readiness_response(&state)
}

fn readiness_response(state: &AppState) -> Response {
    if !state.config.role_matcher {
        return text(StatusCode::OK, ALIVE);
    }
    match state.readiness() {
        Readiness::Ready => text(StatusCode::OK, ALIVE),
        Readiness::NotLoaded => text(StatusCode::SERVICE_UNAVAILABLE, "INDEX-NOT-LOADED"),
        Readiness::Stale => text(StatusCode::SERVICE_UNAVAILABLE, "INDEX-STALE"),
    }
}

/// Liveness: always 200 while the process serves requests.
#[utoipa::path(get, path = "/status/live", tag = "status",
    responses((status = 200, description = "`I-AM-ALIVE`", body = String, content_type = "text/plain")))]
pub async fn live() -> Response {
    text(StatusCode::OK, ALIVE)
}

/// Liveness under the Kubernetes name.
#[utoipa::path(get, path = "/livez", tag = "status",
    responses((status = 200, description = "`I-AM-ALIVE`", body = String, content_type = "text/plain")))]
pub async fn livez() -> Response {
    text(StatusCode::OK, ALIVE)
}

/// `/` goes to the status page (there is no UI in this server).
pub async fn root() -> Redirect {
    Redirect::to("/status")
}

/// The sorted list of route rules, in Flask's `<param>` syntax.
#[derive(Clone, Debug)]
pub struct SiteMap(pub std::sync::Arc<Vec<String>>);

/// Every route this server answers, sorted.
#[utoipa::path(get, path = "/site-map", tag = "status",
    responses((status = 200, description = "Sorted route rules", body = Vec<String>)))]
pub async fn site_map(axum::Extension(map): axum::Extension<SiteMap>) -> Json<Vec<String>> {
    Json(map.0.as_ref().clone())
}
