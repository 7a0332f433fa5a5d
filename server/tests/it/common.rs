//! A real `zfvis serve` process on 127.0.0.1 with a free port, killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// An empty directory of its own under the system temp dir, for one test of this process.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zfvis-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch dir");
    dir
}

pub fn fixture_weights() -> PathBuf {
    repo_root().join("tests/fixtures/zfnet-narrow.safetensors")
}

pub fn demo_image(name: &str) -> Vec<u8> {
    std::fs::read(repo_root().join("web/assets/demo").join(name)).expect("demo image")
}

pub struct Server {
    child: Child,
    pub url: String,
}

impl Server {
    /// Starts `zfvis serve` and, with `--probe`, waits for its index.
    pub fn start(weights: &std::path::Path, extra: &[&str]) -> Server {
        let server = Server::start_only(weights, extra);
        if extra.contains(&"--probe") {
            wait_for_index(&server.url);
        }
        server
    }

    /// Starts `zfvis serve` and returns once it listens (a probe index may still be building).
    pub fn start_only(weights: &std::path::Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_zfvis"))
            .args(["serve", "--addr", "127.0.0.1:0", "--ui-dir", "/nonexistent"])
            .arg("--weights")
            .arg(weights)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn zfvis");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("zfvis listening on ") {
                    let _ = tx.send(url.trim_end_matches('/').to_string());
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = loop {
            if let Ok(url) = rx.recv_timeout(Duration::from_millis(100)) {
                break url;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("zfvis exited early: {status}");
            }
            assert!(Instant::now() < deadline, "zfvis did not start within 60 s");
        };
        Server { child, url }
    }
}

/// Polls `/api/health` until the probe index is ready (panics if it fails or takes 5 minutes).
pub fn wait_for_index(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let health: Option<zfvis_api::Health> = std::process::Command::new("curl")
            .args(["-s", &format!("{url}/api/health")])
            .output()
            .ok()
            .and_then(|o| serde_json::from_slice(&o.stdout).ok());
        if let Some(status) = health.and_then(|h| h.probe_index) {
            match status.state {
                zfvis_api::IndexPhase::Ready => return,
                zfvis_api::IndexPhase::Failed => panic!("probe index failed: {:?}", status.message),
                zfvis_api::IndexPhase::Building => {}
            }
        }
        assert!(
            Instant::now() < deadline,
            "probe index not ready in 5 minutes"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Server {
    /// `kill -9`: SIGKILL, no chance to clean up.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POST to `url` without a body and decode its JSON answer, failing the test on any error.
pub async fn post_json<T: serde::de::DeserializeOwned>(client: &reqwest::Client, url: &str) -> T {
    client.post(url).send().await.unwrap().json().await.unwrap()
}

/// POST `body` as JSON to `url` and decode the JSON answer, failing the test on any error.
pub async fn post_body_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> T {
    client
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Every file under `dir`, recursively (none when it does not exist).
pub fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The PNG files under `dir`, recursively.
pub fn count_pngs(dir: &std::path::Path) -> usize {
    files_under(dir)
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .count()
}

/// GET `url` and decode its JSON body, failing the test on any error.
pub async fn get_json<T: serde::de::DeserializeOwned>(client: &reqwest::Client, url: &str) -> T {
    let resp = client.get(url).send().await.expect("GET");
    assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
    resp.json().await.expect("JSON body")
}

/// Uploads demo image `name` through `POST /api/images`.
pub async fn upload(client: &reqwest::Client, url: &str, name: &str) -> zfvis_api::ImageResponse {
    upload_bytes(client, url, demo_image(name), name).await
}

/// Uploads `bytes` (as file `name`) through `POST /api/images`, expecting 200.
pub async fn upload_bytes(
    client: &reqwest::Client,
    url: &str,
    bytes: Vec<u8>,
    name: &str,
) -> zfvis_api::ImageResponse {
    post_image(client, &format!("{url}/api/images"), bytes, name).await
}

/// POSTs `bytes` as the multipart field `image` to `url` (any route that takes an upload, with
/// its query), expecting 200, and decodes the answer.
pub async fn post_image<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
    bytes: Vec<u8>,
    name: &str,
) -> T {
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(bytes).file_name(name.to_string()),
    );
    let resp = client.post(url).multipart(form).send().await.unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK, "{url}");
    resp.json().await.unwrap()
}

/// GETs each path and checks its status and JSON error code.
pub async fn expect_get_errors(
    client: &reqwest::Client,
    base: &str,
    cases: &[(String, u16, &str)],
) {
    for (path, status, code) in cases {
        let resp = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), *status, "{path}");
        let err: zfvis_api::ApiError = resp.json().await.unwrap();
        assert_eq!(err.code.as_str(), *code, "{path}: {}", err.error);
    }
}
