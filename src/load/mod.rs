//! `cloakroom load`: many virtual users, each with a session of its own,
//! driven through the session path of a deployment.
//!
//! Each user is a [`Browser`] with its own cookie jar (or, with
//! `--cookieless`, none: it follows the cookie probe into URL mode and then
//! carries its ticket in every URL, as a cookie-refusing browser does). With
//! `--login` it logs in through `/.cloakroom/login` first, CSRF token and
//! hidden fields included. Then it requests the target (or the weighted
//! `--paths`) until the run ends.
//!
//! - **Closed loop** (default): each user sends its next request when the
//!   last one is answered; latency is the request's own time.
//! - **Open loop** (`--rate R`): request *i* is due at `start + i/R`,
//!   whichever user is free sends it, and latency is measured from when it
//!   was *due*, so a server that falls behind shows its queueing delay
//!   instead of slowing the generator down (no coordinated omission).
//!
//! Latencies go into per-user HDR histograms (microseconds, 3 significant
//! digits), merged at the end. [`report`] renders the table and JSON.

pub mod report;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use http::{Method, StatusCode};
use url::Url;

use crate::client::{ticket_in, Browser, FetchError, Raw};

pub use self::report::Report;

/// Users logging in at the same moment during setup.
const LOGINS_AT_ONCE: usize = 4;

/// When a run ends.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// After this long.
    After(Duration),
    /// After this many requests.
    Requests(u64),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The page requested (and the site the users browse).
    pub target: Url,
    /// Virtual users.
    pub users: usize,
    /// When the run ends.
    pub stop: Stop,
    /// Requests per second for an open loop; `None` for a closed loop.
    pub rate: Option<f64>,
    /// `USER:PASSWORD` each user logs in with first.
    pub login: Option<(String, String)>,
    /// Users refuse cookies (URL mode).
    pub cookieless: bool,
    /// Weighted paths; empty means the target's own path.
    pub paths: Vec<(u32, String)>,
    /// How long one request may take.
    pub timeout: Duration,
    /// Extra CA certificates (PEM) trusted for `https://` targets.
    pub ca_file: Option<std::path::PathBuf>,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A bad option (named).
    #[error("{0}")]
    Option(String),
    /// The paths file cannot be read or parsed.
    #[error("--paths {path}: {message}")]
    Paths {
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// The CA file cannot be read.
    #[error("--ca-file {path}: {message}")]
    CaFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// The first user could not log in.
    #[error("--login: {0}")]
    Login(String),
    /// The first user could not reach the target at all.
    #[error("{target}: {source}")]
    Unreachable {
        /// The target.
        target: String,
        /// Why.
        source: FetchError,
    },
}

impl Options {
    /// Checks the target URL and the numbers.
    pub fn check(&self) -> Result<(), LoadError> {
        if !matches!(self.target.scheme(), "http" | "https") || self.target.host_str().is_none() {
            return Err(LoadError::Option(format!(
                "--target {}: expected an http:// or https:// URL",
                self.target
            )));
        }
        if self.users == 0 {
            return Err(LoadError::Option("--users: at least 1".into()));
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(LoadError::Option(format!(
                    "--rate {rate}: a positive number"
                )));
            }
        }
        Ok(())
    }
}

/// Reads a `--paths` file: one `WEIGHT PATH` per line; blank lines and `#`
/// comments are skipped.
pub fn read_paths(path: &Path) -> Result<Vec<(u32, String)>, LoadError> {
    let fail = |message: String| LoadError::Paths {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let mut paths = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (weight, target) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| fail(format!("line {}: expected `WEIGHT PATH`", n + 1)))?;
        let weight: u32 = weight.parse().ok().filter(|w| *w > 0).ok_or_else(|| {
            fail(format!(
                "line {}: {weight:?} is not a positive weight",
                n + 1
            ))
        })?;
        let target = target.trim();
        if !target.starts_with('/') {
            return Err(fail(format!("line {}: {target:?} is not a path", n + 1)));
        }
        paths.push((weight, target.to_owned()));
    }
    if paths.is_empty() {
        return Err(fail("no paths in the file".into()));
    }
    Ok(paths)
}

