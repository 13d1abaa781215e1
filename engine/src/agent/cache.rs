//! The agent's model cache on local disk. Models in use are pinned; when space is short the
//! least recently used unpinned model goes first, the largest among equally old ones.

use crate::core::{ModelId, ModelSet, Time};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug)]
struct Entry {
    size_gb: u32,
    last_used: Time,
    pins: u32,
}

#[derive(Clone, Debug, Default)]
pub struct ModelCache {
    entries: BTreeMap<ModelId, Entry>,
}

impl ModelCache {
    pub fn models(&self) -> ModelSet {
        self.entries
            .keys()
            .fold(ModelSet::EMPTY, |set, &m| set.with(m))
    }

    pub fn used_gb(&self) -> u32 {
        self.entries.values().map(|e| e.size_gb).sum()
    }

    /// GB held by models that running jobs use (cannot be evicted).
    pub fn pinned_gb(&self) -> u32 {
        self.entries
            .values()
            .filter(|e| e.pins > 0)
            .map(|e| e.size_gb)
            .sum()
    }

    pub fn insert(&mut self, model: ModelId, size_gb: u32, now: Time) {
        self.entries.entry(model).or_insert(Entry {
            size_gb,
            last_used: now,
            pins: 0,
        });
    }

    pub fn pin(&mut self, models: ModelSet, now: Time) {
        for model in models.iter() {
            if let Some(entry) = self.entries.get_mut(&model) {
                entry.pins += 1;
                entry.last_used = now;
            }
        }
    }

    /// Forgets `model` whatever its pins: it is not on disk after all (its fetch failed).
    pub fn remove(&mut self, model: ModelId) -> bool {
        self.entries.remove(&model).is_some()
    }

    pub fn unpin(&mut self, models: ModelSet, now: Time) {
        for model in models.iter() {
            if let Some(entry) = self.entries.get_mut(&model) {
                entry.pins = entry.pins.saturating_sub(1);
                entry.last_used = now;
            }
        }
    }

    /// Evicts unpinned models other than `keep` until `needed_gb` more are free or nothing
    /// is left to evict. Returns the evicted models and the GB they freed.
    pub fn evict_for(&mut self, needed_gb: u32, keep: ModelSet) -> (Vec<ModelId>, u32) {
        let mut victims: Vec<(Time, std::cmp::Reverse<u32>, ModelId)> = self
            .entries
            .iter()
            .filter(|(&m, e)| e.pins == 0 && !keep.contains(m))
            .map(|(&m, e)| (e.last_used, std::cmp::Reverse(e.size_gb), m))
            .collect();
        victims.sort_unstable();
        let (mut evicted, mut freed) = (Vec::new(), 0);
        for (_, std::cmp::Reverse(size), model) in victims {
            if freed >= needed_gb {
                break;
            }
            self.entries.remove(&model);
            evicted.push(model);
            freed += size;
        }
        (evicted, freed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_first_largest_among_equals_and_never_pinned() {
        let mut cache = ModelCache::default();
        cache.insert(ModelId(0), 5, Time(1));
        cache.insert(ModelId(1), 20, Time(1));
        cache.insert(ModelId(2), 30, Time(0));
        cache.insert(ModelId(3), 40, Time(5));
        cache.pin(ModelSet::EMPTY.with(ModelId(2)), Time(6));
        let (evicted, freed) = cache.evict_for(22, ModelSet::EMPTY);
        assert_eq!(evicted, vec![ModelId(1), ModelId(0)]);
        assert_eq!(freed, 25);
        let (evicted, _) = cache.evict_for(1000, ModelSet::EMPTY);
        assert_eq!(evicted, vec![ModelId(3)], "the pinned model stays");
        assert_eq!(cache.models(), ModelSet::EMPTY.with(ModelId(2)));
    }

    #[test]
    fn kept_models_are_not_evicted_and_removal_ignores_pins() {
        let mut cache = ModelCache::default();
        cache.insert(ModelId(0), 5, Time(0));
        cache.insert(ModelId(1), 5, Time(1));
        let keep = ModelSet::EMPTY.with(ModelId(0));
        let (evicted, freed) = cache.evict_for(10, keep);
        assert_eq!((evicted, freed), (vec![ModelId(1)], 5));
        cache.pin(keep, Time(2));
        assert!(cache.remove(ModelId(0)));
        assert!(!cache.remove(ModelId(0)));
        assert_eq!(cache.used_gb(), 0);
    }
}
