//! `session.store = "file"` (the default): one JSON file per session under
//! `session.dir`, like PHP's `save_path`, and all of them in memory.
//!
//! - Requests read from memory only; the files are read once, at start-up.
//! - Writes are atomic (temp file with mode 0600, fsync, rename, fsync of
//!   the directory), and serialized: each write takes the newest state from
//!   memory, so a slow write can never overwrite a newer one.
//! - A visit updates "last seen" in memory; it reaches the disk only when the
//!   copy there is older than [`FileStore::touch_interval`] (PHP's
//!   `lazy_write`). After a restart a session may therefore look up to that
//!   much older than it was, never younger.
//! - A corrupt or truncated file is logged and left alone, never a crash.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use super::{lookup_of, tombstone, Lookup, SessionStore, StoreError};
use crate::session::data::{Lifetimes, Session};
use crate::session::id::SessionId;

/// Sessions in files, served from memory. Cheap to clone.
#[derive(Clone)]
pub struct FileStore {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    lifetimes: Lifetimes,
    touch_interval: u64,
    cache: DashMap<[u8; 16], Cached>,
    /// Serializes writes. A tokio mutex, since it is held across the
    /// blocking write that runs on the blocking pool.
    writing: tokio::sync::Mutex<()>,
}

struct Cached {
    session: Session,
    /// The `last_seen` of the copy on disk.
    persisted_seen: u64,
}

