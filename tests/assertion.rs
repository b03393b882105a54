//! The signed identity assertion, verified as an application would: with
//! an independent JWT library (jwt-simple, RustCrypto; the proxy signs with
//! jsonwebtoken over ring) against the JWKS the proxy serves.

#![recursion_limit = "256"]

mod support;

use std::collections::HashSet;

use http::{Request, StatusCode};
use jwt_simple::prelude::*;
use support::*;

const HEADER: &str = "x-cloakroom-assertion";
const AUDIENCE: &str = "https://ledger.example";

struct Site {
    upstream: Upstream,
    proxy: Proxy,
    dir: tempfile::TempDir,
}

async fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let upstream = Upstream::start().await;
    let proxy = start(&upstream, &dir).await;
    Site {
        upstream,
        proxy,
        dir,
    }
}

fn config_text(upstream: &Upstream, dir: &tempfile::TempDir) -> String {
    let key = dir.path().join("assertion.key");
    format!(
        "[upstream]\nurl = \"http://{}\"\n\
         [session]\nstore = \"memory\"\ncookieless = false\nsecret_file = {:?}\n\
         [identity]\nupstream_control = true\nassertion_header = \"X-Cloakroom-Assertion\"\n\
         assertion_audience = \"{AUDIENCE}\"\nassertion_key_file = {:?}\nassertion_lifetime = \"2m\"\n",
        upstream.addr,
        dir.path().join("cloakroom.key").to_str().unwrap(),
        key.to_str().unwrap(),
    )
}

async fn start(upstream: &Upstream, dir: &tempfile::TempDir) -> Proxy {
    Proxy::start_config(&config_text(upstream, dir), tempfile::tempdir().unwrap()).await
}

/// The proxy's published keys, as an application reads them.
async fn jwks(proxy: &Proxy) -> Vec<(String, ES256PublicKey)> {
    let (status, headers, body) = get(&proxy.url("/.cloakroom/jwks.json")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    // Fetched without a cookie, as verifiers do: cacheable, no session.
    assert_eq!(headers["cache-control"], "public, max-age=300");
    assert!(headers.get("set-cookie").is_none(), "{headers:?}");
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let b64 = |v: &serde_json::Value| {
        Base64UrlSafeNoPadding::decode_to_vec(v.as_str().unwrap(), None).unwrap()
    };
    doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            assert_eq!(k["kty"], "EC");
            assert_eq!(k["crv"], "P-256");
            assert_eq!(k["alg"], "ES256");
            let mut point = vec![4u8];
            point.extend(b64(&k["x"]));
            point.extend(b64(&k["y"]));
            let kid = k["kid"].as_str().unwrap().to_owned();
            (kid, ES256PublicKey::from_bytes(&point).unwrap())
        })
        .collect()
}

fn options(at: Option<UnixTimeStamp>) -> VerificationOptions {
    VerificationOptions {
        allowed_audiences: Some(HashSet::from_strings(&[AUDIENCE])),
        artificial_time: at,
        time_tolerance: Some(jwt_simple::prelude::Duration::from_secs(0)),
        ..Default::default()
    }
}

/// Verifies `token` with the key its `kid` names.
fn verify(
    keys: &[(String, ES256PublicKey)],
    token: &str,
    at: Option<UnixTimeStamp>,
) -> Result<JWTClaims<serde_json::Value>, jwt_simple::Error> {
    let kid = Token::decode_metadata(token)?
        .key_id()
        .map(str::to_owned)
        .expect("no kid");
    let (_, key) = keys
        .iter()
        .find(|(k, _)| *k == kid)
        .expect("kid not in the JWKS");
    key.verify_token::<serde_json::Value>(token, Some(options(at)))
}

/// Logs `b` in as carol through the upstream's control header.
async fn log_in_carol(b: &mut Browser) {
    b.get("/start").await;
    let page = b.get("/respond-with?h=X-Cloakroom-Login:carol").await;
    assert_eq!(page.status, StatusCode::OK);
}

fn token_seen(upstream: &Upstream) -> Option<String> {
    upstream.seen().last().unwrap().header(HEADER)
}

#[tokio::test]
async fn a_logged_in_request_carries_a_token_an_application_can_verify() {
    let s = site().await;
    let mut b = Browser::new(&s.proxy);
    b.get("/anonymous").await;
    assert_eq!(
        token_seen(&s.upstream),
        None,
        "an anonymous request got a token"
    );

    log_in_carol(&mut b).await;
    let page = b.get("/page").await;
    assert!(
        page.headers.get(HEADER).is_none(),
        "the token reached the client"
    );
    let token = token_seen(&s.upstream).expect("no assertion upstream");
    let keys = jwks(&s.proxy).await;
    assert_eq!(keys.len(), 1);

    let claims = verify(&keys, &token, None).expect("a fresh token verifies");
    assert_eq!(claims.subject.as_deref(), Some("carol"));
    let (iat, exp) = (claims.issued_at.unwrap(), claims.expires_at.unwrap());
    assert_eq!(
        exp.as_secs() - iat.as_secs(),
        120,
        "lifetime is not assertion_lifetime"
    );
    let sid = claims.custom["sid"].as_str().unwrap();
    assert!(
        !b.session().unwrap().contains(sid),
        "sid carries the session ID"
    );
    let metadata = Token::decode_metadata(&token).unwrap();
    assert_eq!(metadata.algorithm(), "ES256");

    // Expired, or for another audience, or tampered with: refused.
    let later = exp + jwt_simple::prelude::Duration::from_secs(1);
    assert!(
        verify(&keys, &token, Some(later)).is_err(),
        "an expired token verified"
    );
    let (_, key) = &keys[0];
    let other = VerificationOptions {
        allowed_audiences: Some(HashSet::from_strings(&["https://other.example"])),
        ..Default::default()
    };
    assert!(key
        .verify_token::<serde_json::Value>(&token, Some(other))
        .is_err());
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let payload = Base64UrlSafeNoPadding::decode_to_vec(&parts[1], None).unwrap();
    let forged = String::from_utf8(payload)
        .unwrap()
        .replace("carol", "admin");
    parts[1] = Base64UrlSafeNoPadding::encode_to_string(forged.as_bytes()).unwrap();
    assert!(
        verify(&keys, &parts.join("."), None).is_err(),
        "a tampered token verified"
    );

    // The same session gets the same (cached) token on the next request.
    b.get("/again").await;
    assert_eq!(token_seen(&s.upstream).as_deref(), Some(token.as_str()));
}

