//! Reaching a protected Redis: ACL users (`redis://user:password@`), where a wrong password is
//! refused with an error that says so, and TLS (`rediss://`) with a private CA made here with
//! the `openssl` CLI. If this machine's redis-server has no TLS, or there is no openssl, the TLS
//! test says so and checks nothing (it does not pretend).

use drover_engine::core::EngineConfig;
use drover_engine::redis::{ConnectOptions, RedisStore};
use drover_engine::runtime::{SharedStore, StoreError};
use drover_engine::store::conformance::job;
use drover_engine::store::{Reply, Request};
use drover_engine::testing::make_test_certs;
use drover_engine::testing::RedisServer;
use std::process::Command;

async fn submit_works(store: &RedisStore) {
    let reply = store
        .apply(Request::Submit(Box::new(job(0, 0))))
        .await
        .expect("reachable");
    assert!(
        matches!(reply, Ok(Reply::Submitted { created: true, .. })),
        "{reply:?}"
    );
}

#[tokio::test]
async fn acl_users_need_the_right_password() {
    let server = RedisServer::start_with_acl("drover", "s3cret-pass");
    let port = server.port;
    let right = format!("redis://drover:s3cret-pass@127.0.0.1:{port}");
    let store = RedisStore::connect(&right, "acl", EngineConfig::default())
        .await
        .expect("the right password connects");
    submit_works(&store).await;

    let wrong = format!("redis://drover:nope@127.0.0.1:{port}");
    let err = RedisStore::connect(&wrong, "acl", EngineConfig::default())
        .await
        .err()
        .expect("a wrong password is refused");
    let StoreError::Connection(message) = &err else {
        panic!("expected a connection error, got {err:?}")
    };
    assert!(message.contains("authentication failed"), "{message}");
    assert!(!message.contains("nope"), "the password leaked: {message}");

    let anonymous = format!("redis://127.0.0.1:{port}");
    let err = RedisStore::connect(&anonymous, "acl", EngineConfig::default())
        .await
        .err()
        .expect("no credentials are refused");
    assert!(
        err.to_string().contains("authentication") || err.to_string().contains("NOAUTH"),
        "{err}"
    );
}

fn redis_has_tls() -> bool {
    // A build with TLS complains about the missing key file; one without rejects the option.
    let port = drover_engine::testing::redis::free_port().to_string();
    Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port])
        .output()
        .map(|o| {
            let out = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            !out.contains("Bad directive") && out.contains("tls")
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    if !redis_has_tls() {
        eprintln!("SKIPPED: this redis-server was built without TLS");
        return;
    }
    let dir = std::env::temp_dir().join(format!("drover-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let Some(files) = make_test_certs(&dir) else {
        eprintln!("SKIPPED: no working openssl CLI to make test certificates");
        return;
    };
    let ca = std::fs::read(&files.ca_cert).expect("ca");
    let server = RedisServer::start_tls(files);
    let options = ConnectOptions {
        root_ca_pem: Some(ca),
        ..ConnectOptions::default()
    };
    let store = RedisStore::connect_with(&server.url, "tls", EngineConfig::default(), options)
        .await
        .expect("TLS connects with the CA");
    submit_works(&store).await;
    // Without the CA the server's certificate is not trusted.
    let untrusted = RedisStore::connect(&server.url, "tls", EngineConfig::default()).await;
    assert!(untrusted.is_err(), "an untrusted certificate was accepted");
    // Plain text to a TLS port gets nowhere.
    let plain = server.url.replace("rediss://", "redis://");
    assert!(RedisStore::connect(&plain, "tls", EngineConfig::default())
        .await
        .is_err());
    let _ = std::fs::remove_dir_all(&dir);
}
