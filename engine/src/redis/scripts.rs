//! The store's Lua: the files in `lua/`, joined into ONE Redis Function library, so that every
//! request is applied by one `FCALL`, atomically. A library is loaded once per server, unlike an
//! EVALSHA script, whose top level (defining every function) runs again on each call.
//!
//! The library and its function are named after the source's hash, so engines of two versions
//! can share a server during a rolling upgrade, each calling its own code.

use ::redis::{RedisError, Script};
use std::sync::OnceLock;

const PARTS: [&str; 9] = [
    include_str!("lua/prelude.lua"),
    include_str!("lua/journal.lua"),
    include_str!("lua/run.lua"),
    include_str!("lua/fit.lua"),
    include_str!("lua/jobs.lua"),
    include_str!("lua/machines.lua"),
    include_str!("lua/claim.lua"),
    include_str!("lua/reap.lua"),
    include_str!("lua/views.lua"),
];
const DISPATCH: &str = include_str!("lua/dispatch.lua");
/// What dispatch.lua registers; replaced by the versioned name.
const PLACEHOLDER: &str = "DROVER_FUNCTION";
/// Where prelude.lua takes `DATA_LAYOUT`.
const LAYOUT_PLACEHOLDER: &str = "DROVER_DATA_LAYOUT";

/// How the library lays a namespace's data out. A namespace records the layout that first
/// wrote it; an engine of another layout refuses it (at connect, and on every call) rather than
/// misread it. Raise it with any change to what the keys hold, so that engines sharing a
/// namespace during an upgrade cannot corrupt it.
/// 2: leases indexed per machine (`{ns}:lexp`) with lease lists as job, expiry pairs; the
/// finished list as one entry per call, `finished_at:job,job,...`.
/// 3: job specs kept without their requirements (codec/spec.rs); a machine's last claim as the
/// jobs it leased and its time (`lc_grants`, `lc_at`); class queues with plain ids as members
/// and the priority folded into the score; the clock and hot counters packed in `meta.hot`.
/// 4: the journal (`{ns}:journal`, a stream); machines that left in `{ns}:mleft` (forgotten
/// after retention; `meta.machines` counts those held, `meta.spend_forgotten` their cost).
pub const DATA_LAYOUT: u32 = 4;

/// The library, ready for `FUNCTION LOAD`, and the name `FCALL` calls.
pub struct Library {
    pub source: String,
    pub function: String,
}

fn body() -> String {
    let mut body = PARTS.join("\n");
    body.push('\n');
    body.push_str(DISPATCH);
    body
}

/// The library for this build (its name carries the hash of its code).
pub fn library() -> &'static Library {
    static LIBRARY: OnceLock<Library> = OnceLock::new();
    LIBRARY.get_or_init(|| {
        let body = body();
        assert!(
            body.contains(PLACEHOLDER),
            "dispatch.lua registers {PLACEHOLDER}"
        );
        assert!(
            body.contains(LAYOUT_PLACEHOLDER),
            "prelude.lua names {LAYOUT_PLACEHOLDER}"
        );
        let body = body.replace(LAYOUT_PLACEHOLDER, &DATA_LAYOUT.to_string());
        let hash = Script::new(&body).get_hash().to_string();
        let function = format!("drover_{}", &hash[..16]);
        Library {
            source: format!(
                "#!lua name={function}\n{}",
                body.replace(PLACEHOLDER, &function)
            ),
            function,
        }
    })
}

/// Whether `e` says the server lacks the library (a restart without persistence, a fresh node).
pub fn is_missing(e: &RedisError) -> bool {
    e.to_string().contains("Function not found")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The write discipline (lua/prelude.lua): no part writes with `redis.call` but prelude's
    /// writers, which take the command as a value; the one literal write is F.incr's.
    #[test]
    fn every_write_goes_through_the_writers() {
        const WRITES: [&str; 16] = [
            "HSET",
            "HDEL",
            "HINCRBY",
            "ZADD",
            "ZREM",
            "ZREMRANGEBYRANK",
            "ZREMRANGEBYSCORE",
            "DEL",
            "RPUSH",
            "LPUSH",
            "LPOP",
            "RPOP",
            "LSET",
            "PEXPIRE",
            "XADD",
            "XTRIM",
        ];
        let mut literal = Vec::new();
        for (part, source) in PARTS.iter().chain([&DISPATCH]).enumerate() {
            for (n, line) in source.lines().enumerate() {
                for cmd in WRITES {
                    if line.contains(&format!("redis.call('{cmd}'")) {
                        literal.push(format!("part {part} line {}: {}", n + 1, line.trim()));
                    }
                }
            }
        }
        assert_eq!(literal.len(), 1, "writes outside the writers: {literal:#?}");
        assert!(
            literal[0].contains("HINCRBY', key, field, 1"),
            "{literal:?}"
        );
    }

    #[test]
    fn the_library_is_named_for_its_code() {
        let lib = library();
        assert!(lib.function.starts_with("drover_") && lib.function.len() == 23);
        assert!(lib
            .source
            .starts_with(&format!("#!lua name={}\n", lib.function)));
        assert!(lib
            .source
            .contains(&format!("register_function('{}'", lib.function)));
        assert!(!lib.source.contains(PLACEHOLDER));
    }
}
