//! `session.store = "file"` (the default): one JSON file per session under
//! `session.dir`, like PHP's `save_path`, and all of them in memory.
//!
//! - Requests read from memory only; the files are read once, at start-up.
//! - Writes are atomic (temp file with mode 0600, fsync, rename, fsync of
//!   the directory), and serialized: each write takes the newest state from
//!   memory, so a slow write can never overwrite a newer one.
//! - A file holds one [`Record`]: a session with the instant it expires, or
//!   a tombstone with the instant it may be forgotten.
//! - A corrupt or truncated file is logged and left alone, never a crash.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dashmap::DashMap;

use super::memory::{self, UserIndex};
use super::{Changes, Lookup, Record, SessionKey, SessionStore, Stats, StoreError};
use crate::session::data::Session;

/// Sessions in files, served from memory. Cheap to clone.
#[derive(Clone)]
pub struct FileStore {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    records: memory::Records,
    by_user: UserIndex,
    /// Serializes writes. A tokio mutex, since it is held across the
    /// blocking write that runs on the blocking pool.
    writing: tokio::sync::Mutex<()>,
}

impl FileStore {
    /// Opens `dir` (created with mode 0700 if missing) and reads every
    /// record in it; ended ones are deleted, corrupt ones skipped.
    pub fn open(dir: &Path, now: u64) -> std::io::Result<FileStore> {
        create_private_dir(dir)?;
        let records = DashMap::new();
        let by_user = UserIndex::default();
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
            let Some(key) = name.strip_suffix(".json").and_then(SessionKey::parse_hex) else {
                continue;
            };
            let parsed = std::fs::read(entry.path())
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<Record>(&bytes).map_err(|e| e.to_string())
                });
            match parsed {
                Ok(record) if record.ended(now) => {
                    expired += 1;
                    let _ = std::fs::remove_file(entry.path());
                }
                Ok(record) => {
                    loaded += 1;
                    if let Some(user) = record.user() {
                        by_user.add(user, key);
                    }
                    records.insert(key, Box::new(record));
                }
                Err(error) => {
                    corrupt += 1;
                    tracing::warn!(file = %entry.path().display(), %error, "corrupt session file ignored");
                }
            }
        }
        tracing::info!(dir = %dir.display(), loaded, expired, corrupt, "file session store opened");
        Ok(FileStore {
            shared: Arc::new(Shared {
                dir: dir.to_owned(),
                records,
                by_user,
                writing: tokio::sync::Mutex::new(()),
            }),
        })
    }

    fn path_of(&self, key: &SessionKey) -> PathBuf {
        self.shared.dir.join(format!("{}.json", key.hex()))
    }

    /// Writes the newest in-memory state of `key` to disk (or removes its
    /// file when it is no longer held).
    async fn write(&self, key: SessionKey) -> Result<(), StoreError> {
        let _turn = self.shared.writing.lock().await;
        let snapshot = self.shared.records.get(&key).map(|r| r.clone());
        let path = self.path_of(&key);
        let dir = self.shared.dir.clone();
        tokio::task::spawn_blocking(move || match snapshot {
            Some(record) => write_atomically(&dir, &path, &record),
            None => remove_if_present(&path),
        })
        .await
        .map_err(StoreError::unavailable)??;
        Ok(())
    }
}

impl SessionStore for FileStore {
    async fn load_latest(&self, key: &SessionKey, now: u64) -> Result<Lookup, StoreError> {
        self.load(key, now).await
    }

    async fn load(&self, key: &SessionKey, now: u64) -> Result<Lookup, StoreError> {
        Ok(self
            .shared
            .records
            .get(key)
            .map_or(Lookup::Unknown, |r| r.lookup(now)))
    }

    async fn commit(&self, changes: Changes) -> Result<(), StoreError> {
        let applied = memory::apply(
            &self.shared.records,
            &self.shared.by_user,
            &changes,
            changes.now,
        );
        // A revocation stands even when the save beside it was refused.
        if let Some(revoke) = &changes.revoke {
            self.write(revoke.key).await?;
        }
        applied?;
        if let Some(save) = &changes.save {
            self.write(save.key).await?;
        }
        Ok(())
    }

