//! Requests to script arguments and script replies to `Reply`/`Refusal`.
//!
//! The script takes one JSON document per request (ids, tokens and sequence numbers as decimal
//! strings, so none loses a digit in Lua's doubles) and answers nested arrays of integers and
//! strings (never floats: Redis truncates Lua numbers to integers; floats travel as strings).

mod decode;
mod encode;

pub use decode::decode;
pub use encode::{encode, requirements_from_key, wire_config};
