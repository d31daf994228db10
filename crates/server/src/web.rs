//! The browser files, embedded in the binary: the demo page, the client
//! library (as an ES module and as a plain script), the service worker, the
//! web app manifest and icons, and the operator's dashboard (`/admin`). Sources in `web/` at the repository root.

use std::sync::OnceLock;

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("../../../web/index.html");
const LIBRARY: &str = include_str!("../../../web/tocsin.js");
const WORKER: &str = include_str!("../../../web/sw.js");
const MANIFEST: &str = include_str!("../../../web/manifest.webmanifest");
const ICON_SVG: &str = include_str!("../../../web/icon.svg");
const ICON_192: &[u8] = include_bytes!("../../../web/icon-192.png");
const ICON_512: &[u8] = include_bytes!("../../../web/icon-512.png");
const ADMIN: &str = include_str!("../../../web/admin/index.html");
const ADMIN_JS: &str = include_str!("../../../web/admin/admin.js");
const ADMIN_CSS: &str = include_str!("../../../web/admin/admin.css");
const ADMIN_DOM_JS: &str = include_str!("../../../web/admin/dom.js");
const ADMIN_AB_JS: &str = include_str!("../../../web/admin/ab.js");

/// `/tocsin.global.js`: the module turned into a plain script that defines
/// `window.Tocsin` (the module's `export` keywords removed, its default
/// export assigned to `globalThis.Tocsin`, all inside a function scope).
pub fn global_library() -> &'static str {
    static GLOBAL: OnceLock<String> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        let body: String = LIBRARY
            .lines()
            .map(|l| {
                if let Some(rest) = l.strip_prefix("export default ") {
                    format!("globalThis.Tocsin = {rest}")
                } else if let Some(rest) = l.strip_prefix("export ") {
                    rest.to_owned()
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        format!("(function () {{\n'use strict';\n{body}\n}})();\n")
    })
}

fn file(content_type: &'static str, body: impl IntoResponse) -> Response {
    ([(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")], body).into_response()
}

/// The dashboard's Content-Security-Policy: its own files only (no inline
/// script or style, nothing from elsewhere), never inside a frame, no
/// `<base>` or form posts elsewhere, no plugins.
pub const ADMIN_CSP: &str =
    "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'";

/// A file of the operator's dashboard, which handles an admin token: with
/// the security headers (CSP, no sniffing, no referrer).
fn admin_file(content_type: &'static str, body: &'static str) -> Response {
    use axum::http::header::{CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS};
    (
        [
            (CONTENT_TYPE, content_type),
            (CACHE_CONTROL, "no-cache"),
            (CONTENT_SECURITY_POLICY, ADMIN_CSP),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (REFERRER_POLICY, "no-referrer"),
            (X_FRAME_OPTIONS, "DENY"),
        ],
        body,
    )
        .into_response()
}

/// The routes serving the browser files.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { file("text/html; charset=utf-8", INDEX) }))
        .route("/tocsin.js", get(|| async { file("text/javascript; charset=utf-8", LIBRARY) }))
        .route("/tocsin.global.js", get(|| async { file("text/javascript; charset=utf-8", global_library()) }))
        .route("/sw.js", get(|| async { file("text/javascript; charset=utf-8", WORKER) }))
        .route("/manifest.webmanifest", get(|| async { file("application/manifest+json", MANIFEST) }))
        .route("/icon.svg", get(|| async { file("image/svg+xml", ICON_SVG) }))
        .route("/icon-192.png", get(|| async { file("image/png", ICON_192) }))
        .route("/icon-512.png", get(|| async { file("image/png", ICON_512) }))
        // The operator's dashboard: static files; everything it shows comes
        // from the API, with the token the operator signs in with.
        .route("/admin", get(|| async { admin_file("text/html; charset=utf-8", ADMIN) }))
        .route("/admin/admin.js", get(|| async { admin_file("text/javascript; charset=utf-8", ADMIN_JS) }))
        .route("/admin/admin.css", get(|| async { admin_file("text/css; charset=utf-8", ADMIN_CSS) }))
        .route("/admin/dom.js", get(|| async { admin_file("text/javascript; charset=utf-8", ADMIN_DOM_JS) }))
        .route("/admin/ab.js", get(|| async { admin_file("text/javascript; charset=utf-8", ADMIN_AB_JS) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_script_has_no_module_syntax_left() {
        let g = global_library();
        assert!(!g.lines().any(|l| l.starts_with("export ")), "{g}");
        assert!(g.contains("globalThis.Tocsin = { isSupported"));
        assert!(g.starts_with("(function () {"));
    }
}
