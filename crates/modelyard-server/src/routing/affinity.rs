//! Conversation affinity: which deployment served a conversation's (or an
//! affinity key's) last request on a route, so the next one goes back to the
//! host that holds its prompt cache.
//!
//! Bounded in memory by two generations: lookups read both, inserts go to
//! the current one, and when it holds [`GENERATION`] keys the older
//! generation is dropped — the keys used least recently go first, O(1)
//! per operation. A key is a client's string (a `user` field, an
//! `x-modelyard-affinity` header) of any length, so only its 64-bit hash
//! is kept: every entry has the same small size. Two keys with one hash
//! share a deployment, which affinity, a hint, can afford.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

/// Keys per generation; at most twice as many are remembered.
pub(super) const GENERATION: usize = 50_000;

/// Affinity key → deployment, per route.
#[derive(Debug, Default)]
pub struct AffinityMap {
    inner: Mutex<Generations>,
}

#[derive(Debug, Default)]
struct Generations {
    current: HashMap<(Arc<str>, u64), Arc<str>>,
    previous: HashMap<(Arc<str>, u64), Arc<str>>,
}

impl AffinityMap {
    /// The deployment that last served `key` on `route`.
    pub fn get(&self, route: &Arc<str>, key: &str) -> Option<Arc<str>> {
        let inner = self.lock();
        let k = (Arc::clone(route), key_hash(key));
        inner
            .current
            .get(&k)
            .or_else(|| inner.previous.get(&k))
            .cloned()
    }

    /// Remembers that `deployment` served `key` on `route`.
    pub fn set(&self, route: &Arc<str>, key: &str, deployment: &str) {
        let mut inner = self.lock();
        let k = (Arc::clone(route), key_hash(key));
        if inner.current.get(&k).is_some_and(|d| &**d == deployment) {
            return;
        }
        if inner.current.len() >= GENERATION {
            inner.previous = std::mem::take(&mut inner.current);
        }
        inner.previous.remove(&k);
        inner.current.insert(k, Arc::from(deployment));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The 64-bit hash an affinity key is kept as.
fn key_hash(key: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_per_route_and_key_and_stays_bounded() {
        let map = AffinityMap::default();
        let (r1, r2): (Arc<str>, Arc<str>) = (Arc::from("r1"), Arc::from("r2"));
        map.set(&r1, "c", "a/m");
        map.set(&r2, "c", "b/m");
        assert_eq!(map.get(&r1, "c").as_deref(), Some("a/m"));
        assert_eq!(map.get(&r2, "c").as_deref(), Some("b/m"));
        map.set(&r1, "c", "b/m");
        assert_eq!(map.get(&r1, "c").as_deref(), Some("b/m"));
        for i in 0..(GENERATION * 2 + 10) {
            map.set(&r1, &i.to_string(), "a/m");
        }
        let inner = map.lock();
        assert!(inner.current.len() + inner.previous.len() <= GENERATION * 2);
        drop(inner);
        // A megabyte-long key costs an entry of fixed size, and still works.
        let long = "k".repeat(1 << 20);
        map.set(&r2, &long, "a/m");
        assert_eq!(map.get(&r2, &long).as_deref(), Some("a/m"));
    }
}
