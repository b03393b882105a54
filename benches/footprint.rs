//! What sessions cost in memory, and what a file store costs at start-up.
//!
//! Run: `cargo bench --bench footprint` (1,000,000 sessions in the memory
//! store; 100,000 session files opened by the file store). Under
//! `cargo test` it runs the same steps at a hundredth of the size, as a
//! smoke test.
//!
//! Memory is the process's resident set before and after filling the store
//! (`/proc/self/statm`), divided by the sessions: what a session really
//! costs, map overhead and allocator slack included.

use std::time::{Duration, Instant};

use cloakroom::session::data::Session;
use cloakroom::session::id::{Keys, SessionId};
use cloakroom::session::store::file::FileStore;
use cloakroom::session::store::memory::MemoryStore;
use cloakroom::session::store::{Changes, Save, SessionStore, Write};

const NOW: u64 = 1_800_000_000_000;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn logged_in(n: usize) -> Session {
    let mut s = Session::new(NOW);
    s.user = Some(format!("user{n:07}"));
    s.client = Some([10, 1, 2, 3].into());
    s
}

fn save(id: &SessionId, session: Session) -> Changes {
    Changes {
        now: NOW,
        save: Some(Save {
            key: id.key(),
            write: Write::Create,
            session,
            expires_at: NOW + 3_600_000,
            ends_by: NOW + 3_600_000,
            expect_rev: None,
        }),
        revoke: None,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (sessions, files) = if full {
        (1_000_000, 100_000)
    } else {
        (10_000, 1_000)
    };
    let keys = Keys::new(&[vec![42; 32]]).unwrap();
    let ids: Vec<SessionId> = (0..sessions)
        .map(|_| SessionId::generate(&keys, NOW / 1000))
        .collect();

    // Memory store: resident bytes per logged-in session.
    let store = MemoryStore::new();
    let before = rss_bytes();
    for (n, id) in ids.iter().enumerate() {
        store.commit(save(id, logged_in(n))).await.unwrap();
    }
    let after = rss_bytes();
    let per = (after.saturating_sub(before)) as f64 / sessions as f64;
    let name = "user0000000".len();
    println!(
        "memory store: {sessions} logged-in sessions, {:.0} bytes each resident ({:.0} beyond the {name}-byte user name)",
        per,
        per - name as f64
    );
    assert_eq!(store.stats().await.unwrap().records, sessions);
    drop(store);

    // File store: start-up with `files` session files on disk.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions");
    {
        let file = FileStore::open(&path, NOW).unwrap();
        for (n, id) in ids.iter().take(files).enumerate() {
            file.commit(save(id, logged_in(n))).await.unwrap();
        }
    }
    let mut times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let file = FileStore::open(&path, NOW).unwrap();
        times.push(started.elapsed());
        assert_eq!(file.stats().await.unwrap().records, files);
    }
    times.sort();
    println!(
        "file store: opened with {files} session files in {:.0} ms (median of 3; fastest {:.0} ms)",
        ms(times[1]),
        ms(times[0])
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
