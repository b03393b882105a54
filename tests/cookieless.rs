//! Clients that refuse cookies: the probe, URL mode, link rewriting, the
//! upstream's cookie jar, and leaving URL mode.

mod support;

use std::sync::OnceLock;

use cloakroom::client::ticket_in as id_in;
use http::{HeaderMap, Request, StatusCode};
use support::*;

const NAME: &str = "CLOAKROOMSID";

/// A client that never keeps a cookie and wants HTML.
struct NoCookies {
    base: String,
}

impl NoCookies {
    fn new(proxy: &Proxy) -> NoCookies {
        NoCookies {
            base: format!("http://{}", proxy.addr),
        }
    }

    /// `target` is a path on the proxy or an absolute URL (as rewritten
    /// links are).
    fn url(&self, target: &str) -> String {
        if target.starts_with("http") {
            target.to_owned()
        } else {
            format!("{}{target}", self.base)
        }
    }

    async fn get(&self, target: &str) -> Page {
        let req = Request::get(self.url(target))
            .header("accept", "text/html")
            .body(empty())
            .unwrap();
        page(send(&http1(), req).await)
    }

    async fn post_form(&self, target: &str, fields: &[(&str, &str)]) -> Page {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let req = Request::post(self.url(target))
            .header("accept", "text/html")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(full(body))
            .unwrap();
        page(send(&http1(), req).await)
    }

    /// Enters URL mode the way a cookie-refusing browser does: probe, then
    /// the redirect carrying the ID. Returns the ID.
    async fn enter_url_mode(&self, target: &str) -> String {
        let probe = self.get(target).await;
        assert_eq!(probe.status, StatusCode::FOUND);
        let back = self.get(probe.location().unwrap()).await;
        assert_eq!(back.status, StatusCode::FOUND);
        let location = back.location().unwrap();
        id_in(location).unwrap_or_else(|| panic!("no ID in {location}"))
    }
}

fn page((status, headers, body): (StatusCode, HeaderMap, bytes::Bytes)) -> Page {
    Page {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// The `href`/`action` of the element with this id, entities decoded.
fn attr_of(html: &str, id: &str, attr: &str) -> String {
    let at = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}"));
    let tag_start = html[..at].rfind('<').unwrap();
    let tag_end = at + html[at..].find('>').unwrap();
    let tag = &html[tag_start..tag_end];
    let marker = format!("{attr}=\"");
    let start = tag.find(&marker).unwrap() + marker.len();
    let end = start + tag[start..].find('"').unwrap();
    tag[start..end].replace("&amp;", "&")
}

fn users_file(dir: &tempfile::TempDir) -> String {
    static HASH: OnceLock<String> = OnceLock::new();
    let hash = HASH.get_or_init(|| cloakroom::auth::password::hash("wonderland").unwrap());
    let path = dir.path().join("users.toml");
    std::fs::write(&path, format!("alice = \"{hash}\"\n")).unwrap();
    path.to_str().unwrap().to_owned()
}

fn assert_upstream_never_saw_the_id(upstream: &Upstream) {
    for seen in upstream.seen() {
        assert!(!seen.target.contains(NAME), "in the URL: {}", seen.target);
        assert!(
            !seen.target.contains("cloakroom-probe"),
            "the marker: {}",
            seen.target
        );
        assert!(
            !String::from_utf8_lossy(&seen.body).contains(NAME),
            "in the body"
        );
        for cookie in seen.all("cookie") {
            assert!(!cookie.contains(NAME), "in a cookie: {cookie}");
        }
    }
}

#[tokio::test]
async fn a_client_that_takes_cookies_never_sees_an_id_in_a_url() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;
    let mut b = Browser::new(&proxy);

    let first = b.get("/html/page?a=1").await;
    assert_eq!(first.status, StatusCode::FOUND);
    assert!(first
        .location()
        .unwrap()
        .starts_with("/html/page?a=1&cloakroom-probe=a"));
    assert!(b.session().is_some(), "the probe did not set the cookie");
    let second = b.get(first.location().unwrap()).await;
    assert_eq!(second.status, StatusCode::FOUND);
    assert_eq!(
        second.location(),
        Some("/html/page?a=1"),
        "the address bar must end clean"
    );
    let last = b.get("/html/page?a=1").await;
    assert_eq!(last.status, StatusCode::OK);
    assert!(
        !last.body.contains(NAME),
        "links were rewritten in cookie mode"
    );
    assert!(last.headers.get("x-robots-tag").is_none());

    let targets: Vec<String> = upstream.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(targets, ["/html/page?a=1"]);
}

