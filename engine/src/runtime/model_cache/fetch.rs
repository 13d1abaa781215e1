//! Fetching one model to a temporary path in the cache directory and verifying it there;
//! `install` then renames it under the model's name. A fetch that fails or is dropped leaves
//! nothing (its `PartPath` removes the temporary path), so the cache never holds a half file
//! under a model's name.

use super::disk::{remove_path, tree_size};
use super::error::FetchError;
use super::layout::hex;
use super::source::{fill_command, Fetch, ModelSource};
use crate::executor::command::stderr_tail;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Tries of one download when the network or the server fails (not for a wrong file).
const DOWNLOAD_TRIES: u32 = 3;
/// Pause before the second try; doubled before each later one.
const FIRST_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Called as bytes arrive: (bytes just received, bytes so far in this try, expected total).
pub type OnBytes<'a> = &'a (dyn Fn(u64, u64, Option<u64>) + Send + Sync);

/// What to fetch and the bounds it must meet.
pub struct FetchSpec<'a> {
    pub model: &'a str,
    pub source: &'a ModelSource,
    /// The catalog's size: the most the model may take.
    pub size_gb: u32,
}

impl FetchSpec<'_> {
    pub fn cap_bytes(&self) -> u64 {
        self.size_gb as u64 * super::disk::GIB
    }
}

/// A temporary path a fetch writes; removed when dropped unless `keep` was called.
pub struct PartPath {
    path: PathBuf,
    armed: bool,
}

impl PartPath {
    pub fn new(path: PathBuf) -> PartPath {
        PartPath { path, armed: true }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for PartPath {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = remove_path(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove a partial fetch");
            }
        }
    }
}

/// Fetches the model to `part` and verifies its size and digest.
pub async fn fetch(
    client: &reqwest::Client,
    spec: &FetchSpec<'_>,
    part: &PartPath,
    on_bytes: OnBytes<'_>,
) -> Result<(), FetchError> {
    let timeout = spec.source.timeout();
    let work = async {
        match spec.source.fetch() {
            Fetch::Url(url) => download(client, &url, spec, part.path(), on_bytes).await,
            Fetch::Command(argv) => run_command(&argv, spec, part.path()).await,
        }
    };
    tokio::time::timeout(Duration::from_micros(timeout.as_micros()), work)
        .await
        .unwrap_or(Err(FetchError::Timeout(timeout)))
}

/// Moves a verified fetch under its final name (replacing whatever was there) and makes the
/// rename durable, so that a crash never leaves a name pointing at nothing.
pub async fn install(part: PartPath, target: &Path) -> Result<(), FetchError> {
    let (from, to) = (part.path().to_path_buf(), target.to_path_buf());
    let result = tokio::task::spawn_blocking(move || {
        if std::fs::symlink_metadata(&to).is_ok_and(|m| m.is_dir()) {
            remove_path(&to)?;
        }
        std::fs::rename(&from, &to)?;
        if let Some(dir) = to.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok::<(), std::io::Error>(())
    })
    .await;
    match result {
        Ok(Ok(())) => {
            part.keep();
            Ok(())
        }
        Ok(Err(e)) => Err(FetchError::io(
            format!("installing {}", target.display()),
            e,
        )),
        Err(e) => Err(FetchError::Io(format!(
            "installing {}: {e}",
            target.display()
        ))),
    }
}

async fn download(
    client: &reqwest::Client,
    url: &str,
    spec: &FetchSpec<'_>,
    dest: &Path,
    on_bytes: OnBytes<'_>,
) -> Result<(), FetchError> {
    let mut pause = FIRST_RETRY_PAUSE;
    for tried in 1..=DOWNLOAD_TRIES {
        match download_once(client, url, spec, dest, on_bytes).await {
            Err(e) if e.is_transient() && tried < DOWNLOAD_TRIES => {
                tracing::warn!(model = spec.model, error = %e, tried, "download failed; trying again");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            result => return result,
        }
    }
    unreachable!("the last try returns")
}

async fn download_once(
    client: &reqwest::Client,
    url: &str,
    spec: &FetchSpec<'_>,
    dest: &Path,
    on_bytes: OnBytes<'_>,
) -> Result<(), FetchError> {
    let transport = |e: reqwest::Error| FetchError::Transport {
        url: url.to_string(),
        message: error_chain(&e),
    };
    let mut response = client.get(url).send().await.map_err(transport)?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::Http {
            status: status.as_u16(),
            url: url.to_string(),
        });
    }
    let total = response.content_length();
    if total.is_some_and(|t| t > spec.cap_bytes()) {
        return Err(FetchError::TooLarge {
            size_gb: spec.size_gb,
        });
    }
    let writing = |e| FetchError::io(format!("writing {}", dest.display()), e);
    let mut file = tokio::fs::File::create(dest).await.map_err(writing)?;
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        got += chunk.len() as u64;
        if got > spec.cap_bytes() {
            return Err(FetchError::TooLarge {
                size_gb: spec.size_gb,
            });
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(writing)?;
        on_bytes(chunk.len() as u64, got, total);
    }
    if let Some(total) = total.filter(|&t| t != got) {
        return Err(FetchError::Transport {
            url: url.to_string(),
            message: format!("the body ended after {got} of {total} bytes"),
        });
    }
    file.sync_all().await.map_err(writing)?;
    check_digest(spec.source, hex(&hasher.finalize()))
}

