//! Identifiers. Plain integers, so that requests are small and copyable.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A job, numbered by the store in submission order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct JobId(pub u64);

/// A machine, numbered by the store when it first registers. Never reissued, even by a
/// store that lost its data.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct MachineId(pub u64);

/// A class: the canonical form of a job's requirements, interned by the store.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct ClassId(pub u32);

/// A machine profile: everything about a machine that matching looks at, interned by the store.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct ProfileId(pub u32);

/// A fencing token. Per job it only grows; the newest lease holds the largest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Token(pub u64);

/// A model in the engine's model catalog (see `EngineConfig::models`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct ModelId(pub u8);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "j{}", self.0)
    }
}

impl fmt::Display for MachineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{}", self.0)
    }
}

/// The most models a catalog may hold: a set of them is one `u128`.
pub const MAX_MODELS: usize = 128;

/// A set of catalog models, as a bit set so that offers stay `Copy`.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
pub struct ModelSet(pub u128);

impl ModelSet {
    pub const EMPTY: ModelSet = ModelSet(0);

    pub fn with(self, model: ModelId) -> ModelSet {
        ModelSet(self.0 | (1u128 << model.0))
    }
    pub fn without(self, model: ModelId) -> ModelSet {
        ModelSet(self.0 & !(1u128 << model.0))
    }
    pub fn contains(self, model: ModelId) -> bool {
        self.0 & (1u128 << model.0) != 0
    }
    pub fn minus(self, other: ModelSet) -> ModelSet {
        ModelSet(self.0 & !other.0)
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn iter(self) -> impl Iterator<Item = ModelId> {
        let mut rest = self.0;
        std::iter::from_fn(move || {
            if rest == 0 {
                return None;
            }
            let bit = rest.trailing_zeros();
            rest &= rest - 1;
            Some(ModelId(bit as u8))
        })
    }
}
