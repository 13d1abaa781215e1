//! The packed values the Lua library keeps in a namespace, decoded in Rust: every byte and text
//! format a reader of the keys must know, in one place. Each names the Lua that writes it;
//! change both together (and raise `DATA_LAYOUT`, scripts.rs). The conformance suite decodes a
//! namespace with these after every request and compares it with MemStore's state, so a
//! format that drifts from the Lua fails there.
//!
//! Numbers packed as doubles (the `struct` library's `d`, little-endian) are ids, tokens,
//! times and counts, all whole and below 2^53, so they convert to `u64` exactly.

use crate::core::{ModelSet, Offer, StateName};

/// A job's run record, `{ns}:run` field `<job>`. Written by lua/run.lua (`F.pack_run`,
/// `F.run_new`, `F.lease_runs`, `F.succeed_runs`): `RUN_FORMAT` is `<BdddddddddB`, 74 bytes:
/// state code, then attempt, token, recorded, machine, deadline, attempt_deadline, timeout,
/// started_at, finished_at as doubles, then progress (0 or 1). Two short forms:
/// - 8 bytes (`NEW_BYTES`): a job never leased, its timeout alone (`<d`); all else is zero
///   and its state is queued;
/// - 82 bytes (`SUCCESS_BYTES`): a success, the leased record it ended with its finish time
///   appended (`<d`); it is succeeded, its outcome recorded under the lease's token, without
///   progress (the finish time in the 74-byte part is stale).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunRecord {
    pub state: StateName,
    pub attempt: u64,
    /// The newest token issued.
    pub token: u64,
    /// The token whose outcome was recorded last; 0 if none.
    pub recorded: u64,
    /// The last lease's machine, deadline and attempt deadline: meaningful only while leased.
    pub machine: u64,
    pub deadline: u64,
    pub attempt_deadline: u64,
    /// µs.
    pub timeout: u64,
    /// 0: not yet.
    pub started_at: u64,
    /// 0: not yet.
    pub finished_at: u64,
    /// The attempt reported progress (kept in `j:<job>` as `pct` and `msg`).
    pub progress: bool,
}

pub const RUN_BYTES: usize = 74;
pub const NEW_BYTES: usize = 8;
pub const SUCCESS_BYTES: usize = RUN_BYTES + 8;

/// lua/run.lua `STATE_NAMES`, by code (1-based there).
const STATE_CODES: [StateName; 8] = [
    StateName::Queued,
    StateName::Delayed,
    StateName::Leased,
    StateName::Succeeded,
    StateName::Dead,
    StateName::Cancelled,
    StateName::TimedOut,
    StateName::Unworkable,
];

pub fn state_code(state: StateName) -> u8 {
    STATE_CODES
        .iter()
        .position(|&s| s == state)
        .map_or(0, |i| i as u8 + 1)
}

/// A double the Lua stored as a whole number, back to `u64`.
pub fn whole(x: f64, what: &str) -> Result<u64, String> {
    if x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x < 2f64.powi(64) {
        Ok(x as u64)
    } else {
        Err(format!("{what} is {x}, not a whole number of 0 or more"))
    }
}

