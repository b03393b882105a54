//! The session path's building blocks: minting and verifying IDs, finding
//! ours in a realistic `Cookie` header, and store lookups (hit and miss) in
//! the memory and file stores, and the identity assertion (a cached token
//! against a freshly signed one).
//!
//! Run: `cargo bench --bench sessions`. Compare figures only within one run.

use criterion::{criterion_group, criterion_main, Criterion};
use http::header::{HeaderMap, HeaderValue, COOKIE};

use cloakroom::session::cookie;
use cloakroom::session::data::Session;
use cloakroom::session::id::{Keys, SessionId};
use cloakroom::session::store::file::FileStore;
use cloakroom::session::store::memory::MemoryStore;
use cloakroom::session::store::{Changes, Save, SessionStore, Write};
const NOW: u64 = 1_800_000_000_000;
const SESSIONS: usize = 10_000;

fn keys() -> Keys {
    Keys::new(&[vec![42; 32], vec![7; 32]]).unwrap()
}

fn ids(n: usize) -> Vec<SessionId> {
    let keys = keys();
    (0..n)
        .map(|_| SessionId::generate(&keys, NOW / 1000))
        .collect()
}

fn session() -> Session {
    let mut s = Session::new(NOW);
    s.user = Some("alice".into());
    s.values.insert("csrf".into(), "x".repeat(43));
    s
}

/// A Cookie header as a browser sends it to an app with analytics and a
/// framework session: ours sits among eight others.
fn realistic_cookie_header(id: &SessionId) -> HeaderMap {
    let value = format!(
        "_ga=GA1.1.1234567890.1700000000; _gid=GA1.1.987654321.1700000000; \
         theme=dark; lang=en-GB; PHPSESSID=9f8e7d6c5b4a39281706f5e4d3c2b1a0; \
         CLOAKROOMSID={}; consent=%7B%22necessary%22%3Atrue%7D; \
         _fbp=fb.1.1700000000000.1234567890; cart=3",
        id.as_str()
    );
    let mut h = HeaderMap::new();
    h.insert(COOKIE, HeaderValue::from_str(&value).unwrap());
    h
}

fn ids_and_cookies(c: &mut Criterion) {
    let keys = keys();
    let id = SessionId::generate(&keys, NOW / 1000);
    let text = id.as_str().as_bytes().to_vec();
    let mut forged = text.clone();
    forged[20] ^= 1;
    let headers = realistic_cookie_header(&id);

    let mut g = c.benchmark_group("id");
    g.bench_function("mint_and_sign", |b| {
        b.iter(|| SessionId::generate(&keys, NOW / 1000))
    });
    g.bench_function("verify_valid", |b| b.iter(|| keys.verify(&text)));
    // A forged ID is checked against both keys (rotation): the worst case.
    g.bench_function("verify_forged", |b| b.iter(|| keys.verify(&forged)));
    g.finish();

    let mut g = c.benchmark_group("cookie");
    g.bench_function("find_ours_in_9_cookies", |b| {
        b.iter(|| cookie::values(&headers, "CLOAKROOMSID").next())
    });
    g.bench_function("strip_ours_from_9_cookies", |b| {
        b.iter_batched(
            || headers.clone(),
            |mut h| cookie::strip(&mut h, "CLOAKROOMSID"),
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn stores(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stored = ids(SESSIONS);
    let absent = ids(1).pop().unwrap();
    let dir = tempfile::tempdir().unwrap();

    let memory = MemoryStore::new();
    let file = rt.block_on(async {
        let file = FileStore::open(&dir.path().join("sessions"), NOW).unwrap();
        for id in &stored {
            let save = || Changes {
                now: NOW,
                save: Some(Save {
                    key: id.key(),
                    write: Write::Create,
                    session: session(),
                    expires_at: NOW + 3_600_000,
                    ends_by: NOW + 3_600_000,
                    expect_rev: None,
                }),
                revoke: None,
            };
            memory.commit(save()).await.unwrap();
            file.commit(save()).await.unwrap();
        }
        file
    });
    let stored: Vec<_> = stored.iter().map(SessionId::key).collect();
    let absent = absent.key();

    let mut g = c.benchmark_group("store");
    let mut i = 0usize;
    g.bench_function("memory_hit", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % SESSIONS;
            memory.load(&stored[i], NOW + 1)
        })
    });
    g.bench_function("memory_miss", |b| {
        b.to_async(&rt).iter(|| memory.load(&absent, NOW + 1))
    });
    // Served from memory, no disk read.
    g.bench_function("file_hit", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 1) % SESSIONS;
            file.load(&stored[i], NOW + 1)
        })
    });
    g.bench_function("file_miss", |b| {
        b.to_async(&rt).iter(|| file.load(&absent, NOW + 1))
    });
    g.finish();
}

/// What the signed assertion costs a request: the common case reuses the
/// session's token; one request in a few minutes per session signs anew.
fn assertion(c: &mut Criterion) {
    use cloakroom::assertion::Assertion;
    use cloakroom::config::AssertionConfig;
    let dir = tempfile::tempdir().unwrap();
    let signer = Assertion::open(
        &AssertionConfig {
            header: "X-Cloakroom-Assertion".into(),
            audience: "https://app.example".into(),
            key_file: dir.path().join("assertion.key"),
            lifetime: std::time::Duration::from_secs(300),
        },
        true,
    )
    .unwrap();
    let ids = ids(1);
    let key = ids[0].key();
    let now = NOW / 1000;
    signer.token(key, "alice", now, || "sid".into()).unwrap();

    let mut g = c.benchmark_group("assertion");
    g.bench_function("cached", |b| {
        b.iter(|| signer.token(key, "alice", now, || "sid".into()))
    });
    // Past the renewal point every call signs (and replaces the entry).
    let mut at = now;
    g.bench_function("signed", |b| {
        b.iter(|| {
            at += 300;
            signer.token(key, "alice", at, || "sid".into())
        })
    });
    g.finish();
}

criterion_group!(benches, ids_and_cookies, stores, assertion);
criterion_main!(benches);