#[tokio::test]
async fn a_client_that_refuses_cookies_is_served_in_url_mode() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;
    let c = NoCookies::new(&proxy);

    let first = c.get("/html/page?a=1").await;
    assert!(first
        .location()
        .unwrap()
        .starts_with("/html/page?a=1&cloakroom-probe=a"));
    let second = c.get(first.location().unwrap()).await;
    assert_eq!(second.status, StatusCode::FOUND);
    let location = second.location().unwrap().to_owned();
    let id = id_in(&location).unwrap();
    assert_eq!(location, format!("{}/html/page?a=1&{NAME}={id}", c.base));
    assert!(
        second.headers.get("set-cookie").is_none(),
        "URL mode got a cookie"
    );

    let page = c.get(&location).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.headers["referrer-policy"], "same-origin");
    assert_eq!(page.headers["x-robots-tag"], "noindex");
    assert_eq!(page.headers["cache-control"], "private, no-store");
    assert!(page.headers.get("content-length").is_none());

    let here = &c.base;
    assert_eq!(
        attr_of(&page.body, "next", "href"),
        format!("{here}/html/next?x=1&y=2&{NAME}={id}")
    );
    assert_eq!(
        attr_of(&page.body, "rel", "href"),
        format!("{here}/html/rel?{NAME}={id}#frag")
    );
    assert_eq!(
        attr_of(&page.body, "ext", "href"),
        "http://evil.example/steal"
    );
    assert_eq!(attr_of(&page.body, "proto", "href"), "//evil.example/");
    assert_eq!(attr_of(&page.body, "mail", "href"), "mailto:a@b.example");
    assert!(
        !page.body.contains("type=\"hidden\""),
        "a form got a field with the ID"
    );
    assert_eq!(
        attr_of(&page.body, "post", "action"),
        format!("{here}/.cloakroom/f/{id}/html/post")
    );
    assert!(
        page.body.contains("'<a href=\"/html/in-script\">'"),
        "a script was rewritten"
    );
    assert_eq!(
        page.body.matches(&id).count(),
        4,
        "the ID went somewhere unexpected"
    );

    let seen = upstream.only();
    assert_eq!(seen.target, "/html/page?a=1");
    assert_upstream_never_saw_the_id(&upstream);

    // Later requests with the ID are the same session, and get no probe.
    let next = c.get(&attr_of(&page.body, "next", "href")).await;
    assert_eq!(next.status, StatusCode::OK);
    assert!(next.body.contains(&id));
}

#[tokio::test]
async fn a_client_that_also_drops_query_strings_is_not_probed_forever() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;
    let c = NoCookies::new(&proxy);
    let mut redirects = 0;
    loop {
        let page = c.get("/html/page").await;
        if page.status == StatusCode::OK {
            break;
        }
        redirects += 1;
        assert!(redirects <= 3, "probed in a loop");
    }
    assert!(redirects >= 1);
}

#[tokio::test]
async fn requests_that_are_not_navigations_are_never_probed() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;
    for (method, accept) in [
        ("GET", "application/json"),
        ("GET", "image/avif,image/webp,*/*"),
        ("GET", "*/*"),
        ("POST", "text/html"),
        ("HEAD", "*/*"),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(proxy.url("/html/page"))
            .header("accept", accept)
            .body(empty())
            .unwrap();
        let (status, headers, _) = send(&http1(), req).await;
        assert_eq!(status, StatusCode::OK, "{method} {accept}");
        assert!(headers.get("location").is_none());
    }
}

