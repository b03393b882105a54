//! A real browser for tests: Debian's headless Chromium with a profile of
//! its own, driven over the DevTools protocol. `bash tests/run.sh`
//! installs Chromium; without it the tests that use it fail.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use super::{get, line_after, lines_of, within};

const CHROMIUM: &str = "/usr/bin/chromium";

/// A headless Chromium with its own profile, killed on drop.
pub struct Chromium {
    child: Child,
    _profile: tempfile::TempDir,
    ws: tokio_tungstenite::WebSocketStream<TcpStream>,
    next_id: u64,
    /// Every address the page was seen at.
    pub seen_urls: Vec<String>,
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Chromium {
    pub async fn start(block_cookies: bool) -> Chromium {
        assert!(
            std::path::Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: `bash tests/run.sh` installs it (apt-get install chromium)"
        );
        let profile = tempfile::tempdir().unwrap();
        let default = profile.path().join("Default");
        std::fs::create_dir_all(&default).unwrap();
        let setting = if block_cookies { 2 } else { 1 };
        std::fs::write(
            default.join("Preferences"),
            json!({"profile": {"default_content_setting_values": {"cookies": setting}}})
                .to_string(),
        )
        .unwrap();
        let mut child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                "--disable-component-update",
                "--disable-sync",
                "--disable-quic",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start chromium");
        let mut lines = lines_of(child.stderr.take().unwrap());
        let browser_ws = line_after(&mut lines, "DevTools listening on ").await;
        let port = browser_ws
            .trim_start_matches("ws://127.0.0.1:")
            .split('/')
            .next()
            .unwrap()
            .to_owned();

        // The page target that about:blank opened.
        let page_ws = within(async {
            loop {
                let (_, _, body) = get(&format!("http://127.0.0.1:{port}/json/list")).await;
                let targets: Value = serde_json::from_slice(&body).unwrap();
                if let Some(url) = targets
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str())
                {
                    break url.to_owned();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let tcp = TcpStream::connect(format!("127.0.0.1:{port}"))
            .await
            .unwrap();
        let (ws, _) = tokio_tungstenite::client_async(page_ws, tcp).await.unwrap();
        Chromium {
            child,
            _profile: profile,
            ws,
            next_id: 0,
            seen_urls: Vec::new(),
        }
    }

    /// Sends one DevTools command and waits for its answer (`Err` with the
    /// error object if the browser refused it).
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(msg)).await.unwrap();
        within(async {
            loop {
                let msg = self.ws.next().await.expect("devtools closed").unwrap();
                let Ok(text) = msg.to_text() else { continue };
                let value: Value = serde_json::from_str(text).unwrap();
                if value["id"] == id {
                    break match value.get("error") {
                        Some(error) => Err(error.clone()),
                        None => Ok(value["result"].clone()),
                    };
                }
            }
        })
        .await
    }

    /// Evaluates JavaScript in the page. A page that navigates away while
    /// the script runs (a form submitted, a link clicked) yields `null`.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let params = json!({"expression": expression, "returnByValue": true});
        match self.call("Runtime.evaluate", params).await {
            Ok(result) => result["result"]["value"].clone(),
            Err(error) => {
                let message = error["message"].as_str().unwrap_or("");
                let navigating = ["navigated", "context", "destroyed"]
                    .iter()
                    .any(|m| message.contains(m));
                assert!(navigating, "Runtime.evaluate: {error}");
                Value::Null
            }
        }
    }

    pub async fn navigate(&mut self, url: &str) {
        let result = self.call("Page.navigate", json!({"url": url})).await;
        assert!(result.is_ok(), "Page.navigate: {result:?}");
    }

    /// Runs `action` (which navigates) on the current page, marking the
    /// page first so that the next [`Chromium::wait_for`] waits for a new one.
    pub async fn act(&mut self, action: &str) {
        self.eval(&format!("window.__stale = true; {action}; true"))
            .await;
    }

    /// Waits until a new page has loaded at exactly `path`, and returns its
    /// address.
    pub async fn wait_for(&mut self, path: &str) -> String {
        self.wait_until(path, |pathname| pathname == path).await
    }

    /// Opens `url`, a page that moves on by itself at once (a refresh of 0
    /// seconds, which a slow poll can miss), and waits until a new page has
    /// loaded: that one, or where it moved on to.
    pub async fn open_moving_on(&mut self, url: &str, path: &str) -> String {
        self.eval("window.__stale = true; true").await;
        self.navigate(url).await;
        self.wait_until(path, |_| true).await
    }

    async fn wait_until(&mut self, path: &str, arrived: impl Fn(&str) -> bool) -> String {
        for _ in 0..300 {
            let state = self
                .eval("JSON.stringify([document.readyState, location.href, location.pathname, String(!!window.__stale)])")
                .await;
            let state: Vec<String> =
                serde_json::from_str(state.as_str().unwrap_or("[]")).unwrap_or_default();
            if let [ready, href, pathname, stale] = state.as_slice() {
                if self.seen_urls.last() != Some(href) {
                    self.seen_urls.push(href.clone());
                }
                if ready == "complete" && stale == "false" && arrived(pathname) {
                    return href.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("never reached {path}; saw {:?}", self.seen_urls);
    }

    pub async fn text(&mut self) -> String {
        self.eval("document.body.innerText")
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}
