//! Requests to script arguments and script replies to `Reply`/`Refusal`.
//!
//! The script takes one MessagePack document per request (built as JSON, then packed: ids,
//! tokens and sequence numbers are numbers up to 2^53, which Lua's doubles hold exactly, and
//! decimal strings beyond) and answers nested arrays of integers and strings, packed too (never
//! floats: Redis would truncate Lua numbers to integers, so `msgpack::unpack` does; floats
//! travel as strings).

mod decode;
mod encode;
pub mod journal;
mod msgpack;
mod spec;

pub use decode::decode;
pub use encode::{encode, requirements_from_key, wire_config};
pub use msgpack::unpack;
pub(crate) use spec::from_stored;
