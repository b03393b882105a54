//! The real proxy, served in this process on an ephemeral port.

use std::net::SocketAddr;
use std::sync::Arc;

use cloakroom::{server, App, Config};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::*;

/// The real proxy, served in this process on an ephemeral port.
pub struct Proxy {
    pub addr: SocketAddr,
    /// The admin listener, when `[admin] listen` is set.
    pub admin: Option<SocketAddr>,
    pub app: Arc<App>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// Key file and session directory, unless the test named its own.
    _scratch: tempfile::TempDir,
}

impl Proxy {
    /// Starts the proxy in front of `upstream`. `upstream_keys` go into the
    /// `[upstream]` table; `rest` follows it (more tables). Unless `rest`
    /// names them, the key file and session directory are in a scratch
    /// directory of this proxy's own.
    pub async fn start(upstream: &Upstream, upstream_keys: &str, rest: &str) -> Proxy {
        Proxy::start_url(&format!("http://{}", upstream.addr), upstream_keys, rest).await
    }

    pub async fn start_url(url: &str, upstream_keys: &str, rest: &str) -> Proxy {
        let scratch = tempfile::tempdir().unwrap();
        let mut defaults = String::new();
        if !rest.contains("secret_file") {
            let key = scratch.path().join("cloakroom.key");
            defaults.push_str(&format!("secret_file = {:?}\n", key.to_str().unwrap()));
        }
        if !rest.contains("dir =") {
            let dir = scratch.path().join("sessions");
            defaults.push_str(&format!("dir = {:?}\n", dir.to_str().unwrap()));
        }
        let rest = if rest.contains("[session]") {
            rest.replacen("[session]", &format!("[session]\n{defaults}"), 1)
        } else {
            format!("{rest}\n[session]\n{defaults}")
        };
        let text = format!("[upstream]\nurl = \"{url}\"\n{upstream_keys}\n{rest}");
        Proxy::start_config(&text, scratch).await
    }

    /// Starts the proxy with exactly this configuration.
    pub async fn start_config(text: &str, scratch: tempfile::TempDir) -> Proxy {
        let config = Config::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let app = App::build(config)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let at = "127.0.0.1:0".parse().unwrap();
        let listener = server::Listeners::bind(at, &app.settings().config.server).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let admin = match app.settings().config.admin.listen {
            Some(at) => {
                let l = TcpListener::bind(at).await.unwrap();
                let bound = l.local_addr().unwrap();
                tokio::spawn(cloakroom::admin::serve(
                    l,
                    app.clone(),
                    std::future::pending(),
                ));
                Some(bound)
            }
            None => None,
        };
        let task = tokio::spawn(server::run(listener, app.clone(), async move {
            let _ = stopped.await;
        }));
        Proxy {
            addr,
            admin,
            app,
            stop: Some(stop),
            task,
            _scratch: scratch,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends the shutdown signal; the returned handle resolves when `run` returns.
    pub fn shutdown(&mut self) -> &mut tokio::task::JoinHandle<std::io::Result<()>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        &mut self.task
    }
}
