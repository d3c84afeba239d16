//! A form post survives a login, in a real browser: headless Chromium, driven over the W3C
//! WebDriver HTTP API (`chromedriver`), logs in at the development provider's form, fills a
//! form on a page behind the gateway, lets the session expire, submits, logs in again, and
//! lands on the app's answer; the app received the POST exactly once, as submitted.
//!
//! Needs `chromium` and `chromedriver` (Debian: `chromium`, `chromium-driver`; `tests/run.sh`
//! installs them). Without them this test FAILS, saying so: it never passes unseen.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use support::{Harness, bind};

/// The app behind the gateway: a form page, its POST target (recorded; answered 303, the
/// Post/Redirect/Get pattern) and the page it redirects to.
async fn app() -> (SocketAddr, Arc<Mutex<Vec<(String, String, Bytes)>>>) {
    let listener = bind().await;
    let addr = listener.local_addr().unwrap();
    let posts: Arc<Mutex<Vec<(String, String, Bytes)>>> = Arc::default();
    let seen = posts.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        let page = |html: &str| {
                            Response::builder()
                                .header("content-type", "text/html; charset=utf-8")
                                .body(Full::new(Bytes::from(format!(
                                    "<!doctype html><html><body>{html}</body></html>"
                                ))))
                                .unwrap()
                        };
                        let response = match (parts.method.as_str(), parts.uri.path()) {
                            ("GET", "/app/form") => page(
                                "<form method=\"post\" action=\"/app/submit?draft=7\">\
                                 <input id=\"title\" name=\"title\">\
                                 <textarea id=\"text\" name=\"text\"></textarea>\
                                 <button id=\"send\" type=\"submit\">Send</button></form>",
                            ),
                            ("POST", "/app/submit") => {
                                let content_type = parts
                                    .headers
                                    .get("content-type")
                                    .map(|v| v.to_str().unwrap().to_owned())
                                    .unwrap_or_default();
                                seen.lock().unwrap().push((
                                    parts.uri.to_string(),
                                    content_type,
                                    body,
                                ));
                                Response::builder()
                                    .status(303)
                                    .header("location", "/app/thanks")
                                    .body(Full::new(Bytes::new()))
                                    .unwrap()
                            }
                            ("GET", "/app/thanks") => page("<h1 id=\"done\">Saved</h1>"),
                            _ => Response::builder()
                                .status(404)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        };
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, posts)
}

