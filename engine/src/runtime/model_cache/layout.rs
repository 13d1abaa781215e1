//! Names in the cache directory. A model lives under `<name>--<12 hex digits>`, the digits
//! hashing its name and source (URL or command, and sha256), so a model whose source changes
//! is a new entry and the old copy is found stale. Everything else the cache writes starts
//! with a dot: `.part-…` while a fetch writes it, `.evicted-…` while it is deleted. Only these
//! shapes are ever removed; anything else in the directory is left alone.

use super::disk::{remove_path, tree_size};
use super::source::ModelSource;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

pub const PART_PREFIX: &str = ".part-";
pub const EVICTED_PREFIX: &str = ".evicted-";
const HASH_DIGITS: usize = 12;

/// The entry a model's verified copy lives under.
pub fn entry_name(model: &str, source: &ModelSource) -> String {
    let mut hasher = Sha256::new();
    hasher.update(model.as_bytes());
    hasher.update(b"\n");
    hasher.update(source.identity().as_bytes());
    let hash = hex(&hasher.finalize());
    format!("{}--{}", readable(model), &hash[..HASH_DIGITS])
}

/// A model's name as a file name can hold it (the hash keeps entries distinct).
fn readable(model: &str) -> String {
    model
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '_',
        })
        .take(96)
        .collect::<String>()
        .trim_start_matches('.')
        .to_string()
}

/// Whether `name` has the shape of a model entry (ours, whether current or stale).
fn is_model_entry(name: &str) -> bool {
    let Some((_, hash)) = name.rsplit_once("--") else {
        return false;
    };
    hash.len() == HASH_DIGITS && hash.bytes().all(|b| b.is_ascii_hexdigit())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a scan of the cache directory found and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Expected entries present, with their bytes (content, allocated).
    pub present: BTreeMap<String, (u64, u64)>,
    /// Entries removed: half-written fetches, unfinished deletions, stale models.
    pub removed: Vec<String>,
    /// Entries that are not the cache's; left where they are.
    pub unknown: Vec<String>,
}

/// Scans `dir`: `expected` entries (each with its most bytes allowed) count as present;
/// leftovers of a crash, stale models and copies over their size are removed.
pub fn scan(dir: &Path, expected: &BTreeMap<String, u64>) -> std::io::Result<Scan> {
    let mut scan = Scan::default();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let path = entry.path();
        let leftover = name.starts_with(PART_PREFIX) || name.starts_with(EVICTED_PREFIX);
        let size = tree_size(&path);
        let fits = expected.get(&name).is_some_and(|&cap| size.0 <= cap);
        if fits {
            scan.present.insert(name, size);
        } else if leftover || is_model_entry(&name) {
            remove_path(&path)?;
            scan.removed.push(name);
        } else {
            scan.unknown.push(name);
        }
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(url: &str) -> ModelSource {
        ModelSource {
            url: Some(url.into()),
            command: None,
            sha256: None,
            timeout: None,
        }
    }

    #[test]
    fn entries_are_readable_distinct_and_follow_the_source() {
        let a = entry_name("org/model:v1", &source("https://x/a"));
        assert!(a.starts_with("org_model_v1--"), "{a}");
        assert!(is_model_entry(&a));
        assert_ne!(a, entry_name("org/model:v1", &source("https://x/b")));
        assert_ne!(a, entry_name("org_model_v1", &source("https://x/a")));
        assert!(!entry_name("..hidden", &source("https://x")).starts_with('.'));
        assert!(!is_model_entry("notes.txt"));
    }

    #[test]
    fn a_scan_keeps_current_models_and_removes_only_its_own_leftovers() {
        let dir = std::env::temp_dir().join(format!("drover-layout-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let current = entry_name("m", &source("https://x/new"));
        let stale = entry_name("m", &source("https://x/old"));
        let oversized = entry_name("big", &source("https://x/big"));
        std::fs::write(dir.join(&current), b"model").unwrap();
        std::fs::write(dir.join(&stale), b"old model").unwrap();
        std::fs::write(dir.join(&oversized), vec![0u8; 100]).unwrap();
        std::fs::write(dir.join(".part-m--0-1"), b"half").unwrap();
        std::fs::create_dir_all(dir.join(".evicted-x-2/inner")).unwrap();
        std::fs::write(dir.join("README"), b"an operator's file").unwrap();
        let expected = BTreeMap::from([(current.clone(), 10), (oversized.clone(), 10)]);
        let scan = scan(&dir, &expected).unwrap();
        assert_eq!(scan.present.keys().collect::<Vec<_>>(), vec![&current]);
        assert_eq!(scan.present[&current].0, 5);
        let mut removed = scan.removed.clone();
        removed.sort();
        let mut want = vec![
            ".evicted-x-2".to_string(),
            ".part-m--0-1".to_string(),
            oversized,
            stale,
        ];
        want.sort();
        assert_eq!(removed, want);
        assert_eq!(scan.unknown, vec!["README".to_string()]);
        assert!(dir.join("README").exists() && dir.join(&current).exists());
        assert!(!dir.join(".part-m--0-1").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
