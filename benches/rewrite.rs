//! HTML rewriting throughput for clients in URL mode, against plain
//! pass-through of the same page in the same run.
//!
//! Run: `cargo bench --bench rewrite`. Two pages:
//! - `html_1MB`: ~1 MB of realistic HTML: navigation, articles with inline
//!   links (relative, root-relative, absolute to this host and to others,
//!   mailto, fragments), forms, scripts;
//! - `dense_1.2MB`: the link-dense page `benches/compare.sh` serves through
//!   PHP's trans-sid rewriter (12,600 links, one in ten off-site), with two
//!   floors beside the rewrite: lol_html with no handler (its tokenizer
//!   alone), and lol_html with every selector of the rewriter and handlers
//!   that do nothing (what any handler design costs at least).

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use lol_html::element;
use lol_html::send::{HtmlRewriter, Settings};

use cloakroom::body::ProxyBody;
use cloakroom::error::BoxError;
use cloakroom::rewrite::body::{rewrite, Charset, Coding};
use cloakroom::rewrite::html::rewrite_chunks;
use cloakroom::rewrite::link::{rewrite_attribute, Carry, Origin, Ticket};

const CHUNK: usize = 16 * 1024;

// The proxy's own allocator (src/main.rs), so that the figures are its.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn page() -> String {
    let mut html = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Ledger</title>\
         <link rel=\"stylesheet\" href=\"/static/app.css\"><script src=\"/static/app.js\"></script></head><body>\n\
         <nav><a href=\"/\">Home</a> <a href=\"/accounts\">Accounts</a> <a href=\"/reports?year=2024&amp;q=4\">Reports</a> \
         <a href=\"https://help.example.com/\">Help</a></nav>\n",
    );
    let mut i = 0;
    while html.len() < 1_000_000 {
        i += 1;
        html.push_str(&format!(
            "<article id=\"a{i}\"><h2><a href=\"/entries/{i}\">Entry {i}</a></h2>\
             <p>Posted to <a href=\"../ledger/{i}?view=full#top\">the ledger</a> by \
             <a href=\"mailto:clerk{i}@example.com\">clerk {i}</a>. Lorem ipsum dolor sit amet, \
             consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore \
             magna aliqua. See <a href=\"http://127.0.0.1:8000/abs/{i}\">this</a>, \
             <a href=\"https://partner.example.net/ref?id={i}\">our partner</a> and \
             <a href=\"#a{i}\">a link to here</a>.</p>\
             <form method=\"post\" action=\"/entries/{i}/comment\"><input name=\"c\"><button>Send</button></form>\
             <script>track({i}, '<a href=\"/ignored\">');</script></article>\n"
        ));
    }
    html.push_str("</body></html>\n");
    html
}

/// The page of `benches/compare.sh`, byte for byte.
fn dense_page() -> String {
    let rows: Vec<String> = (0..12600)
        .map(|i| {
            if i % 10 == 9 {
                format!("<li><a href=\"https://elsewhere.example/ref/{i}?from=list\">Partner {i}</a> and a few words of text</li>")
            } else {
                format!("<li><a href=\"/app/item/{i}?sort=name&amp;page={}\">Item number {i}</a> with a description</li>", i % 50)
            }
        })
        .collect();
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Catalogue</title></head><body><ul>\n{}\n</ul></body></html>\n",
        rows.join("\n")
    )
}

/// lol_html over `chunks` with `selectors` matched and nothing done.
fn lol_html_floor(chunks: &[&[u8]], selectors: &[&str]) -> usize {
    let mut out = Vec::new();
    let mut settings = Settings::new_send().with_encoding(
        lol_html::AsciiCompatibleEncoding::new(encoding_rs::UTF_8)
            .expect("UTF-8 is ASCII-compatible"),
    );
    for selector in selectors {
        settings = settings.append_element_content_handler(element!(selector, |_| Ok(())));
    }
    let mut rewriter = HtmlRewriter::new(settings, |c: &[u8]| out.extend_from_slice(c));
    for chunk in chunks {
        rewriter.write(chunk).expect("no handler fails");
    }
    rewriter.end().expect("no handler fails");
    out.len()
}

fn chunked_body(page: &Bytes) -> ProxyBody {
    let chunks: Vec<Result<Frame<Bytes>, BoxError>> = (0..page.len())
        .step_by(CHUNK)
        .map(|i| Ok(Frame::data(page.slice(i..(i + CHUNK).min(page.len())))))
        .collect();
    BodyExt::boxed(StreamBody::new(futures_util::stream::iter(chunks)))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let page = Bytes::from(page());
    let origin = Origin::new("http", "127.0.0.1:8000", "/ledger/index.html").unwrap();
    let ticket = Ticket {
        name: "CLOAKROOMSID".into(),
        id: "haqgFfBNTIx5IDOJYkm4tQAAAABrCEDDxURDBn0FyrfcCwoyty79tQ".into(),
    };

    let mut g = c.benchmark_group("html_1MB");
    g.throughput(Throughput::Bytes(page.len() as u64));
    g.sample_size(30);
    g.bench_function("pass_through", |b| {
        b.to_async(&rt)
            .iter(|| async { chunked_body(&page).collect().await.unwrap().to_bytes() })
    });
    g.bench_function("rewrite_streaming", |b| {
        b.to_async(&rt).iter(|| async {
            rewrite(
                chunked_body(&page),
                Coding::Identity,
                Charset {
                    encoding: encoding_rs::UTF_8,
                    declared: false,
                },
                origin.clone(),
                ticket.clone(),
            )
            .collect()
            .await
            .unwrap()
            .to_bytes()
        })
    });
    let chunks: Vec<&[u8]> = page.chunks(CHUNK).collect();
    g.bench_function("rewrite_lol_html_only", |b| {
        b.iter(|| rewrite_chunks(&chunks, &origin, &ticket, encoding_rs::UTF_8))
    });
    g.finish();

    let dense = dense_page();
    let origin = Origin::new("http", "127.0.0.1:8000", "/dense.html").unwrap();
    let chunks: Vec<&[u8]> = dense.as_bytes().chunks(CHUNK).collect();
    let selectors: Vec<&str> = cloakroom::rewrite::html::selectors().collect();
    let mut g = c.benchmark_group("dense_1.2MB");
    g.throughput(Throughput::Bytes(dense.len() as u64));
    g.sample_size(30);
    g.bench_function("lol_html_no_handler", |b| {
        b.iter(|| lol_html_floor(&chunks, &[]))
    });
    g.bench_function("lol_html_selectors_no_op", |b| {
        b.iter(|| lol_html_floor(&chunks, &selectors))
    });
    g.bench_function("rewrite_lol_html_only", |b| {
        b.iter(|| rewrite_chunks(&chunks, &origin, &ticket, encoding_rs::UTF_8))
    });
    // The per-link work alone (each href's source text judged and
    // rewritten), without finding the links: with the tokenizer alone
    // above, what a rewriter that only scans would cost at least.
    let hrefs: Vec<&str> = dense
        .split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert_eq!(hrefs.len(), 12600);
    g.bench_function("links_only", |b| {
        b.iter(|| {
            hrefs
                .iter()
                .filter_map(|raw| {
                    rewrite_attribute(raw, Some(&origin.document), &origin, &ticket, Carry::Query)
                })
                .map(|new| new.len())
                .sum::<usize>()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