fn double_at(bytes: &[u8], at: usize) -> f64 {
    f64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

impl RunRecord {
    pub fn decode(bytes: &[u8]) -> Result<RunRecord, String> {
        match bytes.len() {
            NEW_BYTES => Ok(RunRecord {
                state: StateName::Queued,
                attempt: 0,
                token: 0,
                recorded: 0,
                machine: 0,
                deadline: 0,
                attempt_deadline: 0,
                timeout: whole(double_at(bytes, 0), "timeout")?,
                started_at: 0,
                finished_at: 0,
                progress: false,
            }),
            RUN_BYTES | SUCCESS_BYTES => {
                let code = bytes[0];
                let state = *STATE_CODES
                    .get((code as usize).wrapping_sub(1))
                    .ok_or_else(|| format!("state code {code}"))?;
                let d = |i: usize, what: &str| whole(double_at(bytes, 1 + 8 * i), what);
                let mut record = RunRecord {
                    state,
                    attempt: d(0, "attempt")?,
                    token: d(1, "token")?,
                    recorded: d(2, "recorded")?,
                    machine: d(3, "machine")?,
                    deadline: d(4, "deadline")?,
                    attempt_deadline: d(5, "attempt_deadline")?,
                    timeout: d(6, "timeout")?,
                    started_at: d(7, "started_at")?,
                    finished_at: d(8, "finished_at")?,
                    progress: match bytes[RUN_BYTES - 1] {
                        0 => false,
                        1 => true,
                        other => return Err(format!("progress flag {other}")),
                    },
                };
                if bytes.len() == SUCCESS_BYTES {
                    if state != StateName::Leased {
                        return Err(format!(
                            "a success record whose leased part is {state:?}, not leased"
                        ));
                    }
                    record.state = StateName::Succeeded;
                    record.recorded = record.token;
                    record.progress = false;
                    record.finished_at = whole(double_at(bytes, RUN_BYTES), "finish time")?;
                }
                Ok(record)
            }
            n => Err(format!(
                "{n} bytes, not {NEW_BYTES}, {RUN_BYTES} or {SUCCESS_BYTES}"
            )),
        }
    }

    /// The record in the full form (`F.pack_run`), for tests and tools.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(RUN_BYTES);
        out.push(state_code(self.state));
        for x in [
            self.attempt,
            self.token,
            self.recorded,
            self.machine,
            self.deadline,
            self.attempt_deadline,
            self.timeout,
            self.started_at,
            self.finished_at,
        ] {
            out.extend_from_slice(&(x as f64).to_le_bytes());
        }
        out.push(self.progress as u8);
        out
    }
}

/// Packed doubles, as lua/prelude.lua's `F.encode_list` writes them ('' is the empty list).
pub fn decode_doubles(bytes: &[u8]) -> Result<Vec<f64>, String> {
    if !bytes.len().is_multiple_of(8) {
        return Err(format!(
            "{} bytes, not a whole number of doubles",
            bytes.len()
        ));
    }
    Ok(bytes.chunks_exact(8).map(|c| double_at(c, 0)).collect())
}

pub fn encode_doubles(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A machine's lease list, `m:<machine>` field `leases`: job, expiry pairs (packed doubles,
/// `F.encode_list`) in MemStore's order; lua/prelude.lua `F.leases_of`, `F.drop_lease`.
pub fn decode_leases(bytes: &[u8]) -> Result<Vec<(u64, u64)>, String> {
    let values = decode_doubles(bytes)?;
    if values.len() % 2 != 0 {
        return Err(format!(
            "{} numbers, not job and expiry pairs",
            values.len()
        ));
    }
    values
        .chunks_exact(2)
        .map(|p| Ok((whole(p[0], "lease job")?, whole(p[1], "lease expiry")?)))
        .collect()
}

/// `meta` field `hot`: the clock and the counters the hot paths change, `<ddddddd` in
/// lua/prelude.lua `HOT_FIELDS` order (`F.clock` reads it, `F.flush_counts` writes it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hot {
    pub clock: u64,
    pub queued: u64,
    pub delayed: u64,
    pub leased: u64,
    pub finished: u64,
    pub t_submitted: u64,
    pub t_succeeded: u64,
}

pub const HOT_BYTES: usize = 7 * 8;

