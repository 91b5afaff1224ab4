//! `GET /graphql`: the GraphiQL explorer, off unless `graphiql = true`.
//!
//! depot's rule is that the binary serves only what is embedded in it and points no browser at
//! a third party. GraphiQL is the exception an operator may opt into for development: its
//! bundle (graphiql 3 with React 18, about 4 MB minified) would more than double what the
//! binary embeds, so it is loaded from a public CDN instead, at exact versions with integrity
//! hashes (a changed file is refused by the browser), under a CSP that allows that CDN for
//! scripts and styles and nothing else, and never inside a frame.

use super::AppState;
use crate::error::{Error, Result};
use actix_web::http::header;
use actix_web::{web, HttpResponse};

/// The page. The inline script's hash is in [`CSP`]; a unit test keeps the two in step.
const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>depot GraphiQL</title>
<link rel="stylesheet" href="https://unpkg.com/graphiql@3.8.3/graphiql.min.css" integrity="sha384-Mq3vbRBY71jfjQAt/DcjxUIYY33ksal4cgdRt9U/hNPvHBCaT2JfJ/PTRiPKf0aM" crossorigin="anonymous">
</head>
<body style="margin:0">
<div id="graphiql" style="height:100vh"></div>
<script src="https://unpkg.com/react@18.3.1/umd/react.production.min.js" integrity="sha384-DGyLxAyjq0f9SPpVevD6IgztCFlnMF6oW/XQGmfe+IsZ8TqEiDrcHkMLKI6fiB/Z" crossorigin="anonymous"></script>
<script src="https://unpkg.com/react-dom@18.3.1/umd/react-dom.production.min.js" integrity="sha384-gTGxhz21lVGYNMcdJOyq01Edg0jhn/c22nsx0kyqP0TxaV5WVdsSH1fSDUf5YJj1" crossorigin="anonymous"></script>
<script src="https://unpkg.com/graphiql@3.8.3/graphiql.min.js" integrity="sha384-HbRVEFG0JGJZeAHCJ9Xm2+tpknBQ7QZmNlO/DgZtkZ0aJSypT96YYGRNod99l9Ie" crossorigin="anonymous"></script>
<script>INIT</script>
</body>
</html>
"#;

/// Starts GraphiQL against this server's `/graphql` (same origin: `connect-src 'self'`).
const INIT: &str = "ReactDOM.createRoot(document.getElementById('graphiql')).render(React.createElement(GraphiQL, {fetcher: GraphiQL.createFetcher({url: '/graphql'})}));";

/// `'unsafe-inline'` for styles only: GraphiQL's components insert style elements at run time.
const CSP: &str = "default-src 'none'; script-src 'sha256-z26pt+OCv+5pHhn5/Fgn3+KXm+oa6hoaaal4RiWJYqA=' https://unpkg.com; style-src 'unsafe-inline' https://unpkg.com; font-src https://unpkg.com data:; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Serves the page when enabled; otherwise `GET /graphql` is a method this path does not serve.
pub async fn page(state: web::Data<AppState>) -> Result<HttpResponse> {
    if !state.service.config.graphiql {
        return Err(Error::MethodNotAllowed(
            "GraphiQL is off (graphiql = false); send queries with POST /graphql".into(),
        ));
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(PAGE.replace("INIT", INIT)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csp_hash_is_the_inline_scripts() {
        use base64::Engine;
        use sha2::Digest;
        let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(INIT));
        assert!(CSP.contains(&format!("'sha256-{hash}'")), "sha256-{hash}");
    }
}
