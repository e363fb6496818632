//! The web console: three static files compiled into the binary
//! (`include_str!`), plain HTML, CSS and JavaScript with no build step and
//! nothing fetched from elsewhere, so it works offline and the Rust build
//! needs no Node. The page talks only to `/api/v1` with the bearer token
//! the operator typed (kept in the tab's `sessionStorage`, never a cookie).

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::routing::get;

const INDEX: &str = include_str!("../../console/index.html");
const SCRIPT: &str = include_str!("../../console/app.js");
const STYLE: &str = include_str!("../../console/app.css");

/// Only this origin's files and API: no inline script, no third party.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Where the script and the style sheet are served.
pub const SCRIPT_PATH: &str = "/console/app.js";
pub const STYLE_PATH: &str = "/console/app.css";

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let page = |body: &'static str, kind: &'static str| {
        move || async move { ([(CONTENT_TYPE, kind), (CACHE_CONTROL, "no-cache"), (CONTENT_SECURITY_POLICY, CSP)], body) }
    };
    Router::new()
        .route("/", get(page(INDEX, "text/html; charset=utf-8")))
        .route(SCRIPT_PATH, get(page(SCRIPT, "text/javascript; charset=utf-8")))
        .route(STYLE_PATH, get(page(STYLE, "text/css; charset=utf-8")))
}
