//! Access rules: which paths need a login (`auth.protect`, `auth.public`).
//!
//! Rules are matched against the *normalized* path, so that spellings an
//! upstream would read as the same path cannot slip past: percent-escapes
//! are decoded, `\` counts as `/` (as on IIS), `;parameters` are cut from
//! each segment (as Tomcat does, which turns `..;` into `..`), empty
//! segments collapse and `.`/`..` are resolved (RFC 3986 §5.2.4).
//!
//! A rule is a path prefix matched segment by segment: `/admin` covers
//! `/admin` and `/admin/users` but not `/administrator`; `/` covers
//! everything; a trailing slash changes nothing (`/static/` = `/static`). The longest matching rule wins; on a tie, `protect` wins.

/// Whether a path needs a login.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    protect: Vec<Vec<Vec<u8>>>,
    public: Vec<Vec<Vec<u8>>>,
}

impl Rules {
    /// Rules from the configured prefixes (already checked to start with `/`).
    pub fn new(protect: &[String], public: &[String]) -> Rules {
        let parse = |rules: &[String]| {
            rules
                .iter()
                .map(|r| segments(r.as_bytes()))
                .collect::<Vec<_>>()
        };
        Rules {
            protect: parse(protect),
            public: parse(public),
        }
    }

    /// Whether no path is protected at all.
    pub fn is_empty(&self) -> bool {
        self.protect.is_empty()
    }

    /// Whether `raw_path` (as on the request line) needs a login.
    pub fn requires_login(&self, raw_path: &str) -> bool {
        if self.protect.is_empty() {
            return false;
        }
        let path = segments(raw_path.as_bytes());
        let best = |rules: &[Vec<Vec<u8>>]| {
            rules
                .iter()
                .filter(|rule| path.starts_with(rule))
                .map(Vec::len)
                .max()
        };
        match (best(&self.protect), best(&self.public)) {
            (Some(p), Some(q)) => p >= q,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// The normalized segments of a path.
pub fn segments(raw: &[u8]) -> Vec<Vec<u8>> {
    let decoded = percent_decode(raw);
    let mut out: Vec<Vec<u8>> = Vec::new();
    for segment in decoded.split(|b| *b == b'/' || *b == b'\\') {
        let segment = match segment.iter().position(|b| *b == b';') {
            Some(i) => &segment[..i],
            None => segment,
        };
        match segment {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            s => out.push(s.to_vec()),
        }
    }
    out
}

/// The normalized path as text (for logs and tests).
pub fn normalize(raw: &str) -> String {
    let segs = segments(raw.as_bytes());
    let mut out = String::from("/");
    out.push_str(
        &segs
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect::<Vec<_>>()
            .join("/"),
    );
    out
}

/// Decodes `%XX` escapes; a malformed escape is kept as it is.
pub fn percent_decode(raw: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            if let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules::new(
            &["/".into(), "/admin".into()],
            &["/public".into(), "/static/".into(), "/admin/help".into()],
        )
    }

    #[test]
    fn normalization() {
        for (raw, want) in [
            ("/", "/"),
            ("//admin///x", "/admin/x"),
            ("/public/../admin", "/admin"),
            ("/%61dmin", "/admin"),
            ("/public%2F..%2Fadmin", "/admin"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public\\..\\admin", "/admin"),
            ("/public/..;/admin", "/admin"),
            ("/admin;jsessionid=1/x", "/admin/x"),
            ("/./a/./b/../c", "/a/c"),
            ("/../../etc", "/etc"),
            ("/bad%zzescape%", "/bad%zzescape%"),
        ] {
            assert_eq!(normalize(raw), want, "{raw}");
        }
    }

    #[test]
    fn longest_rule_wins_and_bypasses_fail() {
        let r = rules();
        for (path, protected) in [
            ("/", true),
            ("/app", true),
            ("/public", false),
            ("/public/page", false),
            ("/publicity", true),
            ("/static/app.css", false),
            ("/static", false),
            ("/admin/help", false),
            ("/admin/help/../users", true),
            ("/public/../admin", true),
            ("/public/%2e%2e/admin", true),
            ("/public%2f..%2fadmin", true),
            ("/public\\..\\admin", true),
            ("/public/..;/admin", true),
            ("/%70ublic", false),
        ] {
            assert_eq!(r.requires_login(path), protected, "{path}");
        }
    }

    #[test]
    fn nothing_protected_by_default() {
        let r = Rules::new(&[], &[]);
        assert!(!r.requires_login("/admin"));
        assert!(r.is_empty());
    }

    #[test]
    fn narrow_protection() {
        let r = Rules::new(&["/account".into()], &[]);
        assert!(r.requires_login("/account"));
        assert!(r.requires_login("/ACCOUNT/../account/x"));
        assert!(!r.requires_login("/accounts"));
        assert!(!r.requires_login("/"));
    }
}