impl Hot {
    pub fn decode(bytes: &[u8]) -> Result<Hot, String> {
        if bytes.len() != HOT_BYTES {
            return Err(format!("{} bytes, not {HOT_BYTES}", bytes.len()));
        }
        let d = |i: usize, what: &str| whole(double_at(bytes, 8 * i), what);
        Ok(Hot {
            clock: d(0, "clock")?,
            queued: d(1, "queued")?,
            delayed: d(2, "delayed")?,
            leased: d(3, "leased")?,
            finished: d(4, "finished")?,
            t_submitted: d(5, "t_submitted")?,
            t_succeeded: d(6, "t_succeeded")?,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        encode_doubles(&[
            self.clock as f64,
            self.queued as f64,
            self.delayed as f64,
            self.leased as f64,
            self.finished as f64,
            self.t_submitted as f64,
            self.t_succeeded as f64,
        ])
    }
}

/// Class queues (`c:<class>:q`) score a job `(100 - priority) * 2^46 + id` (lua/prelude.lua
/// `F.queue_score`); members are the ids as plain text.
pub const QUEUE_ID_LIMIT: u64 = 1 << 46;

pub fn queue_score(priority: u8, id: u64) -> f64 {
    ((100 - priority as u64) * QUEUE_ID_LIMIT + id) as f64
}

/// The priority and id a queue score holds.
pub fn decode_queue_score(score: f64) -> Result<(u8, u64), String> {
    let s = whole(score, "queue score")?;
    let band = s / QUEUE_ID_LIMIT;
    if band > 100 {
        return Err(format!("queue score {s} is past priority 0"));
    }
    Ok(((100 - band) as u8, s % QUEUE_ID_LIMIT))
}

/// An entry of `{ns}:finished`: `finished_at:job,job,...`, one per call that finished jobs, oldest
/// first (lua/prelude.lua `F.flush`; lua/reap.lua `F.purge_finished` cuts one short).
pub fn decode_finished(entry: &str) -> Result<(u64, Vec<u64>), String> {
    let (at, jobs) = entry
        .split_once(':')
        .ok_or_else(|| format!("finished entry {entry:?} without ':'"))?;
    let at = at
        .parse()
        .map_err(|e| format!("finished entry {entry:?}: {e}"))?;
    Ok((at, decode_ids(jobs)?))
}

/// Comma-separated ids ('' is none): finished entries, a machine's `lc_grants`.
pub fn decode_ids(text: &str) -> Result<Vec<u64>, String> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|id| id.parse().map_err(|e| format!("id {id:?}: {e}")))
        .collect()
}

