//! Scratch directories: a job that asks for `disk_gb` gets `job-<id>-<attempt>` under the
//! scratch root (`DROVER_SCRATCH` for commands), removed when the attempt ends however it
//! ends: finished, stopped or aborted (its `ScratchDir` is dropped with the attempt). What a
//! crash leaves is swept when the agent starts.

use super::disk::{remove_path, tree_size};
use super::error::FetchError;
use crate::core::JobId;
use std::path::{Path, PathBuf};

const PREFIX: &str = "job-";

#[derive(Clone, Debug)]
pub struct ScratchRoot {
    dir: PathBuf,
}

impl ScratchRoot {
    /// Creates the root if needed and removes the scratch directories a crash left; returns
    /// how many it removed.
    pub fn open(dir: PathBuf) -> std::io::Result<(ScratchRoot, usize)> {
        std::fs::create_dir_all(&dir)?;
        let mut removed = 0;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(PREFIX) {
                remove_path(&entry.path())?;
                removed += 1;
            }
        }
        Ok((ScratchRoot { dir }, removed))
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// A fresh, empty directory for one attempt.
    pub fn create(&self, job: JobId, attempt: u32) -> Result<ScratchDir, FetchError> {
        let path = self.dir.join(format!("{PREFIX}{}-{attempt}", job.0));
        // A directory of the same attempt can only be a leftover: start clean.
        let made = remove_path(&path).and_then(|()| std::fs::create_dir(&path));
        made.map_err(|e| FetchError::io(format!("creating {}", path.display()), e))?;
        Ok(ScratchDir { path })
    }

    /// Disk the scratch directories take now.
    pub fn used_bytes(&self) -> u64 {
        tree_size(&self.dir).1
    }
}

/// One attempt's scratch directory, removed when dropped.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let path = std::mem::take(&mut self.path);
        let remove = move || {
            if let Err(e) = remove_path(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a scratch directory");
            }
        };
        // A large tree takes a while to delete: off the async workers when there are some.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scratch_directory_lives_as_long_as_its_attempt_and_crashes_are_swept() {
        let root = std::env::temp_dir().join(format!("drover-scratch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("job-9-1/deep")).unwrap();
        std::fs::write(root.join("keep.txt"), b"not ours").unwrap();
        let (scratch, removed) = ScratchRoot::open(root.clone()).unwrap();
        assert_eq!(removed, 1);
        assert!(root.join("keep.txt").exists());
        let dir = scratch.create(JobId(5), 2).unwrap();
        assert_eq!(dir.path(), root.join("job-5-2"));
        std::fs::write(dir.path().join("out"), vec![0u8; 4096]).unwrap();
        assert!(scratch.used_bytes() >= 4096);
        drop(dir);
        assert!(!root.join("job-5-2").exists(), "removed when dropped");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
