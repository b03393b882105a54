//! Rewriting for clients in URL mode (they refuse cookies, so the session ID
//! travels in links): HTML bodies, `Location` headers, and the headers that
//! keep a URL with an ID in it out of referrers, search engines and caches.
//!
//! - [`link`]: which links may carry the ID, and how it is added or removed.
//! - [`html`]: the streaming lol_html rewriter.
//! - [`body`]: decoding compressed HTML and streaming it through the rewriter.

pub mod body;
pub mod html;
pub mod link;