/// reqwest's message and its causes ("error sending request: connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}

fn check_digest(source: &ModelSource, got: String) -> Result<(), FetchError> {
    match source.sha256() {
        Some(expected) if expected != got => Err(FetchError::Checksum { expected, got }),
        _ => Ok(()),
    }
}

async fn run_command(argv: &[String], spec: &FetchSpec<'_>, dest: &Path) -> Result<(), FetchError> {
    let dest_text = dest.to_string_lossy();
    let args = fill_command(argv, spec.model, &dest_text);
    let Some((program, args)) = args.split_first() else {
        return Err(FetchError::Command("no program".into()));
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // A fetch dropped (timed out, or its model evicted) must not leave its process.
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| FetchError::Command(format!("cannot start {program:?}: {e}")))?;
    let stderr = child.stderr.take();
    let (status, tail) = tokio::join!(child.wait(), stderr_tail(stderr));
    let status =
        status.map_err(|e| FetchError::Command(format!("waiting for {program:?}: {e}")))?;
    if !status.success() {
        return Err(command_failure(status, tail.trim_end()));
    }
    verify_fetched(spec, dest.to_path_buf()).await
}

/// A failed fetch command: a full disk when its error says so (the command's own writes met
/// ENOSPC; its exit status cannot tell us more).
fn command_failure(status: std::process::ExitStatus, stderr: &str) -> FetchError {
    let full = ["No space left on device", "Disk quota exceeded"];
    if full.iter().any(|text| stderr.contains(text)) {
        FetchError::DiskFull(format!("fetch command {status}: {stderr}"))
    } else {
        FetchError::Command(format!("{status}: {stderr}"))
    }
}

/// What a command wrote: there, within the catalog size, matching the digest, on disk.
async fn verify_fetched(spec: &FetchSpec<'_>, dest: PathBuf) -> Result<(), FetchError> {
    let (cap, size_gb, expected) = (spec.cap_bytes(), spec.size_gb, spec.source.sha256());
    let checked = tokio::task::spawn_blocking(move || {
        let meta = std::fs::symlink_metadata(&dest)
            .map_err(|_| FetchError::Command("it exited 0 but wrote nothing to {dest}".into()))?;
        if tree_size(&dest).0 > cap {
            return Err(FetchError::TooLarge { size_gb });
        }
        if expected.is_some() && !meta.is_file() {
            return Err(FetchError::Command(
                "a sha256 is declared but the command did not write a file".into(),
            ));
        }
        let digest = if expected.is_some() {
            Some(hash_file(&dest)?)
        } else {
            None
        };
        sync_tree(&dest).map_err(|e| FetchError::io(format!("syncing {}", dest.display()), e))?;
        Ok(digest)
    })
    .await
    .map_err(|e| FetchError::Io(format!("verifying the fetch: {e}")))??;
    match checked {
        Some(got) => check_digest(spec.source, got),
        None => Ok(()),
    }
}

fn hash_file(path: &Path) -> Result<String, FetchError> {
    use std::io::Read;
    let reading = |e| FetchError::io(format!("reading {}", path.display()), e);
    let mut file = std::fs::File::open(path).map_err(reading)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(reading)?;
        if n == 0 {
            return Ok(hex(&hasher.finalize()));
        }
        hasher.update(&buffer[..n]);
    }
}

/// Flushes every file of a tree to disk, so a crash after the rename cannot leave it empty.
fn sync_tree(path: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            sync_tree(&entry?.path())?;
        }
    }
    if meta.is_file() || meta.is_dir() {
        std::fs::File::open(path)?.sync_all()?;
    }
    Ok(())
}