#[tokio::test]
async fn a_cookieless_client_logs_in_follows_links_and_submits_forms() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        &upstream,
        "",
        &format!(
            "[auth]\nusers_file = {:?}\nprotect = [\"/html\"]",
            users_file(&dir)
        ),
    )
    .await;
    let c = NoCookies::new(&proxy);

    // The protected page folds the probe into the login redirect.
    let first = c.get("/html/start").await;
    assert_eq!(first.status, StatusCode::FOUND);
    let login_url = first.location().unwrap().to_owned();
    assert!(
        login_url.starts_with("/.cloakroom/login?return_to=%2Fhtml%2Fstart"),
        "{login_url}"
    );
    let form = c.get(&login_url).await;
    assert_eq!(
        form.status,
        StatusCode::OK,
        "the login page must never be probed"
    );
    assert!(form.input(NAME).is_none(), "the page holds a session ID");
    let csrf = form.input("csrf").unwrap();
    let done = c
        .post_form(
            "/.cloakroom/login",
            &[
                ("csrf", &csrf),
                ("username", "alice"),
                ("password", "wonderland"),
                ("return_to", "/html/start"),
            ],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    let location = done.location().unwrap().to_owned();
    id_in(&location).expect("the redirect after login carries no ID");
    assert!(
        location.starts_with(&format!("{}/html/start?", c.base)),
        "{location}"
    );
    assert!(
        done.headers.get("set-cookie").is_none(),
        "a URL-mode session got a cookie"
    );

    let start = c.get(&location).await;
    assert_eq!(start.status, StatusCode::OK);
    let next = c.get(&attr_of(&start.body, "next", "href")).await;
    assert_eq!(next.status, StatusCode::OK);
    // A GET form: the browser replaces the action's query with the fields;
    // the ID rides in the action's path and comes back by a 307.
    let action = attr_of(&start.body, "search", "action");
    let via = c.get(&format!("{action}?q=v")).await;
    assert_eq!(via.status, StatusCode::TEMPORARY_REDIRECT);
    let search = c.get(via.location().unwrap()).await;
    assert_eq!(search.status, StatusCode::OK);
    let via = c
        .post_form(&attr_of(&start.body, "post", "action"), &[("m", "hi")])
        .await;
    assert_eq!(via.status, StatusCode::TEMPORARY_REDIRECT);
    let post = c.post_form(via.location().unwrap(), &[("m", "hi")]).await;
    assert_eq!(post.status, StatusCode::OK);

    let seen = upstream.seen();
    let targets: Vec<&str> = seen.iter().map(|s| s.target.as_str()).collect();
    assert_eq!(
        targets,
        [
            "/html/start",
            "/html/next?x=1&y=2",
            "/html/search?q=v",
            "/html/post"
        ]
    );
    for s in &seen {
        assert_eq!(
            s.header("x-forwarded-user").as_deref(),
            Some("alice"),
            "{}",
            s.target
        );
    }
    assert_eq!(seen[3].body, "m=hi");
    assert_upstream_never_saw_the_id(&upstream);

    // The ticket serves no other client: another User-Agent with the same
    // link is sent to the login page.
    let req = Request::get(c.url(&location))
        .header("accept", "text/html")
        .header("user-agent", "another browser")
        .body(empty())
        .unwrap();
    let (status, headers, _) = send(&http1(), req).await;
    assert_eq!(status, StatusCode::FOUND);
    assert!(headers["location"]
        .to_str()
        .unwrap()
        .starts_with("/.cloakroom/login"));

    // Nor does its ID alone, sent as a cookie (found by an outside review:
    // the part before the dot is the session ID).
    let ticket = id_in(&location).unwrap();
    let (bare, _tag) = ticket.split_once('.').expect("a ticket is ID.TAG");
    let req = Request::get(c.url("/html/start"))
        .header("accept", "text/html")
        .header("user-agent", "another browser")
        .header("cookie", format!("{NAME}={bare}"))
        .body(empty())
        .unwrap();
    let before = upstream.seen().len();
    let (status, _, _) = send(&http1(), req).await;
    assert_eq!(
        status,
        StatusCode::FOUND,
        "a URL-mode session was taken over by cookie"
    );
    assert_eq!(upstream.seen().len(), before, "the upstream was reached");
}

#[tokio::test]
async fn a_gzipped_page_is_decoded_and_rewritten() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;
    let c = NoCookies::new(&proxy);
    let id = c.enter_url_mode("/html/gz").await;
    let page = c.get(&format!("/html/gz?{NAME}={id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.headers.get("content-encoding").is_none());
    assert_eq!(
        attr_of(&page.body, "next", "href"),
        format!("{}/html/next?x=1&y=2&{NAME}={id}", c.base)
    );
}

#[tokio::test]
async fn redirects_carry_the_id_only_to_this_site() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;
    let c = NoCookies::new(&proxy);
    let id = c.enter_url_mode("/html/page").await;
    let here = c.get(&format!("/html/redirect?{NAME}={id}")).await;
    assert_eq!(
        here.location(),
        Some(format!("{}/html/landed?{NAME}={id}", c.base).as_str())
    );
    let away = c.get(&format!("/html/away?{NAME}={id}")).await;
    assert_eq!(away.location(), Some("http://evil.example/x"));
}

#[tokio::test]
async fn the_upstreams_cookies_are_kept_for_a_client_in_url_mode() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;
    let c = NoCookies::new(&proxy);
    let id = c.enter_url_mode("/html/page").await;

    let set = c
        .get(&format!(
            "/html/page?set=app%3D42%3B%20Path%3D%2Fhtml&{NAME}={id}"
        ))
        .await;
    assert_eq!(set.status, StatusCode::OK);
    for cookie in set.headers.get_all("set-cookie") {
        assert!(
            !cookie.to_str().unwrap().starts_with("app="),
            "passed to a client that drops it"
        );
    }
    c.get(&format!("/html/next?{NAME}={id}")).await;
    assert_eq!(
        upstream.seen().last().unwrap().header("cookie").as_deref(),
        Some("app=42")
    );
    c.get(&format!("/elsewhere?{NAME}={id}")).await; // outside Path=/html
    assert!(upstream.seen().last().unwrap().header("cookie").is_none());

    c.get(&format!(
        "/html/page?set=app%3D%3B%20Max-Age%3D0%3B%20Path%3D%2Fhtml&{NAME}={id}"
    ))
    .await;
    c.get(&format!("/html/next?{NAME}={id}")).await;
    assert!(
        upstream.seen().last().unwrap().header("cookie").is_none(),
        "a deleted cookie came back"
    );
}

