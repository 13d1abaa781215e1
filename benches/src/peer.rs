//! BullMQ, run by its own Node script (benches/peers/bullmq) against the same Redis.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

fn peer_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/bullmq")
}

/// Installs the peer's npm packages if they are missing.
fn ensure_installed() -> Result<()> {
    let dir = peer_dir();
    if dir.join("node_modules/bullmq").exists() {
        return Ok(());
    }
    let status = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--silent"])
        .current_dir(&dir)
        .status()
        .context("running npm install for the BullMQ peer (is Node.js installed?)")?;
    if !status.success() {
        bail!("npm install in {} failed", dir.display());
    }
    Ok(())
}

/// BullMQ's result: one JSON object with at least `jobs_per_sec`.
pub fn bullmq(redis_url: &str, jobs: u64, concurrency: u32) -> Result<Value> {
    ensure_installed()?;
    let output = Command::new("node")
        .arg(peer_dir().join("bench.mjs"))
        .args([redis_url, &jobs.to_string(), &concurrency.to_string()])
        .output()
        .context("running node benches/peers/bullmq/bench.mjs")?;
    if !output.status.success() {
        bail!(
            "the BullMQ peer failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .last()
        .context("the BullMQ peer printed nothing")?;
    serde_json::from_str(line).with_context(|| format!("the BullMQ peer printed {line:?}"))
}
