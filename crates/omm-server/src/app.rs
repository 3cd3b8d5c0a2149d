//! The router: role-gated routes, OpenAPI document, JSON fallbacks and middleware.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::error::ApiError;
use crate::routes::{curator, dev, hasher, matcher, reviews, status};
use crate::state::AppState;

/// Path of the OpenAPI document.
pub const OPENAPI_JSON_PATH: &str = "/openapi/openapi.json";
/// Path of the Swagger UI.
pub const SWAGGER_PATH: &str = "/openapi/swagger";

/// Top of the OpenAPI document; the paths are collected from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Open Media Match API",
        description = "Hash media, keep banks of hashes of known harmful content, and match against them. Compatible with Open Media Match (Hasher-Matcher-Actioner 2.0); see docs/compatibility.md for the deliberate differences."
    ),
    tags(
        (name = "status", description = "Liveness, readiness, site map"),
        (name = "hasher", description = "Hashing of uploads and URLs (role hasher)"),
        (name = "matcher", description = "Lookups against the banks (role matcher)"),
        (name = "curator", description = "Banks, content, signal types, exchanges (role curator)"),
        (name = "dev", description = "Development helpers (only when not in production mode)"),
    )
)]
struct ApiDoc;

/// Builds the whole application for `state`.
pub fn build_router(state: AppState) -> Router {
    let config = state.config.clone();
    let mut api = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(status::status))
        .routes(routes!(status::readyz))
        .routes(routes!(status::live))
        .routes(routes!(status::livez))
        .routes(routes!(status::site_map));
    if config.role_hasher {
        api = api.routes(routes!(hasher::hash_get, hasher::hash_post));
    }
    if config.role_matcher {
        api = api
            .routes(routes!(matcher::raw_lookup))
            .routes(routes!(matcher::lookup_get, matcher::lookup_post))
            .routes(routes!(matcher::index_status))
            .routes(routes!(matcher::compare));
    }
    if config.role_curator {
        api = api
            .routes(routes!(curator::banks_list, curator::bank_create))
            .routes(routes!(
                curator::bank_get,
                curator::bank_update,
                curator::bank_delete
            ))
            .routes(routes!(curator::content_add))
            .routes(routes!(curator::signal_add))
            .routes(routes!(
                curator::content_get,
                curator::content_update,
                curator::content_delete
            ))
            .routes(routes!(curator::signal_types_list))
            .routes(routes!(curator::signal_type_update))
            .routes(routes!(curator::signal_type_index))
            .routes(routes!(curator::content_types_list))
            .routes(routes!(curator::exchange_apis))
            .routes(routes!(
                curator::exchange_api_get,
                curator::exchange_api_set
            ))
            .routes(routes!(curator::exchange_api_schema))
            .routes(routes!(curator::exchanges_list, curator::exchange_create))
            .routes(routes!(
                curator::exchange_get,
                curator::exchange_update,
                curator::exchange_delete
            ))
            .routes(routes!(curator::exchange_status))
            .routes(routes!(reviews::review_create, reviews::reviews_list));
    }
    if !config.production {
        api = api
            .routes(routes!(dev::setup_sample_example))
            .routes(routes!(dev::seed_banks));
    }
    let (router, openapi) = api.split_for_parts();

    let mut rules: Vec<String> = openapi.paths.paths.keys().map(|p| flask_rule(p)).collect();
    rules.extend(
        ["/", OPENAPI_JSON_PATH, SWAGGER_PATH]
            .iter()
            .map(|s| s.to_string()),
    );
    rules.sort();
    rules.dedup();
    let site_map = status::SiteMap(Arc::new(rules));

    let request_timeout = Duration::from_secs(config.request_timeout_seconds.max(1));
    let body_limit = usize::try_from(config.max_content_length).unwrap_or(usize::MAX);

    router
        .route("/", get(status::root))
        .merge(SwaggerUi::new(SWAGGER_PATH).url(OPENAPI_JSON_PATH, openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(site_map))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(request_timeout, timeout))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(
                    DefaultOnResponse::new()
                        .level(Level::INFO)
                        .latency_unit(tower_http::LatencyUnit::Micros),
                ),
        )
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}

/// `/c/bank/{bank_name}` becomes `/c/bank/<bank_name>`, Flask's spelling.
fn flask_rule(path: &str) -> String {
    path.replace('{', "<").replace('}', ">")
}

async fn not_found() -> ApiError {
    ApiError::not_found("The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "The method is not allowed for the requested URL.",
    )
}

async fn timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::unavailable("request timed out").into_response(),
    }
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else {
        "unknown panic".to_owned()
    };
    ApiError::internal(format!("handler panicked: {detail}")).into_response()
}