impl FileStore {
    /// Opens `dir` (created with mode 0700 if missing) and reads every
    /// session in it; expired ones are deleted, corrupt ones skipped.
    pub fn open(dir: &Path, lifetimes: Lifetimes, now: u64) -> std::io::Result<FileStore> {
        create_private_dir(dir)?;
        let cache = DashMap::new();
        let (mut loaded, mut expired, mut corrupt) = (0usize, 0usize, 0usize);
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') && name.ends_with(".tmp") {
                // A write interrupted by a crash; its target is intact.
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let Some(nonce) = name.strip_suffix(".json").and_then(parse_hex) else {
                continue;
            };
            let parsed = std::fs::read(entry.path())
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<Session>(&bytes).map_err(|e| e.to_string())
                });
            match parsed {
                Ok(session) if session.expired(&lifetimes, now) => {
                    expired += 1;
                    let _ = std::fs::remove_file(entry.path());
                }
                Ok(session) => {
                    loaded += 1;
                    let persisted_seen = session.last_seen;
                    cache.insert(
                        nonce,
                        Cached {
                            session,
                            persisted_seen,
                        },
                    );
                }
                Err(error) => {
                    corrupt += 1;
                    tracing::warn!(file = %entry.path().display(), %error, "corrupt session file ignored");
                }
            }
        }
        tracing::info!(dir = %dir.display(), loaded, expired, corrupt, "file session store opened");
        let touch_interval = (lifetimes.idle / 4).min(Duration::from_secs(60));
        Ok(FileStore {
            shared: Arc::new(Shared {
                dir: dir.to_owned(),
                lifetimes,
                touch_interval: u64::try_from(touch_interval.as_millis()).unwrap_or(u64::MAX),
                cache,
                writing: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// How stale "last seen" on disk may get before a visit writes it.
    pub fn touch_interval(&self) -> Duration {
        Duration::from_millis(self.shared.touch_interval)
    }

    fn path_of(&self, key: &str) -> PathBuf {
        self.shared.dir.join(format!("{key}.json"))
    }

    /// Writes the newest in-memory state of `id` to disk (or removes its
    /// file when it is no longer held).
    async fn write(&self, id: &SessionId) -> Result<(), StoreError> {
        let _turn = self.shared.writing.lock().await;
        let snapshot = self.shared.cache.get_mut(id.nonce()).map(|mut c| {
            c.persisted_seen = c.session.last_seen;
            c.session.clone()
        });
        let path = self.path_of(&id.storage_key());
        let dir = self.shared.dir.clone();
        let result = tokio::task::spawn_blocking(move || match snapshot {
            Some(session) => write_atomically(&dir, &path, &session),
            None => remove_if_present(&path),
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(result?)
    }
}

impl SessionStore for FileStore {
    async fn visit(&self, id: &SessionId, now: u64) -> Result<Lookup, StoreError> {
        let Some(mut cached) = self.shared.cache.get_mut(id.nonce()) else {
            return Ok(Lookup::Unknown);
        };
        let lookup = lookup_of(&cached.session, &self.shared.lifetimes, now);
        let Lookup::Live(_) = lookup else {
            return Ok(lookup);
        };
        cached.session.last_seen = cached.session.last_seen.max(now);
        let stale = now.saturating_sub(cached.persisted_seen) >= self.shared.touch_interval;
        let session = cached.session.clone();
        if stale {
            // Claim the write now so concurrent visits do not all spawn one.
            cached.persisted_seen = now;
            drop(cached);
            let (store, id) = (self.clone(), id.clone());
            tokio::spawn(async move {
                if let Err(error) = store.write(&id).await {
                    tracing::warn!(%error, "could not record a session visit on disk");
                }
            });
        }
        Ok(Lookup::Live(session))
    }

    async fn save(&self, id: &SessionId, session: &Session) -> Result<(), StoreError> {
        let cached = Cached {
            session: session.clone(),
            persisted_seen: session.last_seen,
        };
        // Checked and written under the shard's lock: a tombstone wins.
        match self.shared.cache.entry(*id.nonce()) {
            Entry::Occupied(e) if e.get().session.revoked => return Ok(()),
            Entry::Occupied(mut e) => {
                e.insert(cached);
            }
            Entry::Vacant(e) => {
                e.insert(cached);
            }
        }
        self.write(id).await
    }

    async fn revoke(&self, id: &SessionId, now: u64) -> Result<(), StoreError> {
        let record = tombstone(id, now);
        let persisted_seen = record.last_seen;
        self.shared.cache.insert(
            *id.nonce(),
            Cached {
                session: record,
                persisted_seen,
            },
        );
        self.write(id).await
    }

    async fn purge(&self, now: u64) -> Result<usize, StoreError> {
        let lifetimes = &self.shared.lifetimes;
        let mut gone = Vec::new();
        self.shared.cache.retain(|nonce, c| {
            let keep = !c.session.expired(lifetimes, now);
            if !keep {
                gone.push(hex(nonce));
            }
            keep
        });
        let count = gone.len();
        if count > 0 {
            let _turn = self.shared.writing.lock().await;
            let paths: Vec<PathBuf> = gone.iter().map(|k| self.path_of(k)).collect();
            tokio::task::spawn_blocking(move || {
                for path in paths {
                    if let Err(error) = remove_if_present(&path) {
                        tracing::warn!(file = %path.display(), %error, "could not remove an expired session file");
                    }
                }
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        }
        Ok(count)
    }

    fn count(&self) -> usize {
        self.shared.cache.len()
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // File names are the random half of IDs (useless without the key's
        // signature), but nobody else needs to list them.
        if std::fs::metadata(dir)?.permissions().mode() & 0o077 != 0 {
            tracing::warn!(dir = %dir.display(), "the session directory is open to others; chmod 700 it");
        }
    }
    Ok(())
}

/// temp file (0600) → write → fsync → rename over the target → fsync dir.
fn write_atomically(dir: &Path, path: &Path, session: &Session) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(session)?;
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(std::io::Error::other)?;
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("session");
    let tmp = dir.join(format!(".{stem}.{}.tmp", hex(&suffix)));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&tmp).and_then(|mut file| {
        file.write_all(&bytes)?;
        file.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename is durable only once the directory entry is.
    std::fs::File::open(dir)?.sync_all()
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::super::conformance::{self, LIFETIMES};
    use super::*;
    use crate::session::id::Keys;

    #[tokio::test]
    async fn conforms() {
        let root = tempfile::tempdir().unwrap();
        let counter = std::sync::atomic::AtomicUsize::new(0);
        conformance::run(|| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            FileStore::open(&root.path().join(n.to_string()), LIFETIMES, 0).unwrap()
        })
        .await;
    }

    #[tokio::test]
    async fn sessions_survive_a_reopen_and_files_are_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = &root.path().join("sessions");
        let keys = Keys::new(&[vec![3; 32]]).unwrap();
        let id = SessionId::generate(&keys, 1000);
        let mut s = Session::new(1_000_000);
        s.user = Some("alice".into());
        let store = FileStore::open(dir, LIFETIMES, 1_000_000).unwrap();
        store.save(&id, &s).await.unwrap();

        let path = dir.join(format!("{}.json", id.storage_key()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = std::fs::metadata(dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "session dir readable by others");
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "temp files left: {leftovers:?}");

        let reopened = FileStore::open(dir, LIFETIMES, 1_000_500).unwrap();
        let Lookup::Live(back) = reopened.visit(&id, 1_000_500).await.unwrap() else {
            panic!("session lost across reopen")
        };
        assert_eq!(back.user.as_deref(), Some("alice"));
    }

    #[tokio::test]
    async fn corrupt_files_are_skipped_and_expired_ones_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path()).unwrap();
        let corrupt = dir.path().join(format!("{}.json", "ab".repeat(16)));
        std::fs::write(&corrupt, b"{\"created\": 12, \"last_se").unwrap();
        std::fs::write(
            dir.path().join(format!("{}.json", "cd".repeat(16))),
            b"\xff\x00",
        )
        .unwrap();
        let expired = Session::new(0);
        let expired_path = dir.path().join(format!("{}.json", "ef".repeat(16)));
        std::fs::write(&expired_path, serde_json::to_vec(&expired).unwrap()).unwrap();
        std::fs::write(dir.path().join(".x.tmp"), b"half").unwrap();
        std::fs::write(dir.path().join("README"), b"not ours").unwrap();

        let store = FileStore::open(dir.path(), LIFETIMES, 10_000_000).unwrap();
        assert_eq!(store.count(), 0);
        assert!(corrupt.exists(), "a corrupt file is left for inspection");
        assert!(!expired_path.exists(), "an expired file is removed");
        assert!(!dir.path().join(".x.tmp").exists());
        assert!(dir.path().join("README").exists());
    }

    #[tokio::test]
    async fn visits_reach_the_disk_only_after_the_touch_interval() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::new(&[vec![3; 32]]).unwrap();
        let id = SessionId::generate(&keys, 1000);
        let store = FileStore::open(dir.path(), LIFETIMES, 0).unwrap();
        let interval = u64::try_from(store.touch_interval().as_millis()).unwrap();
        assert_eq!(interval, 15_000, "a quarter of the 60 s idle limit");
        store.save(&id, &Session::new(1_000_000)).await.unwrap();
        let path = dir.path().join(format!("{}.json", id.storage_key()));
        let on_disk = || {
            serde_json::from_slice::<Session>(&std::fs::read(&path).unwrap())
                .unwrap()
                .last_seen
        };

        for k in 1..10 {
            store.visit(&id, 1_000_000 + k * 1000).await.unwrap();
        }
        assert_eq!(
            on_disk(),
            1_000_000,
            "a visit within the interval wrote the disk"
        );

        store.visit(&id, 1_000_000 + interval).await.unwrap();
        // The write runs in the background: poll for it (bounded).
        for _ in 0..400 {
            if on_disk() == 1_000_000 + interval {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(on_disk(), 1_000_000 + interval);
    }
}