/// What one user counted.
struct Tally {
    requests: u64,
    ok: u64,
    errors: BTreeMap<&'static str, u64>,
    lost_sessions: u64,
    latency_us: Histogram<u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            requests: 0,
            ok: 0,
            errors: BTreeMap::new(),
            lost_sessions: 0,
            latency_us: histogram(),
        }
    }

    fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.ok += other.ok;
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        self.lost_sessions += other.lost_sessions;
        let _ = self.latency_us.add(&other.latency_us);
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 min at 3 significant digits: constant, valid bounds.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// A user ready to run: its browser, and whether it is logged in.
struct User {
    browser: Browser,
    logged_in: bool,
    has_session: bool,
    login_us: Option<u64>,
}

/// Counters the progress line reads while the run goes on.
#[derive(Default)]
struct Live {
    requests: AtomicU64,
    errors: AtomicU64,
}

/// Sets up the users, runs the load, and reports. `progress`: print a live
/// line to stderr every second.
pub async fn run(opts: Options, progress: bool) -> Result<Report, LoadError> {
    opts.check()?;
    let site = format!(
        "{}://{}",
        opts.target.scheme(),
        opts.target.host_str().unwrap_or_default()
    );
    let site = match opts.target.port() {
        Some(port) => format!("{site}:{port}"),
        None => site,
    };
    let target_path = match opts.target.query() {
        Some(q) => format!("{}?{q}", opts.target.path()),
        None => opts.target.path().to_owned(),
    };
    let paths = if opts.paths.is_empty() {
        vec![(1, target_path.clone())]
    } else {
        opts.paths.clone()
    };

    // The first user alone: a target that is down or a login that fails
    // stops the run before it starts.
    let tls = match &opts.ca_file {
        Some(path) => Some(trusting(path)?),
        None => None,
    };
    // Logins go a few at a time: a proxy checks only a few passwords at
    // once, and counts attempts in flight against its throttle.
    let gate = Arc::new(tokio::sync::Semaphore::new(LOGINS_AT_ONCE));
    let first = set_up(&site, &target_path, &opts, 0, &gate, tls.clone()).await?;
    let mut users = vec![first];
    let mut rest = Vec::new();
    for n in 1..opts.users {
        let (site, target_path, opts, gate, tls) = (
            site.clone(),
            target_path.clone(),
            opts.clone(),
            gate.clone(),
            tls.clone(),
        );
        rest.push(tokio::spawn(async move {
            set_up(&site, &target_path, &opts, n, &gate, tls).await
        }));
    }
    for task in rest {
        match task.await {
            Ok(Ok(user)) => users.push(user),
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(LoadError::Option(format!("a user failed to start: {e}"))),
        }
    }

    let mut logins = histogram();
    let mut login_count = 0;
    let mut sessions = 0;
    for user in &users {
        if let Some(us) = user.login_us {
            let _ = logins.record(us.max(1));
            login_count += 1;
        }
        sessions += u64::from(user.has_session);
    }

    let live = Arc::new(Live::default());
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let plan = Plan {
        started,
        stop: opts.stop,
        rate: opts.rate,
        paths: Arc::new(weighted(&paths)),
    };
    let ticker = progress.then(|| tokio::spawn(show_progress(live.clone(), started)));
    let mut tasks = Vec::new();
    for (n, user) in users.into_iter().enumerate() {
        let (plan, live, next) = (plan.clone(), live.clone(), next.clone());
        tasks.push(tokio::spawn(drive(user, plan, live, next, n as u64)));
    }
    let mut total = Tally::new();
    for task in tasks {
        if let Ok(tally) = task.await {
            total.merge(tally);
        }
    }
    let elapsed = started.elapsed();
    if let Some(ticker) = ticker {
        ticker.abort();
        eprintln!();
    }
    Ok(Report::new(
        &opts,
        elapsed,
        total.requests,
        total.ok,
        total.errors,
        total.lost_sessions,
        &total.latency_us,
        sessions,
        login_count,
        &logins,
    ))
}

