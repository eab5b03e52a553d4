//! The chat page's files, built into the binary (`include_bytes!` of
//! `web/src/`), so `chat-server` alone serves the page: no build step, no
//! files beside the binary.
//!
//! The page is plain JavaScript modules the browser loads as they are; see
//! `web/README.md` and `docs/web.md`.

use http::{HeaderValue, Response, StatusCode, header};

use super::{ResponseBody, full, plain};

/// Path, content type, bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "/index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../web/src/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/src/app.js"),
    ),
    (
        "/commands.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/src/commands.js"),
    ),
    (
        "/grpc-web.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/src/grpc-web.js"),
    ),
    (
        "/proto.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/src/proto.js"),
    ),
    (
        "/favicon.svg",
        "image/svg+xml",
        include_bytes!("../../web/src/favicon.svg"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/src/style.css"),
    ),
];

/// Answers a GET for `path`.
pub(super) fn serve(path: &str) -> Response<ResponseBody> {
    let path = if path == "/" { "/index.html" } else { path };
    let Some((_, content_type, bytes)) = FILES.iter().find(|(p, _, _)| *p == path) else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    let mut response = Response::new(full(*bytes));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The page only ever loads its own files and talks to its own origin:
    // even if some text slipped into the DOM as markup, the browser would
    // run no script it brought.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
