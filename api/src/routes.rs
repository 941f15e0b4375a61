//! Every route of both listeners, in one table ([`ROUTES`]) that both builds the routers
//! and is checked against `openapi.json` (the unit tests below): axum cannot list a
//! router's routes, so routes are added here and nowhere else.
//!
//! Each entry names its handler through the state it runs on, which also decides its
//! listener: the api's `AppState` and the webhook endpoint serve on `api.listen`, the
//! statistics, `/metrics` and `/openapi.json` on `api.operator_listen`.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;

use crate::events::{self, EventsState};
use crate::metrics::{self, ApiMetrics};
use crate::stats_routes::{self as stats, StatsState};
use crate::{health, index_routes, profile_routes, web, AppState};
use Handler::{App, Events, Operator, Stats};

/// The OpenAPI 3.1 description of every route, served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `api.listen`.
    Public,
    /// `api.operator_listen`.
    Operator,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    fn filter(self) -> MethodFilter {
        match self {
            Method::Get => MethodFilter::GET,
            Method::Post => MethodFilter::POST,
        }
    }

    /// The key of the operation in an OpenAPI path item.
    pub fn openapi_key(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
        }
    }
}

/// A handler, by the state it needs; `on(filter, handler)` with the route's method.
#[derive(Clone, Copy)]
pub(crate) enum Handler {
    App(fn(MethodFilter) -> MethodRouter<AppState>),
    Events(fn(MethodFilter) -> MethodRouter<EventsState>),
    Stats(fn(MethodFilter) -> MethodRouter<StatsState>),
    Operator(fn(MethodFilter) -> MethodRouter<ApiMetrics>),
}

pub struct Route {
    pub method: Method,
    /// axum's template: `{name}` is one segment, `{*name}` the rest of the path.
    pub path: &'static str,
    handler: Handler,
}

impl Route {
    pub fn listener(&self) -> Listener {
        match self.handler {
            Handler::App(_) | Handler::Events(_) => Listener::Public,
            Handler::Stats(_) | Handler::Operator(_) => Listener::Operator,
        }
    }

    /// The path as OpenAPI writes it (`{*name}` becomes `{name}`).
    pub fn openapi_path(&self) -> String {
        self.path.replace("{*", "{")
    }
}

const fn get(path: &'static str, handler: Handler) -> Route {
    Route {
        method: Method::Get,
        path,
        handler,
    }
}

const fn post(path: &'static str, handler: Handler) -> Route {
    Route {
        method: Method::Post,
        path,
        handler,
    }
}

// One line per route: a table reads better than rustfmt's wrapping of it.
#[rustfmt::skip]
pub const ROUTES: &[Route] = &[
    // The registry index protocol (docs/protocol.md).
    get("/index/static", App(|m| on(m, index_routes::index_static))),
    get("/index/dynamic", App(|m| on(m, index_routes::index_dynamic))),
    get("/profiles/{profile}/index/static", App(|m| on(m, profile_routes::profile_static))),
    get("/profiles/{profile}/index/dynamic", App(|m| on(m, profile_routes::profile_dynamic))),
    // Pages, icons and search (docs/web-and-icons.md).
    get("/", App(|m| on(m, web::index))),
    get("/repository/{*name}", App(|m| on(m, web::repository))),
    get("/icons/{file}", App(|m| on(m, web::icon))),
    get("/v1/search", App(|m| on(m, web::v1_search))),
    // Probes.
    get("/healthz", App(|m| on(m, health::healthz))),
    get("/readyz", App(|m| on(m, health::readyz))),
    // Webhooks.
    post("/events", Events(|m| on(m, events::receive))),
    // Statistics (docs/history.md).
    get("/stats/images", Stats(|m| on(m, stats::images))),
    get("/stats/images/older-than", Stats(|m| on(m, stats::images_older_than))),
    get("/stats/images/not-pulled", Stats(|m| on(m, stats::images_not_pulled))),
    get("/stats/images/most-tags", Stats(|m| on(m, stats::most_tagged))),
    get("/stats/counts", Stats(|m| on(m, stats::counts))),
    get("/stats/blobs/orphaned", Stats(|m| on(m, stats::orphaned_blobs))),
    get("/stats/manifests/missing-blobs", Stats(|m| on(m, stats::missing_blobs))),
    get("/stats/deletions", Stats(|m| on(m, stats::deletions))),
    get("/stats/activity", Stats(|m| on(m, stats::activity))),
    // Operations.
    get("/metrics", Operator(|m| on(m, metrics::serve))),
    get("/openapi.json", Operator(|m| on(m, openapi))),
];

