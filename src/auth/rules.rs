//! Access rules: which paths need a login (`auth.protect`, `auth.public`).
//!
//! Rules judge a path that [`crate::target::canonical`] has already
//! accepted (no dot segments, no hidden separators), and they judge every
//! reading an upstream might give it ([`crate::target::readings`]): a
//! `protect` rule matches when *any* reading of each segment equals the
//! rule's, ignoring ASCII case (Express and IIS route `/ADMIN` to
//! `/admin`); a `public` rule matches only when *every* reading equals it
//! exactly. So ambiguity and case fall on the protected side.
//!
//! A rule is a path prefix matched segment by segment: `/admin` covers
//! `/admin` and `/admin/users` but not `/administrator`; `/` covers
//! everything; a trailing slash changes nothing (`/static/` = `/static`).
//! The longest matching rule wins; on a tie, `protect` wins.

use crate::target;

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
                .map(|r| {
                    r.split('/')
                        .filter(|s| !s.is_empty())
                        .map(|s| target::percent_decode(s.as_bytes()))
                        .collect()
                })
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

    /// Whether `path` (canonical, as the upstream receives it) needs a login.
    pub fn requires_login(&self, path: &str) -> bool {
        if self.protect.is_empty() {
            return false;
        }
        let readings = target::readings(path);
        let covers = |rule: &Vec<Vec<u8>>, protect: bool| {
            rule.len() <= readings.len()
                && rule.iter().zip(&readings).all(|(want, seen)| {
                    if protect {
                        seen.iter().any(|r| r.eq_ignore_ascii_case(want))
                    } else {
                        seen.iter().all(|r| r == want)
                    }
                })
        };
        let best = |rules: &[Vec<Vec<u8>>], protect: bool| {
            rules
                .iter()
                .filter(|rule| covers(rule, protect))
                .map(Vec::len)
                .max()
        };
        match (best(&self.protect, true), best(&self.public, false)) {
            (Some(p), Some(q)) => p >= q,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
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
            ("/%70ublic", false),
            ("/public;x=1", true),
            ("/PUBLIC", true),
            ("/public./x", true),
            ("/Admin/help", true),
            ("/ADMIN", true),
            ("/adm%69n", true),
            ("/adm%2569n", true),
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
        assert!(r.requires_login("/ACCOUNT/x"));
        assert!(r.requires_login("/account;jsessionid=1"));
        assert!(r.requires_login("/account%20"));
        assert!(r.requires_login("/%61ccount"));
        assert!(!r.requires_login("/accounts"));
        assert!(!r.requires_login("/"));
    }
}
