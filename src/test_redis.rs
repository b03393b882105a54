//! Real `redis-server` processes for tests (the library's own and those in
//! `tests/`): one server, or a three-node Cluster, on free loopback ports.
//! Not used by the proxy itself; it lives in the library so that both kinds
//! of test share one copy.
//!
//! Each server runs under a small shell that kills it when the test process
//! goes away (its stdin closes), so no server outlives its tests, even
//! when they are shared by a whole test binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::{RedisConfig, RedisServers};

/// One `redis-server` on 127.0.0.1.
pub struct Server {
    /// Its port.
    pub port: u16,
    pid: u32,
    dir: PathBuf,
    extra: Vec<String>,
    _guard: Child,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().unwrap().port()
}

fn scratch_dir(port: u16) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cloakroom-redis-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("make a directory for redis-server");
    dir
}

impl Server {
    /// Starts an empty server on a free port and waits until it answers.
    /// Panics (failing the test) when `redis-server` is not installed: the
    /// test command installs it, and a test must never skip silently.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// [`Server::start`] on `port` (a test that started the proxy first).
    pub fn start_on(port: u16) -> Server {
        Server::launch(port, scratch_dir(port), Vec::new())
    }

    /// [`Server::start`] with extra `redis-server` arguments.
    pub fn start_with(extra: &[&str]) -> Server {
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        // A free port can be taken by someone else before the server binds
        // it: then the server exits at once, and another port is tried.
        for _ in 0..3 {
            let port = free_port();
            if let Some(server) = Server::try_launch(port, scratch_dir(port), extra.clone()) {
                return server;
            }
        }
        panic!("redis-server did not start (is it installed? `bash tests/run.sh` installs it)");
    }

    /// A server on `port`: `extra` that starts with a config file (a
    /// sentinel's) goes first and gets no persistence settings.
    fn launch(port: u16, dir: PathBuf, extra: Vec<String>) -> Server {
        Server::try_launch(port, dir, extra).unwrap_or_else(|| {
            panic!("redis-server did not start on port {port} (is it installed? `bash tests/run.sh` installs it)")
        })
    }

    fn try_launch(port: u16, dir: PathBuf, extra: Vec<String>) -> Option<Server> {
        let sentinel = extra.iter().any(|a| a == "--sentinel");
        let mut args: Vec<String> = Vec::new();
        if sentinel {
            args.extend(extra.iter().cloned());
        }
        args.extend([
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
        ]);
        if !sentinel {
            args.extend([
                "--save".into(),
                String::new(),
                "--appendonly".into(),
                "no".into(),
                "--dir".into(),
                dir.display().to_string(),
            ]);
            args.extend(extra.iter().cloned());
        }
        let mut guard = Command::new("sh")
            .arg("-c")
            .arg(r#"redis-server "$@" >/dev/null 2>&1 & echo $!; read _; kill -9 $! 2>/dev/null"#)
            .arg("sh")
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start sh");
        let mut line = String::new();
        BufReader::new(guard.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let pid: u32 = line.trim().parse().expect("redis-server pid");
        let server = Server {
            port,
            pid,
            dir,
            extra,
            _guard: guard,
        };
        server.wait_until_up().then_some(server)
    }

    /// Whether it answers within 10 s (`false` at once if it exited).
    fn wait_until_up(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            // A server with a password answers NOAUTH: it is up all the same.
            let up = command(self.port, &["PING"])
                .is_some_and(|r| r.starts_with("+PONG") || r.starts_with("-NOAUTH"));
            if up {
                return true;
            }
            if !alive(self.pid) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A store configuration for this server.
    pub fn config(&self, prefix: &str) -> RedisConfig {
        RedisConfig {
            servers: RedisServers::Single(self.url()),
            prefix: prefix.to_owned(),
            timeout: Duration::from_millis(250),
            ca_file: None,
        }
    }

    /// Sends one command (inline protocol) and returns the raw reply.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        command(self.port, args)
    }

    /// SIGSTOP: the server keeps its connections and answers nothing.
    pub fn freeze(&self) {
        signal(self.pid, "-STOP");
    }

    /// SIGCONT.
    pub fn thaw(&self) {
        signal(self.pid, "-CONT");
    }

    /// Kills the server and starts an empty one on the same port.
    pub fn replace_with_empty(self) -> Server {
        let (port, dir, extra) = (self.port, self.dir.clone(), self.extra.clone());
        drop(self);
        // The port is free once the old process is gone.
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        Server::launch(port, dir, extra)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        signal(self.pid, "-CONT");
        signal(self.pid, "-KILL");
        // Its shell, told by the closed stdin, exits too.
        drop(self._guard.stdin.take());
        let _ = self._guard.wait();
    }
}

/// Whether `pid` runs (an exited child waiting to be reaped does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").arg(sig).arg(pid.to_string()).status();
}

fn command(port: u16, args: &[&str]) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut request = format!("*{}\r\n", args.len());
    for a in args {
        request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream.write_all(request.as_bytes()).ok()?;
    let mut buf = vec![0u8; 64 * 1024];
    let n = stream.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// A Redis Sentinel watching one primary (named `mymaster`).
pub struct Sentinel {
    /// The sentinel process (a `redis-server --sentinel`).
    pub server: Server,
}

impl Sentinel {
    /// Starts a sentinel that monitors `primary`, and waits until it
    /// names it.
    pub fn watching(primary: &Server) -> Sentinel {
        let port = free_port();
        let dir = scratch_dir(port);
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds mymaster 1000\n",
                primary.port
            ),
        )
        .unwrap();
        let server = Server::launch(
            port,
            dir,
            vec![conf.display().to_string(), "--sentinel".into()],
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let named = server
                .command(&["SENTINEL", "get-master-addr-by-name", "mymaster"])
                .is_some_and(|r| r.contains(&primary.port.to_string()));
            if named {
                return Sentinel { server };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the sentinel did not name the primary");
    }
}

/// A three-node Redis Cluster (no replicas) on 127.0.0.1.
pub struct Cluster {
    /// The nodes.
    pub nodes: Vec<Server>,
}

impl Cluster {
    /// Starts three nodes, joins them with `redis-cli --cluster create`, and
    /// waits until every node reports the cluster ok.
    pub fn start() -> Cluster {
        // The bus port is named too: by default it is the port + 10000,
        // which another process may hold.
        let nodes: Vec<Server> = (0..3)
            .map(|_| {
                let bus = free_port().to_string();
                Server::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-port",
                    &bus,
                ])
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let status = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run redis-cli (package redis-tools)");
        assert!(status.success(), "redis-cli --cluster create failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let ok = nodes.iter().all(|n| {
                n.command(&["CLUSTER", "INFO"])
                    .is_some_and(|r| r.contains("cluster_state:ok"))
            });
            if ok {
                return Cluster { nodes };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the test cluster did not become ok");
    }

    /// A store configuration for this cluster.
    pub fn config(&self, prefix: &str) -> RedisConfig {
        RedisConfig {
            servers: RedisServers::Cluster(self.nodes.iter().map(Server::url).collect()),
            prefix: prefix.to_owned(),
            timeout: Duration::from_millis(500),
            ca_file: None,
        }
    }
}
