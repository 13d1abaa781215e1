//! What the agent measures of its disk: the space a filesystem has free, the space a tree of
//! files takes, and removal of a file or a directory alike.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

pub const GIB: u64 = 1 << 30;

/// Bytes an unprivileged process may still write on the filesystem holding `path`.
pub fn available_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a valid NUL-terminated string and `stats` is writable memory of
    // the right type; statvfs fills it completely when it returns 0.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stats.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised `stats`.
    let stats = unsafe { stats.assume_init() };
    // The fields' types vary by platform (32 bits on some); u64 holds them all.
    #[allow(clippy::unnecessary_cast)]
    let (blocks, block_size) = (stats.f_bavail as u64, stats.f_frsize as u64);
    Ok(blocks.saturating_mul(block_size))
}

/// Whether two paths are on one filesystem (so one's usage takes the other's free space).
pub fn same_filesystem(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev(),
        _ => false,
    }
}

/// What a file or a directory tree holds: (bytes of content, bytes of disk allocated).
/// Symbolic links are not followed; entries that vanish meanwhile count as nothing.
pub fn tree_size(path: &Path) -> (u64, u64) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return (0, 0);
    };
    let mut size = (meta.len(), meta.blocks() * 512);
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
            let (len, allocated) = tree_size(&entry.path());
            size.0 += len;
            size.1 += allocated;
        }
    }
    size
}

/// Removes a file or a directory tree; a path that is not there is not an error.
pub fn remove_path(path: &Path) -> io::Result<()> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Whether an I/O error means the disk (or the user's quota) is full.
pub fn is_disk_full(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Bytes in whole GiB, rounded up or down.
pub fn gib(bytes: u64, round_up: bool) -> u32 {
    let whole = if round_up {
        bytes.div_ceil(GIB)
    } else {
        bytes / GIB
    };
    whole.min(u32::MAX as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_trees_and_free_space_and_removes_either_kind() {
        let dir = std::env::temp_dir().join(format!("drover-disk-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a"), vec![1u8; 1000]).unwrap();
        std::fs::write(dir.join("sub/b"), vec![2u8; 500]).unwrap();
        let (len, allocated) = tree_size(&dir);
        assert!(len >= 1500, "{len}");
        assert!(allocated >= 1500, "{allocated}");
        assert!(available_bytes(&dir).unwrap() > 0);
        assert!(same_filesystem(&dir, &dir.join("sub")));
        remove_path(&dir.join("a")).unwrap();
        remove_path(&dir).unwrap();
        assert!(!dir.exists());
        remove_path(&dir).unwrap();
        assert_eq!(gib(GIB + 1, true), 2);
        assert_eq!(gib(GIB + 1, false), 1);
        assert!(is_disk_full(&io::Error::from_raw_os_error(libc::ENOSPC)));
        assert!(!is_disk_full(&io::Error::from_raw_os_error(libc::EACCES)));
    }
}