/// A router state: which handlers of [`ROUTES`] run on it.
pub(crate) trait RouteState: Clone + Send + Sync + 'static {
    fn handler(handler: Handler) -> Option<fn(MethodFilter) -> MethodRouter<Self>>;
}

macro_rules! route_states {
    ($($variant:ident => $state:ty),*) => {$(
        impl RouteState for $state {
            fn handler(handler: Handler) -> Option<fn(MethodFilter) -> MethodRouter<Self>> {
                match handler {
                    Handler::$variant(handler) => Some(handler),
                    _ => None,
                }
            }
        }
    )*};
}

route_states!(App => AppState, Events => EventsState, Stats => StatsState, Operator => ApiMetrics);

/// The routes of [`ROUTES`] that run on state `S`: with `AppState` all of `api.listen`
/// but `POST /events` (`EventsState`); `StatsState` the statistics, `ApiMetrics`
/// `/metrics` and `/openapi.json`.
pub(crate) fn router<S: RouteState>() -> Router<S> {
    ROUTES.iter().fold(Router::new(), |router, route| {
        match S::handler(route.handler) {
            Some(handler) => router.route(route.path, handler(route.method.filter())),
            None => router,
        }
    })
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;
    use crate::error::ErrorCode;

    const HTTP_METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    fn document() -> Value {
        serde_json::from_str(OPENAPI_JSON).expect("openapi.json is JSON")
    }

    #[test]
    fn the_document_describes_exactly_the_routes() {
        let doc = document();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                let item = item.as_object().unwrap();
                HTTP_METHODS
                    .iter()
                    .filter(|method| item.contains_key(**method))
                    .map(|method| (path.clone(), (*method).to_owned()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let routed: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.openapi_path(), r.method.openapi_key().to_owned()))
            .collect();
        assert_eq!(routed.len(), ROUTES.len(), "a route is listed twice");
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty(),
            "not in openapi.json: {undocumented:?}"
        );
        assert!(
            unrouted.is_empty(),
            "in openapi.json but not routed: {unrouted:?}"
        );
    }

    #[test]
    fn the_document_says_which_listener_serves_each_path() {
        let doc = document();
        for route in ROUTES {
            let expected = match route.listener() {
                Listener::Public => "public",
                Listener::Operator => "operator",
            };
            assert_eq!(
                doc["paths"][route.openapi_path()]["x-listener"],
                expected,
                "{}",
                route.path
            );
        }
    }

    #[test]
    fn path_parameters_are_declared() {
        let doc = document();
        for route in ROUTES {
            let path = route.openapi_path();
            let operation = &doc["paths"][&path][route.method.openapi_key()];
            let declared: BTreeSet<&str> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            let templated: BTreeSet<&str> = path
                .split('{')
                .skip(1)
                .map(|rest| rest.split('}').next().unwrap())
                .collect();
            assert_eq!(declared, templated, "{path}");
        }
    }

    #[test]
    fn every_json_error_is_the_error_schema() {
        let doc = document();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                if !HTTP_METHODS.contains(&method.as_str()) {
                    continue;
                }
                for (status, response) in operation["responses"].as_object().unwrap() {
                    let Some(json) = response["content"].get("application/json") else {
                        continue;
                    };
                    if status.starts_with('4') || status.starts_with('5') {
                        assert_eq!(
                            json["schema"]["$ref"], "#/components/schemas/Error",
                            "{method} {path} {status}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_error_schema_lists_every_code() {
        let doc = document();
        let listed = &doc["components"]["schemas"]["Error"]["properties"]["error"]["enum"];
        let codes: Vec<Value> = ErrorCode::ALL
            .iter()
            .map(|c| serde_json::to_value(c).unwrap())
            .collect();
        assert_eq!(listed, &Value::Array(codes));
    }
}