/// Makes user `n` ready: logs it in, or takes it to the target once (the
/// cookie probe, and for a cookieless user its ticket).
async fn set_up(
    site: &str,
    target_path: &str,
    opts: &Options,
    n: usize,
    gate: &tokio::sync::Semaphore,
    tls: Option<tokio_rustls::TlsConnector>,
) -> Result<User, LoadError> {
    let mut browser = Browser::at(site).map_err(|e| LoadError::Option(e.to_string()))?;
    if let Some(tls) = tls {
        browser.use_tls(tls);
    }
    browser.timeout = opts.timeout;
    browser.refuse_cookies = opts.cookieless;
    browser.user_agent = Some(format!(
        "cloakroom-load/{} user-{n}",
        env!("CARGO_PKG_VERSION")
    ));
    let unreachable = |source| LoadError::Unreachable {
        target: opts.target.to_string(),
        source,
    };
    if let Some((user, password)) = &opts.login {
        let _turn = gate.acquire().await;
        let began = Instant::now();
        let form = browser
            .get("/.cloakroom/login")
            .await
            .map_err(unreachable)?;
        if form.status != StatusCode::OK {
            return Err(LoadError::Login(format!(
                "GET /.cloakroom/login answered {} (is the target a cloakroom?)",
                form.status
            )));
        }
        let action = form
            .form_action()
            .unwrap_or_else(|| "/.cloakroom/login".to_owned());
        let hidden = form.hidden_inputs();
        let mut fields: Vec<(&str, &str)> = hidden
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        fields.retain(|(k, _)| *k != "return_to");
        fields.push(("return_to", target_path));
        fields.push(("username", user));
        fields.push(("password", password));
        let mut done = browser
            .post_form(&action, &fields)
            .await
            .map_err(unreachable)?;
        if done.status == StatusCode::TEMPORARY_REDIRECT {
            // URL mode points forms at /.cloakroom/f/…: follow with the body.
            let to = done.location().unwrap_or("/").to_owned();
            done = browser.post_form(&to, &fields).await.map_err(unreachable)?;
        }
        if done.status != StatusCode::SEE_OTHER {
            let why = if done.body.contains("Wrong username or password") {
                "wrong username or password".to_owned()
            } else {
                format!("the login answered {}", done.status)
            };
            return Err(LoadError::Login(why));
        }
        let location = done.location().unwrap_or("").to_owned();
        let has_session = if opts.cookieless {
            match ticket_in(&location) {
                Some(ticket) => {
                    browser.url_param = Some(("CLOAKROOMSID".into(), ticket));
                    true
                }
                None => {
                    return Err(LoadError::Login(
                        "no ticket after a cookieless login".into(),
                    ))
                }
            }
        } else {
            browser.session().is_some()
        };
        let login_us = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
        return Ok(User {
            browser,
            logged_in: true,
            has_session,
            login_us: Some(login_us),
        });
    }
    let (_, landed) = browser.visit(target_path).await.map_err(unreachable)?;
    let has_session = if opts.cookieless {
        match ticket_in(&landed) {
            Some(ticket) => {
                browser.url_param = Some(("CLOAKROOMSID".into(), ticket));
                true
            }
            None => false,
        }
    } else {
        browser.session().is_some()
    };
    Ok(User {
        browser,
        logged_in: false,
        has_session,
        login_us: None,
    })
}

/// A TLS connector trusting the CA certificates in the PEM file at `path`
/// as well as the usual roots.
fn trusting(path: &Path) -> Result<tokio_rustls::TlsConnector, LoadError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let fail = |message: String| LoadError::CaFile {
        path: path.display().to_string(),
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no certificates in the file".into()));
    }
    crate::client::tls_connector_trusting(&certs).map_err(|e| fail(e.to_string()))
}

/// The run's schedule, shared by every user.
#[derive(Clone)]
struct Plan {
    started: Instant,
    stop: Stop,
    rate: Option<f64>,
    /// Paths repeated by weight (a pick is one index).
    paths: Arc<Vec<String>>,
}