    async fn purge(&self, now: u64) -> Result<usize, StoreError> {
        let gone = memory::purge(&self.shared.records, &self.shared.by_user, now);
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
            .map_err(StoreError::unavailable)?;
        }
        Ok(count)
    }

    async fn stats(&self) -> Result<Stats, StoreError> {
        Ok(Stats {
            records: self.shared.records.len(),
        })
    }

    async fn keys(&self) -> Result<Vec<SessionKey>, StoreError> {
        Ok(self.shared.records.iter().map(|e| *e.key()).collect())
    }

    async fn of_user(
        &self,
        user: &str,
        now: u64,
    ) -> Result<Vec<(SessionKey, Session)>, StoreError> {
        Ok(memory::of_user(
            &self.shared.records,
            &self.shared.by_user,
            user,
            now,
        ))
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
fn write_atomically(dir: &Path, path: &Path, record: &Record) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(record)?;
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

#[cfg(test)]
mod tests {
    use super::super::conformance;
    use super::*;

    fn live(user: &str, expires_at: u64) -> Record {
        let mut session = Session::new(1_000_000);
        session.user = Some(user.into());
        Record::Live {
            session,
            expires_at,
        }
    }

    #[tokio::test]
    async fn conforms() {
        let root = tempfile::tempdir().unwrap();
        let counter = std::sync::atomic::AtomicUsize::new(0);
        conformance::run(false, || {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            FileStore::open(&root.path().join(n.to_string()), 0).unwrap()
        })
        .await;
    }

    #[tokio::test]
    async fn records_survive_a_reopen_and_files_are_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = &root.path().join("sessions");
        let (key, gone) = (conformance::key(), conformance::key());
        let store = FileStore::open(dir, 1_000_000).unwrap();
        let Record::Live { session, .. } = live("alice", 2_000_000) else {
            unreachable!()
        };
        store
            .commit(Changes {
                now: 1_000_000,
                save: Some(super::super::Save {
                    key,
                    write: super::super::Write::Create,
                    session,
                    expires_at: 2_000_000,
                    ends_by: 2_000_000,
                    expect_rev: None,
                }),
                revoke: Some(super::super::Revoke {
                    key: gone,
                    until: 2_000_000,
                }),
            })
            .await
            .unwrap();

        let path = dir.join(format!("{}.json", key.hex()));
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
        assert_eq!(leftovers.len(), 2, "temp files left: {leftovers:?}");

        let reopened = FileStore::open(dir, 1_000_500).unwrap();
        let Lookup::Live(back) = reopened.load(&key, 1_000_500).await.unwrap() else {
            panic!("session lost across reopen")
        };
        assert_eq!(back.user.as_deref(), Some("alice"));
        assert_eq!(reopened.load(&gone, 1_000_500).await.unwrap(), Lookup::Gone);
        assert_eq!(reopened.of_user("alice", 1_000_500).await.unwrap().len(), 1);
        // Past its expiry, a reopen forgets it and removes the file.
        let later = FileStore::open(dir, 2_000_000).unwrap();
        assert_eq!(later.stats().await.unwrap().records, 0);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn corrupt_files_are_skipped_and_expired_ones_removed() {
        let dir = tempfile::tempdir().unwrap();
        let corrupt = dir.path().join(format!("{}.json", "ab".repeat(16)));
        std::fs::write(
            &corrupt,
            b"{\"live\": {\"session\": {\"created\": 12, \"last_se",
        )
        .unwrap();
        std::fs::write(
            dir.path().join(format!("{}.json", "cd".repeat(16))),
            b"\xff\x00",
        )
        .unwrap();
        let expired_path = dir.path().join(format!("{}.json", "ef".repeat(16)));
        std::fs::write(&expired_path, serde_json::to_vec(&live("old", 5)).unwrap()).unwrap();
        std::fs::write(dir.path().join(".x.tmp"), b"half").unwrap();
        std::fs::write(dir.path().join("README"), b"not ours").unwrap();

        let store = FileStore::open(dir.path(), 10_000_000).unwrap();
        assert_eq!(store.stats().await.unwrap().records, 0);
        assert!(corrupt.exists(), "a corrupt file is left for inspection");
        assert!(!expired_path.exists(), "an expired file is removed");
        assert!(!dir.path().join(".x.tmp").exists());
        assert!(dir.path().join("README").exists());
    }
}
