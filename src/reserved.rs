//! The proxy's own paths, `/.cloakroom/…`: their names and the one test of
//! whether a request is for one of them. A leaf: the pages themselves are
//! in [`crate::login`], and the rewriter needs the names too.

/// Paths under this prefix are the proxy's own.
pub const PREFIX: &str = "/.cloakroom/";
/// The login form.
pub const LOGIN_PATH: &str = "/.cloakroom/login";
/// The logout endpoint.
pub const LOGOUT_PATH: &str = "/.cloakroom/logout";
/// The public keys of the identity assertion (a JWKS).
pub const JWKS_PATH: &str = "/.cloakroom/jwks.json";
/// Where URL mode sends form submissions: `/.cloakroom/f/TICKET/PATH`.
pub const FORM_PREFIX: &str = "/.cloakroom/f/";

/// Whether `path` (canonical) is one of the proxy's own: its first segment
/// reads as `.cloakroom` in any case or spelling (`/%2ecloakroom/`,
/// `/.CLOAKROOM;x/`), so no spelling of a reserved path reaches the upstream.
pub fn is_reserved(path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    if !first.starts_with(['.', '%']) {
        return false;
    }
    crate::target::segment_readings(first.as_bytes())
        .iter()
        .any(|r| r.eq_ignore_ascii_case(b".cloakroom"))
}
