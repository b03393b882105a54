//! Streaming HTML rewriting with lol_html: same-origin links and forms of a
//! page get the session ticket, chunk by chunk, never holding the page.
//!
//! Rewritten: `a[href]`, `area[href]`, `form[action]` (plus, for GET forms,
//! a hidden input carrying the ticket, since they replace the action's query),
//! `iframe[src]`, `frame[src]` and `<meta http-equiv=refresh>`. A
//! `<base href>` changes what relative links resolve to. Scripts, styles
//! and comments are not HTML elements to lol_html, so links inside them are
//! never touched.

use lol_html::html_content::ContentType;
use lol_html::send::{Element, HtmlRewriter, Settings};
use lol_html::{AsciiCompatibleEncoding, MemorySettings};
use url::Url;

use super::link::{refresh_url_span, rewrite_link, Origin, Ticket};

/// Most memory lol_html may use for one page (it needs only what one tag
/// holds; a page that needs more is passed on unrewritten from there).
const MEMORY_LIMIT: usize = 4 * 1024 * 1024;

const SELECTOR: &str =
    "a[href], area[href], form, iframe[src], frame[src], meta[http-equiv], base[href]";

/// A rewriter for one page, writing its output to `sink`.
pub fn rewriter<'h, O: lol_html::OutputSink + Send>(
    origin: Origin,
    ticket: Ticket,
    encoding: &'static encoding_rs::Encoding,
    sink: O,
) -> Option<HtmlRewriter<'h, O>> {
    let encoding = AsciiCompatibleEncoding::new(encoding)?;
    let hidden = format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
        ticket.name, ticket.id
    );
    let mut base: Option<Url> = None;
    let handler =
        move |el: &mut Element<'_, '_>| -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            let document = &origin.document;
            let tag = el.tag_name();
            if tag == "base" {
                // Only the first <base href> counts (HTML §4.2.3).
                if base.is_none() {
                    if let Some(href) = el.get_attribute("href") {
                        base = super::link::decode_entities(&href)
                            .and_then(|h| document.join(h.trim()).ok());
                    }
                }
                return Ok(());
            }
            let resolve_against = base.as_ref().unwrap_or(document);
            let attr = match tag.as_str() {
                "a" | "area" => "href",
                "iframe" | "frame" => "src",
                "form" => "action",
                "meta" => {
                    let is_refresh = el
                        .get_attribute("http-equiv")
                        .is_some_and(|v| v.trim().eq_ignore_ascii_case("refresh"));
                    if let (true, Some(content)) = (is_refresh, el.get_attribute("content")) {
                        if let Some((start, end)) = refresh_url_span(&content) {
                            if let Some(new) = rewrite_link(
                                &content[start..end],
                                resolve_against,
                                &origin,
                                &ticket,
                            ) {
                                let rewritten =
                                    format!("{}{new}{}", &content[..start], &content[end..]);
                                el.set_attribute("content", &rewritten)?;
                            }
                        }
                    }
                    return Ok(());
                }
                _ => return Ok(()),
            };
            if tag == "form" {
                // A form without action submits to the page itself.
                let action = el.get_attribute("action").unwrap_or_default();
                let target_ok = if action.trim().is_empty() {
                    origin.same_origin(resolve_against)
                } else {
                    rewrite_link(&action, resolve_against, &origin, &ticket).is_some()
                };
                if target_ok {
                    if !action.trim().is_empty() {
                        if let Some(new) = rewrite_link(&action, resolve_against, &origin, &ticket)
                        {
                            el.set_attribute("action", &new)?;
                        }
                    }
                    // A GET form replaces the action's query with its
                    // fields, so the ticket must be a field. A POST form
                    // keeps the action's query, and a field would put the
                    // ID into the body the application reads.
                    let post = el
                        .get_attribute("method")
                        .is_some_and(|m| m.trim().eq_ignore_ascii_case("post"));
                    if !post {
                        el.prepend(&hidden, ContentType::Html);
                    }
                }
                return Ok(());
            }
            if let Some(value) = el.get_attribute(attr) {
                if let Some(new) = rewrite_link(&value, resolve_against, &origin, &ticket) {
                    el.set_attribute(attr, &new)?;
                }
            }
            Ok(())
        };
    let settings = Settings::new_send()
        .append_element_content_handler(lol_html::element!(SELECTOR, handler))
        .with_encoding(encoding)
        .with_adjust_charset_on_meta_tag(true)
        .with_memory_settings(
            MemorySettings::new()
                .with_max_allowed_memory_usage(MEMORY_LIMIT)
                .with_graceful_bail_out_on_memory_limit_exceeded(true),
        );
    Some(HtmlRewriter::new(settings, sink))
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
        for chunk in chunks {
            if r.write(chunk).is_err() {
                break;
            }
        }
        let _ = r.end();
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

    #[test]
    fn a_table_of_tricky_documents() {
        let cases: &[(&str, &str)] = &[
            ("<a href=\"/x\">x</a>", "<a href=\"/x?SID=abc\">x</a>"),
            ("<A HREF=/x>x</A>", "<A HREF=\"/x?SID=abc\">x</A>"),
            ("<a href='rel?a=1&amp;b=2#f'>", "<a href=\"rel?a=1&amp;b=2&amp;SID=abc#f\">"),
            ("<area href=\"/map\">", "<area href=\"/map?SID=abc\">"),
            ("<iframe src=\"/frame\"></iframe>", "<iframe src=\"/frame?SID=abc\"></iframe>"),
            ("<frame src=\"/f\">", "<frame src=\"/f?SID=abc\">"),
            (
                "<meta http-equiv=\"Refresh\" content=\"5; url=/next\">",
                "<meta http-equiv=\"Refresh\" content=\"5; url=/next?SID=abc\">",
            ),
            (
                "<meta http-equiv=refresh content=\"0;url=http://evil.example/\">",
                "<meta http-equiv=refresh content=\"0;url=http://evil.example/\">",
            ),
            ("<a href=\"mailto:x@y\">", "<a href=\"mailto:x@y\">"),
            ("<a href=\"javascript:void(0)\">", "<a href=\"javascript:void(0)\">"),
            ("<a href=\"data:text/html,x\">", "<a href=\"data:text/html,x\">"),
            ("<a href=\"#top\">", "<a href=\"#top\">"),
            ("<a href=\"//evil.example/\">", "<a href=\"//evil.example/\">"),
            ("<a href=\"/\\evil.example/\">", "<a href=\"/\\evil.example/\">"),
            ("<a href=\"HTTP://EVIL.EXAMPLE/\">", "<a href=\"HTTP://EVIL.EXAMPLE/\">"),
            (
                "<a href=\"http://127.0.0.1.evil.example:8000/\">",
                "<a href=\"http://127.0.0.1.evil.example:8000/\">",
            ),
            ("<a href=\"http://127.0.0.1:8000/abs\">", "<a href=\"http://127.0.0.1:8000/abs?SID=abc\">"),
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
                "<form action=\"/post?SID=abc\" method=post><input name=a></form>",
            ),
            (
                "<form method=get><input name=q></form>",
                "<form method=get><input type=\"hidden\" name=\"SID\" value=\"abc\"><input name=q></form>",
            ),
            (
                "<form action=\"https://evil.example/steal\"><input name=q></form>",
                "<form action=\"https://evil.example/steal\"><input name=q></form>",
            ),
            (
                "<base href=\"http://cdn.example/\"><a href=\"rel\">r</a><a href=\"http://127.0.0.1:8000/own\">o</a>",
                "<base href=\"http://cdn.example/\"><a href=\"rel\">r</a><a href=\"http://127.0.0.1:8000/own?SID=abc\">o</a>",
            ),
            (
                "<base href=\"/other/\"><a href=\"rel\">r</a>",
                "<base href=\"/other/\"><a href=\"rel?SID=abc\">r</a>",
            ),
            ("<a href=\"&#106;avascript:alert(1)\">", "<a href=\"&#106;avascript:alert(1)\">"),
            ("<a href=\"/caf\u{e9}\">", "<a href=\"/caf\u{e9}?SID=abc\">"),
            ("<a href=\"/p?SID=stolen\">", "<a href=\"/p?SID=abc\">"),
        ];
        for (input, want) in cases {
            assert_eq!(&all_ways(input), want, "input: {input}");
        }
    }

    #[test]
    fn the_charset_of_the_page_is_respected() {
        // Latin-1 bytes around a link: the page's bytes are kept as they are.
        let page = b"<p>caf\xe9</p><a href=\"/x\">\xe9</a>";
        let out = rewrite_chunks(&[page], &origin(), &ticket(), encoding_rs::WINDOWS_1252);
        assert_eq!(
            out,
            b"<p>caf\xe9</p><a href=\"/x?SID=abc\">\xe9</a>".to_vec()
        );
        // A <meta charset> switches the decoder mid-stream.
        let page = b"<meta charset=\"windows-1252\"><a href=\"/\xe9\">x</a>";
        let out = rewrite_chunks(&[page], &origin(), &ticket(), encoding_rs::UTF_8);
        assert_eq!(
            out,
            b"<meta charset=\"windows-1252\"><a href=\"/\xe9?SID=abc\">x</a>".to_vec()
        );
    }

    #[test]
    fn utf16_cannot_be_rewritten() {
        assert!(rewriter(origin(), ticket(), encoding_rs::UTF_16LE, |_: &[u8]| {}).is_none());
    }
}