/// `chromedriver` on a free port, in a process group of its own: on drop the whole group
/// (chromedriver and every Chromium process it started) is killed, also when the test failed
/// half-way.
struct Driver {
    child: Child,
    url: String,
    http: reqwest::Client,
    session: String,
    _profile: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn find(names: &[&str]) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

impl Driver {
    async fn start() -> Driver {
        let chromium =
            find(&["chromium", "chromium-browser", "google-chrome"]).unwrap_or_else(|| {
                panic!(
                    "this test needs a headless Chromium and chromedriver: none found on PATH \
                 (Debian: apt-get install chromium chromium-driver; tests/run.sh installs them)"
                )
            });
        let chromedriver = find(&["chromedriver"]).unwrap_or_else(|| {
            panic!(
                "this test needs chromedriver: not found on PATH \
                 (Debian: apt-get install chromium-driver; tests/run.sh installs it)"
            )
        });
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", chromedriver.display()));
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut ready = false;
        for _ in 0..100 {
            if let Ok(r) = http.get(format!("{url}/status")).send().await
                && r.status().is_success()
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "chromedriver did not answer on {url}");
        let profile = std::env::temp_dir().join(format!("authgate-chromium-{port}"));
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium.to_string_lossy(),
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                             "--disable-dev-shm-usage", "--no-first-run",
                             format!("--user-data-dir={}", profile.display())],
                },
            }}
        });
        let mut driver = Driver {
            child,
            url,
            http,
            session: String::new(),
            _profile: TempDir(profile),
        };
        let created = driver.call("POST", "/session", capabilities).await;
        driver.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_owned();
        driver
    }

    /// One WebDriver command; its `value`.
    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.url);
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let response = request.send().await.unwrap();
        let status = response.status();
        let value: Value = response.json().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {value}");
        value["value"].clone()
    }

    async fn session_call(&self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.call(method, &path, body).await
    }

    async fn goto(&self, url: &str) {
        self.session_call("POST", "/url", json!({ "url": url }))
            .await;
    }

    async fn current_url(&self) -> String {
        let url = self.session_call("GET", "/url", Value::Null).await;
        url.as_str().unwrap().to_owned()
    }

    /// The browser's URL once `done` holds for it: a click that submits a form may return
    /// before the navigation it starts has begun (on a loaded machine it does), so the page
    /// is polled for up to 20 s; past that, the URL it stayed at.
    async fn url_when(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let url = self.current_url().await;
            if done(&url) || std::time::Instant::now() > deadline {
                return url;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn element(&self, css: &str) -> String {
        let found = self
            .session_call(
                "POST",
                "/element",
                json!({ "using": "css selector", "value": css }),
            )
            .await;
        found["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        let path = format!("/element/{id}/value");
        self.session_call("POST", &path, json!({ "text": text }))
            .await;
    }

    async fn click(&self, css: &str) {
        let id = self.element(css).await;
        let path = format!("/element/{id}/click");
        self.session_call("POST", &path, json!({})).await;
    }

    async fn text(&self, css: &str) -> String {
        let id = self.element(css).await;
        let path = format!("/element/{id}/text");
        let text = self.session_call("GET", &path, Value::Null).await;
        text.as_str().unwrap().to_owned()
    }

    /// Log in at the development provider's form.
    async fn provider_login(&self, user: &str) {
        self.type_into("input[name=username]", user).await;
        self.click("button[type=submit]").await;
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_submitted_after_the_session_expired_survives_the_login() {
    let (app, posts) = app().await;
    let h = Harness::builder()
        .upstream(app)
        .config(
            r#"[session]
            idle_timeout = "5m""#,
        )
        .start()
        .await;
    h.idp.controls().set_auto_login(None);
    let browser = Driver::start().await;

    // Log in at the provider's form, land on the app's form.
    browser.goto(&h.at("/app/form")).await;
    let issuer = h.idp.issuer();
    let url = browser.url_when(|u| u.starts_with(&issuer)).await;
    assert!(url.starts_with(&issuer), "sent to the provider: {url}");
    browser.provider_login("alice").await;
    let form = h.at("/app/form");
    assert_eq!(browser.url_when(|u| u == form).await, form);

    // The user types, the session expires meanwhile, the user submits.
    browser.type_into("#title", "Hello world").await;
    browser
        .type_into("#text", "café & a long text that took an hour")
        .await;
    h.advance(Duration::from_secs(600));
    browser.click("#send").await;

    // Back at the provider's form; nothing reached the app yet.
    let issuer = h.idp.issuer();
    let url = browser.url_when(|u| u.starts_with(&issuer)).await;
    assert!(url.starts_with(&issuer), "sent to login again: {url}");
    assert!(posts.lock().unwrap().is_empty());
    browser.provider_login("alice").await;

    // The app got the post once, as submitted; the browser shows the app's answer.
    let thanks = h.at("/app/thanks");
    assert_eq!(browser.url_when(|u| u == thanks).await, thanks);
    assert_eq!(browser.text("#done").await, "Saved");
    let posts = posts.lock().unwrap().clone();
    assert_eq!(posts.len(), 1, "exactly once: {posts:?}");
    let (uri, content_type, body) = &posts[0];
    assert_eq!(uri, "/app/submit?draft=7");
    assert_eq!(content_type, "application/x-www-form-urlencoded");
    let fields: Vec<(String, String)> = url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    assert_eq!(
        fields,
        [
            ("title".to_owned(), "Hello world".to_owned()),
            (
                "text".to_owned(),
                "café & a long text that took an hour".to_owned()
            ),
        ]
    );
    browser.session_call("DELETE", "", Value::Null).await;
}
