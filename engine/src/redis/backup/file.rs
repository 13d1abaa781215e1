//! The backup file: encoding, decoding and its checks (the format is in `backup/mod.rs`). Pure:
//! bytes in, bytes out, so every refusal is tested without a server.

use super::BackupError;
use crate::core::Time;
use ring::digest::{digest, SHA256};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The format this engine writes and reads.
pub const FORMAT: u32 = 1;
const MAGIC: &str = "drover-backup ";
const CHECKSUM: &str = "sha256 ";

/// What the file says about its snapshot (the third line, JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub namespace: String,
    /// The namespace's `meta.layout`; `None` when it held no `meta`.
    pub layout: Option<u32>,
    /// The drover-engine that wrote the file.
    pub engine: String,
    /// The Redis the payloads came from.
    pub redis_version: String,
    /// The server's `TIME` at the snapshot, µs.
    pub taken_at: Time,
    /// The namespace's store clock at the snapshot, µs; `None` without `meta`.
    pub store_clock: Option<Time>,
    /// Set by `Backup::encode`: the records that follow.
    pub keys: u64,
    /// Set by `Backup::encode`: their size.
    pub body_bytes: u64,
}

/// One key as `DUMP` gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// The key without its `{ns}:` prefix.
    pub key: Vec<u8>,
    /// The Redis type, as the payload's first byte says (for people: RESTORE needs only the
    /// payload).
    pub kind: String,
    /// Remaining time to live at the snapshot, ms; -1 for none.
    pub pttl_ms: i64,
    /// The `DUMP` payload.
    pub payload: Vec<u8>,
}

impl KeyRecord {
    /// The key, for people.
    pub fn name(&self) -> String {
        String::from_utf8_lossy(&self.key).into_owned()
    }
}

/// A namespace's snapshot: the header and every key, sorted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backup {
    pub header: Header,
    pub records: Vec<KeyRecord>,
}

impl Backup {
    /// The file's bytes. `header.keys` and `header.body_bytes` are written as the records
    /// make them, whatever the struct held.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for record in &self.records {
            encode_record(record, &mut body);
        }
        let header = Header {
            keys: self.records.len() as u64,
            body_bytes: body.len() as u64,
            ..self.header.clone()
        };
        let mut covered = serde_json::to_vec(&header).expect("a header serializes");
        covered.push(b'\n');
        covered.extend_from_slice(&body);
        let mut out = format!("{MAGIC}{FORMAT}\n{CHECKSUM}{}\n", sha256_hex(&covered)).into_bytes();
        out.extend_from_slice(&covered);
        out
    }

    /// Reads a file's bytes, refusing a wrong magic or format, a checksum that does not match,
    /// and records that do not add up to the header's counts.
    pub fn decode(bytes: &[u8]) -> Result<Backup, BackupError> {
        let (magic, rest) = split_line(bytes);
        let magic = String::from_utf8_lossy(magic);
        let Some(format) = magic.strip_prefix(MAGIC) else {
            return Err(BackupError::NotABackup {
                found: magic.chars().take(40).collect(),
            });
        };
        if format != FORMAT.to_string() {
            return Err(BackupError::UnsupportedFormat {
                found: format.to_string(),
            });
        }
        let (checksum, covered) = split_line(rest);
        let recorded = std::str::from_utf8(checksum)
            .ok()
            .and_then(|line| line.strip_prefix(CHECKSUM))
            .ok_or_else(|| {
                BackupError::Malformed("the second line is not \"sha256 <hex>\"".into())
            })?;
        let actual = sha256_hex(covered);
        if recorded != actual {
            return Err(BackupError::ChecksumMismatch {
                recorded: recorded.to_string(),
                actual,
            });
        }
        let (header, body) = split_line(covered);
        let header: Header = serde_json::from_slice(header)
            .map_err(|e| BackupError::Malformed(format!("header: {e}")))?;
        let records = decode_records(body, &header)?;
        Ok(Backup { header, records })
    }

    /// Writes the file at `path` whole or not at all: to a temporary file beside it, synced,
    /// then renamed over `path`, so a crash never leaves half a backup under its name.
    pub fn write_to(&self, path: &Path) -> Result<u64, BackupError> {
        use std::io::Write;
        let bytes = self.encode();
        let partial = path.with_extension("partial");
        let io = |p: &Path| {
            let path = p.display().to_string();
            move |source| BackupError::Io { path, source }
        };
        let mut file = std::fs::File::create(&partial).map_err(io(&partial))?;
        file.write_all(&bytes).map_err(io(&partial))?;
        file.sync_all().map_err(io(&partial))?;
        std::fs::rename(&partial, path).map_err(io(path))?;
        Ok(bytes.len() as u64)
    }

    /// Reads and checks the file at `path` (`decode`).
    pub fn read_from(path: &Path) -> Result<Backup, BackupError> {
        let bytes = std::fs::read(path).map_err(|source| BackupError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Backup::decode(&bytes)
    }
}

