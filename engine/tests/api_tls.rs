//! The API over HTTPS: `drover api --tls-cert/--tls-key` and `ApiClient` with a private CA
//! (made here with the `openssl` CLI, as `redis_security.rs` does). Without openssl each test
//! says so and checks nothing.

mod api_support;

use api_support::*;
use axum::http::StatusCode;
use drover_engine::api::client::{ApiClient, ClientOptions};
use drover_engine::testing::redis::free_port;
use drover_engine::testing::{make_test_certs, TlsFiles};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(20);

/// A directory of test certificates, removed on drop.
struct Certs {
    dir: PathBuf,
    files: TlsFiles,
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn certs(tag: &str) -> Option<Certs> {
    let dir = std::env::temp_dir().join(format!("drover-api-tls-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let Some(files) = make_test_certs(&dir) else {
        eprintln!("SKIPPED: no working openssl CLI to make test certificates");
        let _ = std::fs::remove_dir_all(&dir);
        return None;
    };
    Some(Certs { dir, files })
}

#[tokio::test]
async fn a_job_is_submitted_and_read_over_https() {
    let Some(certs) = certs("job") else { return };
    let config = fast_config();
    let store = drover_engine::runtime::LocalStore::new(config.clone());
    let api = start_tls_api(store, config.clone(), &certs.files).await;
    assert!(api.base.starts_with("https://"), "{}", api.base);
    let agent = start_agent(
        api.store.clone(),
        config,
        machine("m1", 1),
        Duration::from_secs(5),
    );

    let body = json!({"kind": "sleep", "payload": {"seconds": 0.1}});
    let (status, reply) = api.client.post("/v1/jobs", &body).await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let id = reply["id"].as_str().unwrap();
    let job = wait_job(&api.client, id, LIMIT, state_is("succeeded")).await;
    assert_eq!(job["kind"], "sleep");
    agent.task.abort();
}

#[tokio::test]
async fn untrusted_and_plain_http_clients_are_refused_clearly() {
    let Some(certs) = certs("refused") else {
        return;
    };
    let config = fast_config();
    let store = drover_engine::runtime::LocalStore::new(config.clone());
    let api = start_tls_api(store, config, &certs.files).await;

    // Without the private CA, the server's certificate is not trusted.
    let untrusted = ApiClient::new(&api.base, Some(TOKEN.into())).unwrap();
    let error = untrusted.get("/v1/stats").await.unwrap_err().to_string();
    assert!(error.contains("certificate"), "{error}");

    // Plain HTTP to the TLS port: one 400 that says what to do, not a hang or garbage.
    let plain_base = api.base.replace("https://", "http://");
    let plain = ApiClient::new(&plain_base, Some(TOKEN.into())).unwrap();
    let (status, body) = plain.get("/v1/stats").await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("https://"), "{body}");

    // The server is unharmed: the trusted client is served.
    let (status, stats) = api.client.get("/v1/stats").await.unwrap();
    assert_eq!(status, StatusCode::OK, "{stats}");
}

/// `drover api` with TLS on an in-process store, as a child process.
struct ApiProcess(Child);

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn drover() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_drover"));
    command
        .env_remove("DROVER_API_TOKEN")
        .env_remove("DROVER_CA_CERT");
    command
}

fn spawn_api(port: u16, cert: &Path, key: &Path) -> Child {
    drover()
        .args(["api", "--redis", "memory", "--token", TOKEN])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--tls-cert")
        .arg(cert)
        .arg("--tls-key")
        .arg(key)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("drover api starts")
}

async fn wait_healthy(client: &ApiClient) {
    let until = Instant::now() + LIMIT;
    while !matches!(client.get("/healthz").await, Ok((StatusCode::OK, _))) {
        assert!(Instant::now() < until, "drover api never answered /healthz");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn run_client(args: &[&str], ca: Option<&Path>) -> Output {
    let mut command = drover();
    command.args(args).args(["--token", TOKEN]);
    if let Some(ca) = ca {
        command.arg("--ca-cert").arg(ca);
    }
    command.output().expect("drover runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn the_binary_serves_https_and_its_cli_speaks_it() {
    let Some(certs) = certs("binary") else { return };
    let files = &certs.files;
    let port = free_port();
    let _api = ApiProcess(spawn_api(port, &files.cert, &files.key));
    let base = format!("https://localhost:{port}");
    let options = ClientOptions {
        ca_cert: Some(files.ca_cert.clone()),
    };
    wait_healthy(&ApiClient::with_options(&base, None, &options).unwrap()).await;

    let submit = [
        "submit",
        "--api",
        &base,
        "sleep",
        "--payload",
        r#"{"seconds": 0}"#,
    ];
    let submitted = run_client(&submit, Some(&files.ca_cert));
    assert!(submitted.status.success(), "{}", text(&submitted.stderr));
    let reply: serde_json::Value = serde_json::from_slice(&submitted.stdout).unwrap();
    let id = reply["id"].as_str().expect("an id").to_string();

    let status = run_client(&["status", "--api", &base, &id], Some(&files.ca_cert));
    assert!(status.status.success(), "{}", text(&status.stderr));
    assert!(
        text(&status.stdout).contains("\"queued\""),
        "{}",
        text(&status.stdout)
    );

    // Without the CA: one line, non-zero, naming the certificate problem.
    let untrusted = run_client(&["status", "--api", &base, &id], None);
    let stderr = text(&untrusted.stderr);
    assert!(!untrusted.status.success());
    assert!(
        stderr.starts_with("Error: ") && stderr.contains("certificate"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[test]
fn a_bad_certificate_stops_the_start_and_says_which_file() {
    let Some(certs) = certs("bad") else { return };
    let files = &certs.files;
    // The key where the certificate should be: PEM, but no certificate in it.
    let output = drover()
        .args(["api", "--redis", "memory", "--listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(&files.key)
        .arg("--tls-key")
        .arg(&files.key)
        .output()
        .expect("drover runs");
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("--tls-cert"), "{stderr}");
    assert!(
        stderr.contains(&files.key.display().to_string()),
        "{stderr}"
    );

    let lone = drover()
        .args(["api", "--redis", "memory", "--tls-cert"])
        .arg(&files.cert)
        .output()
        .expect("drover runs");
    assert!(!lone.status.success());
    assert!(
        text(&lone.stderr).contains("--tls-key"),
        "{}",
        text(&lone.stderr)
    );
}