fn weighted(paths: &[(u32, String)]) -> Vec<String> {
    let total: u32 = paths.iter().map(|(w, _)| *w).sum();
    // Keep the table small: scale weights down when they are large.
    let scale = (total / 1000).max(1);
    paths
        .iter()
        .flat_map(|(w, p)| std::iter::repeat_n(p.clone(), (*w / scale).max(1) as usize))
        .collect()
}

/// One user's loop (see the module docs for closed and open loops).
async fn drive(
    mut user: User,
    plan: Plan,
    live: Arc<Live>,
    next: Arc<AtomicU64>,
    seed: u64,
) -> Tally {
    let mut tally = Tally::new();
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let due = match (plan.stop, plan.rate) {
            (Stop::Requests(n), _) if i >= n => break,
            (_, Some(rate)) => plan.started + Duration::from_secs_f64(i as f64 / rate),
            (_, None) => Instant::now(),
        };
        if let Stop::After(limit) = plan.stop {
            if due.duration_since(plan.started) >= limit {
                break;
            }
        }
        if plan.rate.is_some() {
            tokio::time::sleep_until(due.into()).await;
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let path = &plan.paths[(rng % plan.paths.len() as u64) as usize];
        let result = user.browser.request(Method::GET, path, None).await;
        let us = u64::try_from(due.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let _ = tally.latency_us.record(us);
        tally.requests += 1;
        live.requests.fetch_add(1, Ordering::Relaxed);
        match classify(&result, user.logged_in) {
            None => tally.ok += 1,
            Some(kind) => {
                if kind == "lost_session" {
                    tally.lost_sessions += 1;
                }
                *tally.errors.entry(kind).or_default() += 1;
                live.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    tally
}

/// `None` for a good answer, else the kind of error.
fn classify(result: &Result<Raw, FetchError>, logged_in: bool) -> Option<&'static str> {
    let raw = match result {
        Ok(raw) => raw,
        Err(FetchError::Connect(_)) => return Some("connect"),
        Err(FetchError::Timeout) => return Some("timeout"),
        Err(FetchError::Http(_)) => return Some("http"),
        Err(FetchError::BadUrl(_)) => return Some("bad_url"),
    };
    let to_login = raw
        .headers
        .get(http::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .is_some_and(|l| l.contains("/.cloakroom/login"));
    if logged_in
        && (raw.status == StatusCode::UNAUTHORIZED || (raw.status.is_redirection() && to_login))
    {
        return Some("lost_session");
    }
    match raw.status.as_u16() {
        200..=399 => None,
        400..=499 => Some("status_4xx"),
        _ => Some("status_5xx"),
    }
}

async fn show_progress(live: Arc<Live>, started: Instant) {
    use std::io::Write;
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let requests = live.requests.load(Ordering::Relaxed);
        let errors = live.errors.load(Ordering::Relaxed);
        let secs = started.elapsed().as_secs();
        eprint!(
            "\r{secs:>4} s  {requests:>10} requests  {:>8} req/s  {errors} errors   ",
            requests - last
        );
        let _ = std::io::stderr().flush();
        last = requests;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_kept_in_proportion() {
        let w = weighted(&[(3, "/a".into()), (1, "/b".into())]);
        assert_eq!(w.iter().filter(|p| *p == "/a").count(), 3);
        assert_eq!(w.iter().filter(|p| *p == "/b").count(), 1);
    }

    #[test]
    fn paths_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, "# mix\n3 /a\n\n1 /b?x=1\n").unwrap();
        assert_eq!(
            read_paths(&good).unwrap(),
            vec![(3, "/a".to_owned()), (1, "/b?x=1".to_owned())]
        );
        for bad in ["0 /a\n", "x /a\n", "3 a\n", "/a\n", "# nothing\n"] {
            let f = dir.path().join("bad");
            std::fs::write(&f, bad).unwrap();
            assert!(read_paths(&f).is_err(), "{bad:?}");
        }
        assert!(read_paths(&dir.path().join("missing")).is_err());
    }
}
