//! Shared by the tests that run the built `drover` binary and read Redis raw.
#![allow(dead_code)]

use drover_engine::testing::RedisServer;
use std::process::Command;

/// Runs the built `drover` binary: exit code, stdout, stderr. An error is one line, as an
/// operator sees it (anyhow adds a backtrace when these are set, so they are not).
pub fn drover(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("run drover");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One raw Redis command on `server`.
pub fn raw(server: &RedisServer, args: &[&str]) -> redis::Value {
    let mut con = redis::Client::open(server.url.as_str())
        .expect("url")
        .get_connection()
        .expect("connection");
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query::<redis::Value>(&mut con).expect("command")
}