/// The bytes before the first newline, and those after it.
fn split_line(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.iter().position(|&b| b == b'\n') {
        Some(at) => (&bytes[..at], &bytes[at + 1..]),
        None => (bytes, &[]),
    }
}

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    digest(&SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn encode_record(record: &KeyRecord, out: &mut Vec<u8>) {
    out.extend_from_slice(&(record.key.len() as u32).to_be_bytes());
    out.extend_from_slice(&record.key);
    out.push(record.kind.len() as u8);
    out.extend_from_slice(record.kind.as_bytes());
    out.extend_from_slice(&record.pttl_ms.to_be_bytes());
    out.extend_from_slice(&(record.payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&record.payload);
}

/// Reads the records, demanding exactly the header's count and size, keys in strictly
/// increasing order (so each once).
fn decode_records(body: &[u8], header: &Header) -> Result<Vec<KeyRecord>, BackupError> {
    if body.len() as u64 != header.body_bytes {
        return Err(BackupError::Malformed(format!(
            "the header announces {} bytes of keys, the file holds {}",
            header.body_bytes,
            body.len()
        )));
    }
    let mut reader = Reader { bytes: body, at: 0 };
    let mut records: Vec<KeyRecord> = Vec::new();
    while !reader.done() {
        let record = reader.record(records.len())?;
        if let Some(last) = records.last() {
            if last.key >= record.key {
                return Err(BackupError::Malformed(format!(
                    "key {:?} follows {:?}: records must be sorted, each key once",
                    record.name(),
                    last.name()
                )));
            }
        }
        records.push(record);
    }
    if records.len() as u64 != header.keys {
        return Err(BackupError::Malformed(format!(
            "the header announces {} keys, the file holds {}",
            header.keys,
            records.len()
        )));
    }
    Ok(records)
}

/// A cursor over the records' bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.at == self.bytes.len()
    }

    fn take(&mut self, n: usize, what: &str, index: usize) -> Result<&'a [u8], BackupError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(BackupError::Malformed(format!(
                "record {index} is cut short in its {what}"
            )));
        };
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u32(&mut self, what: &str, index: usize) -> Result<usize, BackupError> {
        let b = self.take(4, what, index)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn record(&mut self, index: usize) -> Result<KeyRecord, BackupError> {
        let key_len = self.u32("key length", index)?;
        let key = self.take(key_len, "key", index)?.to_vec();
        let kind_len = self.take(1, "type length", index)?[0] as usize;
        let kind = String::from_utf8(self.take(kind_len, "type", index)?.to_vec())
            .map_err(|_| BackupError::Malformed(format!("record {index}: a type not in ASCII")))?;
        let ttl = self.take(8, "time to live", index)?;
        let pttl_ms = i64::from_be_bytes(ttl.try_into().expect("8 bytes"));
        let payload_len = self.u32("payload length", index)?;
        let payload = self.take(payload_len, "payload", index)?.to_vec();
        Ok(KeyRecord {
            key,
            kind,
            pttl_ms,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Backup {
        let record = |key: &str, kind: &str, pttl_ms: i64| KeyRecord {
            key: key.as_bytes().to_vec(),
            kind: kind.into(),
            pttl_ms,
            payload: format!("payload of {key}").into_bytes(),
        };
        Backup {
            header: Header {
                namespace: "drover".into(),
                layout: Some(4),
                engine: "drover-engine 0.1.0".into(),
                redis_version: "7.0.15".into(),
                taken_at: Time(1_700_000_000_000_000),
                store_clock: Some(Time(1_700_000_000_000_001)),
                keys: 0,
                body_bytes: 0,
            },
            records: vec![
                record("j:1", "hash", -1),
                record("meta", "hash", -1),
                record("wake:7", "list", 2500),
            ],
        }
    }

    #[test]
    fn a_file_reads_back_as_written_with_its_counts() {
        let backup = sample();
        let read = Backup::decode(&backup.encode()).expect("reads back");
        assert_eq!(read.records, backup.records);
        assert_eq!(read.header.keys, 3);
        assert_eq!(read.header.body_bytes as usize, {
            let bytes = backup.encode();
            let header_end = bytes
                .iter()
                .enumerate()
                .filter(|(_, &b)| b == b'\n')
                .nth(2)
                .unwrap()
                .0;
            bytes.len() - header_end - 1
        });
        assert_eq!(read.header.namespace, "drover");
    }

    #[test]
    fn any_flipped_byte_after_the_magic_is_refused() {
        let bytes = sample().encode();
        let second_line = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        // The checksum line, the header and the body: each byte, flipped, is caught.
        for at in second_line..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x20;
            assert!(
                Backup::decode(&bad).is_err(),
                "a flip at byte {at} of {} went unnoticed",
                bytes.len()
            );
        }
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let err = Backup::decode(&bad).unwrap_err().to_string();
        assert!(err.contains("corrupt"), "{err}");
    }

    #[test]
    fn a_truncated_file_is_refused() {
        let bytes = sample().encode();
        let err = Backup::decode(&bytes[..bytes.len() - 5])
            .unwrap_err()
            .to_string();
        assert!(err.contains("corrupt"), "{err}");
    }

    #[test]
    fn another_format_or_no_magic_is_refused() {
        let bytes = sample().encode();
        let newer = [b"drover-backup 2".as_slice(), &bytes[15..]].concat();
        let err = Backup::decode(&newer).unwrap_err().to_string();
        assert!(err.contains("backup format 2"), "{err}");
        let err = Backup::decode(b"REDIS0011...").unwrap_err().to_string();
        assert!(err.contains("not a Drover backup"), "{err}");
    }

    #[test]
    fn records_must_be_sorted_and_counted() {
        let mut backup = sample();
        backup.records.swap(0, 1);
        let err = Backup::decode(&backup.encode()).unwrap_err().to_string();
        assert!(err.contains("must be sorted"), "{err}");
    }
}