/// A URL-mode page's links carry the ticket: no field aimed at a CDN or an
/// nginx cache may let one keep it.
#[tokio::test]
async fn url_mode_pages_keep_no_cdn_caching_field() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;
    let c = NoCookies::new(&proxy);
    let id = c.enter_url_mode("/html/page").await;
    let page = c
        .get(&format!(
            "/respond-with?h=Content-Type%3Atext%2Fhtml&h=CDN-Cache-Control%3Amax-age%3D600\
             &h=Surrogate-Control%3Amax-age%3D600&h=X-Accel-Expires%3A600&{NAME}={id}"
        ))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.headers["cache-control"], "private, no-store");
    for name in ["cdn-cache-control", "surrogate-control", "x-accel-expires"] {
        assert!(!page.headers.contains_key(name), "{name} kept");
    }
}

#[tokio::test]
async fn a_valid_cookie_wins_over_an_id_in_the_url() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;
    let c = NoCookies::new(&proxy);
    let id = c.enter_url_mode("/html/page").await;

    // A client with a cookie session of its own follows a link that
    // carries a URL-mode ticket (its own or not): the cookie wins, and the
    // address is cleaned.
    let mut b = Browser::new(&proxy);
    let probe = b.get("/html/page").await;
    b.get(probe.location().unwrap()).await;
    assert!(b.session().is_some());
    let page = b.get(&format!("/html/page?a=1&{NAME}={id}")).await;
    assert_eq!(page.status, StatusCode::FOUND);
    assert_eq!(page.location(), Some("/html/page?a=1"));
    let clean = b.get("/html/page?a=1").await;
    assert_eq!(clean.status, StatusCode::OK);
    assert!(
        !clean.body.contains(&id),
        "still rewritten after the cookie came back"
    );
}

#[tokio::test]
async fn forged_url_ids_count_as_none() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;
    let c = NoCookies::new(&proxy);
    let forged = "A".repeat(54);
    let page = c.get(&format!("/html/page?{NAME}={forged}")).await;
    assert_eq!(page.status, StatusCode::FOUND);
    assert!(page
        .location()
        .unwrap()
        .starts_with("/html/page?cloakroom-probe=a"));
    // Not a navigation: served with a fresh session, the forged ID stripped.
    let req = Request::get(proxy.url(&format!("/html/api?{NAME}={forged}")))
        .body(empty())
        .unwrap();
    let (status, _, body) = send(&http1(), req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!String::from_utf8_lossy(&body).contains(&forged));
    assert_eq!(upstream.seen().last().unwrap().target, "/html/api");
}

#[tokio::test]
async fn cookieless_false_means_cookies_only() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "[session]\ncookieless = false").await;
    let c = NoCookies::new(&proxy);
    let page = c.get("/html/page").await;
    assert_eq!(
        page.status,
        StatusCode::OK,
        "probed with cookieless = false"
    );
    assert!(!page.body.contains(NAME));
}

#[tokio::test]
async fn a_large_page_is_rewritten_as_it_streams() {
    use http_body_util::BodyExt;
    const BYTES: u64 = 16 * 1024 * 1024;
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;
    let c = NoCookies::new(&proxy);
    let id = c.enter_url_mode("/html/page").await;

    let req = Request::get(proxy.url(&format!("/stream.html?bytes={BYTES}&{NAME}={id}")))
        .header("accept", "text/html")
        .body(empty())
        .unwrap();
    let resp = within(http1().request(req)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers().get("content-length").is_none(),
        "a stale length was kept"
    );
    // The upstream holds back everything after its first 64 KiB until the
    // client has rewritten bytes: a rewriter that buffered the page would hang.
    let mut body = resp.into_body();
    let mut text = Vec::new();
    let mut released = false;
    while let Some(frame) = within(body.frame()).await {
        if let Some(data) = frame.unwrap().data_ref() {
            text.extend_from_slice(data);
            if !released {
                released = true;
                upstream.release_download();
            }
        }
    }
    let text = String::from_utf8(text).unwrap();
    let links = (BYTES as usize) / LINK.len();
    let rewritten = format!(
        "<p><a href=\"http://{}/next?{NAME}={id}\">link</a></p>\n",
        proxy.addr
    );
    assert_eq!(text.matches(&rewritten).count(), links);
}