/// A waiting machine's last offer, `m:<machine>` field `wait_offer`:
/// `gpus,mem,disk,model;model;...` (lua/fit.lua `F.offer_string`).
pub fn decode_offer(text: &str) -> Result<Offer, String> {
    let f: Vec<&str> = text.split(',').collect();
    if f.len() != 4 {
        return Err(format!("offer {text:?}: not gpus,mem,disk,models"));
    }
    let n = |s: &str| {
        s.parse::<u32>()
            .map_err(|e| format!("offer {text:?}: {s:?}: {e}"))
    };
    let mut cached = ModelSet::EMPTY;
    for m in f[3].split(';').filter(|m| !m.is_empty()) {
        let id: u8 = m
            .parse()
            .map_err(|e| format!("offer {text:?}: model {m:?}: {e}"))?;
        if id >= 128 {
            return Err(format!("offer {text:?}: model {id} out of range"));
        }
        cached.0 |= 1u128 << id;
    }
    Ok(Offer {
        free_gpus: n(f[0])?,
        gpu_mem_gb: n(f[1])?,
        free_disk_gb: n(f[2])?,
        cached,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leased() -> RunRecord {
        RunRecord {
            state: StateName::Leased,
            attempt: 2,
            token: 1_700_000_000_000_123,
            recorded: 1_700_000_000_000_001,
            machine: 1_700_000_000_000_000,
            deadline: 1_700_000_030_000_000,
            attempt_deadline: 1_700_000_600_000_000,
            timeout: 600_000_000,
            started_at: 1_700_000_000_000_123,
            finished_at: 0,
            progress: true,
        }
    }

    #[test]
    fn a_full_run_record_is_74_bytes_in_run_lua_order() {
        let r = leased();
        let bytes = r.encode();
        assert_eq!(bytes.len(), RUN_BYTES);
        // '<BdddddddddB': the state code, nine little-endian doubles, the progress flag.
        assert_eq!(bytes[0], 3, "leased is code 3 (run.lua STATE_CODES)");
        assert_eq!(&bytes[1..9], &2f64.to_le_bytes(), "attempt first");
        assert_eq!(
            &bytes[49..57],
            &600_000_000f64.to_le_bytes(),
            "timeout the seventh double"
        );
        assert_eq!(bytes[73], 1, "progress last");
        assert_eq!(RunRecord::decode(&bytes), Ok(r));
    }

    #[test]
    fn the_short_forms_decode() {
        let new = 30_000_000f64.to_le_bytes();
        let r = RunRecord::decode(&new).unwrap();
        assert_eq!(
            (r.state, r.timeout, r.attempt, r.token),
            (StateName::Queued, 30_000_000, 0, 0)
        );
        let mut success = leased().encode();
        success.extend_from_slice(&1_700_000_100_000_000f64.to_le_bytes());
        let r = RunRecord::decode(&success).unwrap();
        assert_eq!(r.state, StateName::Succeeded);
        assert_eq!(r.recorded, r.token);
        assert_eq!(r.finished_at, 1_700_000_100_000_000);
        assert!(!r.progress);
        assert_eq!(r.machine, leased().machine);
    }

    #[test]
    fn bad_records_are_refused_with_a_reason() {
        assert!(RunRecord::decode(&[0; 9]).unwrap_err().contains("9 bytes"));
        let mut bytes = leased().encode();
        bytes[0] = 9;
        assert!(RunRecord::decode(&bytes)
            .unwrap_err()
            .contains("state code 9"));
        let mut bytes = leased().encode();
        bytes[1..9].copy_from_slice(&1.5f64.to_le_bytes());
        assert!(RunRecord::decode(&bytes).unwrap_err().contains("attempt"));
        let mut success = RunRecord {
            state: StateName::Dead,
            ..leased()
        }
        .encode();
        success.extend_from_slice(&1f64.to_le_bytes());
        assert!(RunRecord::decode(&success).is_err());
    }

    #[test]
    fn lease_lists_hot_counters_and_queue_scores_round_trip() {
        let list = encode_doubles(&[7.0, 1_700_000_030_000_000.0, 9.0, 5.0]);
        assert_eq!(
            decode_leases(&list),
            Ok(vec![(7, 1_700_000_030_000_000), (9, 5)])
        );
        assert_eq!(decode_leases(b""), Ok(vec![]));
        assert!(decode_leases(&encode_doubles(&[1.0])).is_err());
        let hot = Hot {
            clock: 1_700_000_000_000_000,
            queued: 3,
            delayed: 1,
            leased: 16,
            finished: 100,
            t_submitted: 120,
            t_succeeded: 99,
        };
        assert_eq!(hot.encode().len(), HOT_BYTES);
        assert_eq!(Hot::decode(&hot.encode()), Ok(hot));
        for (priority, id) in [(0u8, 1u64), (50, 12345), (100, QUEUE_ID_LIMIT - 1)] {
            assert_eq!(
                decode_queue_score(queue_score(priority, id)),
                Ok((priority, id))
            );
        }
        // Higher priority sorts first.
        assert!(queue_score(90, 1000) < queue_score(10, 1));
    }

    #[test]
    fn texts_decode() {
        assert_eq!(decode_finished("1000:3,4,5"), Ok((1000, vec![3, 4, 5])));
        assert!(decode_finished("1000").is_err());
        assert_eq!(decode_ids(""), Ok(vec![]));
        let offer = decode_offer("2,80,40,0;1").unwrap();
        assert_eq!(
            (offer.free_gpus, offer.gpu_mem_gb, offer.free_disk_gb),
            (2, 80, 40)
        );
        assert_eq!(offer.cached, ModelSet(0b11));
        assert_eq!(decode_offer("0,24,5,").unwrap().cached, ModelSet::EMPTY);
        assert!(decode_offer("1,2").is_err());
    }
}
