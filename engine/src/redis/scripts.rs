//! The store script: the Lua files in `lua/`, joined into ONE script, so that every request is
//! applied by one EVALSHA, atomically. `redis::Script` sends EVALSHA and, when the server does
//! not know the script (a restart, a failover to a fresh replica), loads it and tries again.

use ::redis::Script;
use std::sync::OnceLock;

const PARTS: [&str; 7] = [
    include_str!("lua/prelude.lua"),
    include_str!("lua/fit.lua"),
    include_str!("lua/jobs.lua"),
    include_str!("lua/machines.lua"),
    include_str!("lua/claim.lua"),
    include_str!("lua/reap.lua"),
    include_str!("lua/views.lua"),
];
const DISPATCH: &str = include_str!("lua/dispatch.lua");

/// The whole script's source.
pub fn source() -> String {
    let mut source = PARTS.join("\n");
    source.push('\n');
    source.push_str(DISPATCH);
    source
}

/// The compiled-once script handle (it carries the SHA1).
pub fn store_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| Script::new(&source()))
}