#[tokio::test]
async fn client_sent_assertions_never_arrive() {
    let s = site().await;
    let mut b = Browser::new(&s.proxy);
    log_in_carol(&mut b).await;
    let cookie = format!("CLOAKROOMSID={}", b.session().unwrap());
    for (with_cookie, name) in [
        (false, "X-Cloakroom-Assertion"),
        (false, "x_cloakroom_assertion"),
        (true, "X.Cloakroom.Assertion"),
        (true, "x-cloakroom-assertion"),
    ] {
        let mut req = Request::get(s.proxy.url("/forged")).header(name, "forged.token.here");
        if with_cookie {
            req = req.header("cookie", &cookie);
        }
        let resp = http1().request(req.body(empty()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let seen = s.upstream.seen().last().cloned().unwrap();
        let copies: Vec<_> = seen
            .headers
            .iter()
            .filter(|(n, _)| n.as_str().replace(['_', '.'], "-") == HEADER)
            .map(|(_, v)| v.to_str().unwrap().to_owned())
            .collect();
        if with_cookie {
            assert_eq!(copies.len(), 1, "{name}: {copies:?}");
            assert_ne!(copies[0], "forged.token.here", "{name} arrived");
        } else {
            assert!(copies.is_empty(), "{name} arrived: {copies:?}");
        }
    }
}

#[tokio::test]
async fn the_key_file_is_created_private_and_rotation_publishes_both_keys() {
    let s = site().await;
    let file = s.dir.path().join("assertion.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key file is readable by others");
    }
    let mut b = Browser::new(&s.proxy);
    log_in_carol(&mut b).await;
    b.get("/page").await;
    let old_token = token_seen(&s.upstream).unwrap();
    let old_keys = jwks(&s.proxy).await;

    // Rotation: a new key appended (as openssl writes it), then a reload.
    let made = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .output()
        .expect("openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(&String::from_utf8(made.stdout).unwrap());
    std::fs::write(&file, text).unwrap();
    s.proxy
        .app
        .reload(cloakroom::Config::parse(&config_text(&s.upstream, &s.dir)))
        .await
        .expect("reload");

    let keys = jwks(&s.proxy).await;
    assert_eq!(keys.len(), 2, "both keys are published");
    assert!(keys.iter().any(|(kid, _)| *kid == old_keys[0].0));
    // Tokens signed before still verify; new ones are signed by the new key.
    verify(&keys, &old_token, None).expect("an earlier token no longer verifies");
    b.get("/after").await;
    let new_token = token_seen(&s.upstream).unwrap();
    let kid = Token::decode_metadata(&new_token)
        .unwrap()
        .key_id()
        .unwrap()
        .to_owned();
    assert_ne!(kid, old_keys[0].0, "the old key still signs");
    verify(&keys, &new_token, None).expect("the new token verifies");
}

#[tokio::test]
async fn a_key_file_gone_on_reload_is_refused_not_replaced() {
    let s = site().await;
    let before = jwks(&s.proxy).await;
    std::fs::remove_file(s.dir.path().join("assertion.key")).unwrap();
    let refused = s
        .proxy
        .app
        .reload(cloakroom::Config::parse(&config_text(&s.upstream, &s.dir)))
        .await
        .unwrap_err();
    assert!(refused.contains("identity.assertion_key_file"), "{refused}");
    assert!(
        !s.dir.path().join("assertion.key").exists(),
        "a new key was made"
    );
    let after = jwks(&s.proxy).await;
    assert_eq!(after[0].0, before[0].0, "the published key changed");

    // Nor is a new (mistyped) path on reload a reason to make a new key.
    let elsewhere = s.dir.path().join("typo.key");
    let text = config_text(&s.upstream, &s.dir).replace("assertion.key", "typo.key");
    let refused = s
        .proxy
        .app
        .reload(cloakroom::Config::parse(&text))
        .await
        .unwrap_err();
    assert!(refused.contains("missing"), "{refused}");
    assert!(!elsewhere.exists(), "a new key file was made on reload");
}

#[tokio::test]
async fn without_the_assertion_the_jwks_is_not_served() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(&upstream, "", "").await;
    let (status, _, _) = get(&proxy.url("/.cloakroom/jwks.json")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
