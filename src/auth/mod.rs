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
use self::rules::Rules;
use self::throttle::Throttle;
use crate::config::{AuthConfig, ConfigError};

/// Password checks running at once. Each argon2id check holds ~19 MiB and a
/// core for tens of milliseconds: a burst of logins queues instead of
/// exhausting memory or starving request handling.
const CONCURRENT_PASSWORD_CHECKS: usize = 4;

/// Users, rules and throttling.
pub struct Auth {
    /// Replaced whole on reload (readers take an `Arc`; a std lock, never
    /// held across an await).
    users: std::sync::RwLock<Option<Arc<Users>>>,
    /// The access rules.
    pub rules: Rules,
    /// Failed-login counters.
    pub throttle: Limiter,
    checks: Semaphore,
    /// One argon2 working memory per concurrent check, reused.
    memory: Arc<std::sync::Mutex<Vec<password::Memory>>>,
}

impl Auth {
    /// Loads the users file (if any) and compiles the rules; failures are
    /// counted in `shared` Redis when given, else in this process.
    pub fn open(
        cfg: &AuthConfig,
        shared: Option<crate::redis::Redis>,
    ) -> Result<Auth, ConfigError> {
        let users = match &cfg.users_file {
            Some(path) => Some(Arc::new(Users::load(path).map_err(|message| {
                ConfigError::Key {
                    key: "auth.users_file".into(),
                    message,
                }
            })?)),
            None => None,
        };
        Ok(Auth {
            users: std::sync::RwLock::new(users),
            rules: Rules::new(&cfg.protect, &cfg.public),
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
        })
    }

    /// Whether the login form can log anyone in.
    pub fn has_users(&self) -> bool {
        self.users().is_some()
    }

    /// The users now in force.
    pub fn users(&self) -> Option<Arc<Users>> {
        self.users.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `users` in force (a reload); returns the names that are gone.
    pub fn replace_users(&self, users: Option<Arc<Users>>) -> Vec<String> {
        let mut slot = self.users.write().unwrap_or_else(|p| p.into_inner());
        let gone = match (&*slot, &users) {
            (Some(old), Some(new)) => old
                .names()
                .filter(|n| !new.contains(n))
                .map(str::to_owned)
                .collect(),
            (Some(old), None) => old.names().map(str::to_owned).collect(),
            (None, _) => Vec::new(),
        };
        *slot = users;
        gone
    }

    /// Checks a password off the request threads. Unknown users cost the
    /// same as known ones.
    pub async fn check_password(&self, user: &str, password: &str) -> bool {
        let Some(users) = self.users() else {
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
