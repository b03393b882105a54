//! Who may see what: the users and their passwords, the access rules, and
//! throttling of failed logins. The login endpoints themselves are in
//! [`crate::login`].
//!
//! - [`password`]: argon2id hashing and the users file.
//! - [`rules`]: `auth.protect` / `auth.public`, matched on normalized paths.
//! - [`throttle`]: failure counters per client IP and per username.
//! - [`limiter`]: those counters in this process, or shared through Redis.

pub mod limiter;
pub mod password;
pub mod rules;
pub mod throttle;

use std::sync::Arc;

use tokio::sync::Semaphore;

use self::limiter::Limiter;
use self::password::Users;
use self::throttle::Throttle;
use crate::config::AuthConfig;

/// Password checks running at once. Each argon2id check holds ~19 MiB and a
/// core for tens of milliseconds: a burst of logins queues instead of
/// exhausting memory or starving request handling.
const CONCURRENT_PASSWORD_CHECKS: usize = 4;

/// The state of logging in that outlives a reload: failed-login counters
/// and the password checker. (The users and the rules are settings:
/// [`crate::settings::Settings`].)
pub struct Auth {
    /// Failed-login counters.
    pub throttle: Limiter,
    checks: Semaphore,
    /// One argon2 working memory per concurrent check, reused.
    memory: Arc<std::sync::Mutex<Vec<password::Memory>>>,
}

impl Auth {
    /// Counts failures in `shared` Redis when given, else in this process.
    pub fn open(cfg: &AuthConfig, shared: Option<crate::redis::Redis>) -> Auth {
        Auth {
            throttle: match shared {
                Some(redis) => Limiter::shared(
                    redis,
                    cfg.max_failures_per_ip,
                    cfg.max_failures_per_user,
                    cfg.failure_window,
                ),
                None => Limiter::Local(Throttle::new(
                    cfg.max_failures_per_ip,
                    cfg.max_failures_per_user,
                    cfg.failure_window,
                )),
            },
            checks: Semaphore::new(CONCURRENT_PASSWORD_CHECKS),
            memory: Arc::default(),
        }
    }

    /// Checks a password off the request threads. Unknown users cost the
    /// same as known ones.
    pub async fn check_password(
        &self,
        users: Option<&Arc<Users>>,
        user: &str,
        password: &str,
    ) -> bool {
        let Some(users) = users.cloned() else {
            return false;
        };
        let Ok(_turn) = self.checks.acquire().await else {
            return false;
        };
        let (user, password) = (user.to_owned(), password.to_owned());
        let pool = self.memory.clone();
        tokio::task::spawn_blocking(move || {
            // The semaphore admits as many checks as there are buffers at
            // most; the lock is held only to take and return one (a std
            // mutex: never held across an await).
            let mut memory = pool
                .lock()
                .map(|mut p| p.pop())
                .ok()
                .flatten()
                .unwrap_or_default();
            let ok = users.check(&user, &password, &mut memory);
            if let Ok(mut p) = pool.lock() {
                p.push(memory);
            }
            ok
        })
        .await
        .unwrap_or(false)
    }
}
