//! The HTML the proxy serves itself: the login form and the logout
//! confirmation. Plain, accessible, no JavaScript, every interpolated value
//! escaped.

use std::fmt::Write;

/// What the login form shows.
pub struct LoginForm<'a> {
    /// The application's name (`auth.app_name`).
    pub app_name: &'a str,
    /// Where to go after a successful login (already checked same-origin).
    pub return_to: &'a str,
    /// The session's CSRF token.
    pub csrf: &'a str,
    /// An error to show above the form.
    pub error: Option<&'a str>,
    /// The username to prefill after a failed attempt.
    pub username: &'a str,
    /// The user already logged in, if any.
    pub signed_in_as: Option<&'a str>,
    /// Extra hidden fields (e.g. the session for clients without cookies).
    pub hidden: &'a [(&'a str, &'a str)],
}

/// The login page.
pub fn login(form: &LoginForm<'_>) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Sign in</h1>\n<p class=\"to\">to {}</p>\n",
        escape(form.app_name)
    );
    if let Some(user) = form.signed_in_as {
        let _ = writeln!(
            body,
            "<p class=\"note\">You are signed in as <strong>{}</strong>. Signing in again switches the account.</p>",
            escape(user)
        );
    }
    if let Some(error) = form.error {
        let _ = writeln!(
            body,
            "<p class=\"error\" role=\"alert\" id=\"error\">{}</p>",
            escape(error)
        );
    }
    let described = if form.error.is_some() {
        " aria-describedby=\"error\""
    } else {
        ""
    };
    let _ = write!(
        body,
        "<form method=\"post\" action=\"/.cloakroom/login\">\n\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\n\
         <input type=\"hidden\" name=\"return_to\" value=\"{return_to}\">\n",
        csrf = escape(form.csrf),
        return_to = escape(form.return_to),
    );
    for (name, value) in form.hidden {
        let _ = writeln!(
            body,
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            escape(name),
            escape(value)
        );
    }
    let _ = write!(
        body,
        "<label for=\"username\">Username</label>\n\
         <input id=\"username\" name=\"username\" type=\"text\" autocomplete=\"username\" \
         autocapitalize=\"none\" spellcheck=\"false\" required autofocus value=\"{username}\"{described}>\n\
         <label for=\"password\">Password</label>\n\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required{described}>\n\
         <label class=\"check\"><input type=\"checkbox\" name=\"remember\" value=\"1\"> Remember me on this device</label>\n\
         <button type=\"submit\">Sign in</button>\n\
         </form>\n",
        username = escape(form.username),
    );
    layout("Sign in", &body)
}

/// The logout confirmation: one button, no JavaScript.
pub fn logout(csrf: &str, user: Option<&str>, hidden: &[(&str, &str)]) -> String {
    let mut body = String::from("<h1>Sign out</h1>\n");
    match user {
        Some(user) => {
            let _ = write!(
                body,
                "<p>You are signed in as <strong>{}</strong>.</p>\n\
                 <form method=\"post\" action=\"/.cloakroom/logout\">\n\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\">\n",
                escape(user),
                escape(csrf)
            );
            for (name, value) in hidden {
                let _ = writeln!(
                    body,
                    "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                    escape(name),
                    escape(value)
                );
            }
            body.push_str("<button type=\"submit\">Sign out</button>\n</form>\n");
        }
        None => body.push_str("<p>You are not signed in.</p>\n<p><a href=\"/\">Continue</a></p>\n"),
    }
    layout("Sign out", &body)
}

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"robots\" content=\"noindex\">\n\
         <title>{title} · cloakroom</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <main>\n{body}</main>\n<footer>cloakroom</footer>\n</body>\n</html>\n"
    )
}

const STYLE: &str = "\
:root{color-scheme:light dark;--fg:#1d1d1f;--bg:#f5f5f7;--card:#fff;--line:#c7c7cc;--accent:#0a58ca;--err:#b00020}\
@media (prefers-color-scheme:dark){:root{--fg:#f5f5f7;--bg:#1d1d1f;--card:#2c2c2e;--line:#48484a;--accent:#6ea8fe;--err:#ff6b81}}\
*{box-sizing:border-box}\
body{margin:0;min-height:100vh;display:flex;flex-direction:column;align-items:center;justify-content:center;\
font:16px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:var(--fg);background:var(--bg)}\
main{width:min(22rem,calc(100% - 2rem));background:var(--card);border:1px solid var(--line);border-radius:12px;padding:1.75rem}\
h1{margin:0;font-size:1.5rem}.to{margin:.25rem 0 1.25rem;opacity:.8}\
label{display:block;margin:.75rem 0 .25rem;font-weight:600}\
label.check{display:flex;gap:.5rem;align-items:center;font-weight:400}\
input[type=text],input[type=password]{width:100%;padding:.6rem .7rem;font:inherit;color:inherit;background:transparent;\
border:1px solid var(--line);border-radius:8px}\
input:focus-visible,button:focus-visible{outline:3px solid var(--accent);outline-offset:2px}\
button{margin-top:1.25rem;width:100%;padding:.7rem;font:inherit;font-weight:600;color:#fff;background:var(--accent);border:0;border-radius:8px;cursor:pointer}\
.error{color:var(--err);font-weight:600}.note{font-size:.9rem}\
footer{margin-top:1rem;font-size:.8rem;opacity:.6}";

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        let page = login(&LoginForm {
            app_name: "<script>alert(1)</script>",
            return_to: "/x\"><script>",
            csrf: "tok",
            error: Some("bad & <wrong>"),
            username: "a\"b",
            signed_in_as: None,
            hidden: &[],
        });
        assert!(!page.contains("<script>"));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("value=\"/x&quot;&gt;&lt;script&gt;\""));
        assert!(page.contains("bad &amp; &lt;wrong&gt;"));
        assert!(page.contains("value=\"a&quot;b\""));
    }

    #[test]
    fn the_form_has_what_a_browser_and_a_screen_reader_need() {
        let page = login(&LoginForm {
            app_name: "Ledger",
            return_to: "/books",
            csrf: "tok",
            error: None,
            username: "",
            signed_in_as: None,
            hidden: &[("CLOAKROOMSID", "abc")],
        });
        for needle in [
            "name=\"viewport\"",
            "<label for=\"username\">",
            "<label for=\"password\">",
            "autofocus",
            "name=\"remember\"",
            "name=\"csrf\" value=\"tok\"",
            "name=\"return_to\" value=\"/books\"",
            "name=\"CLOAKROOMSID\" value=\"abc\"",
            "to Ledger",
            "cloakroom",
        ] {
            assert!(page.contains(needle), "{needle} missing");
        }
    }
}
