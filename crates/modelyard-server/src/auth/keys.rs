//! The key registry: keys generated and hashed, lookups cached in two
//! bounded maps, keys required from the first one on, revocations seen by
//! the open streams of their key.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use modelyard_store::{ApiKeyRow, Store};
use sha2::{Digest, Sha256};

use super::{
    KEY_CACHE_TTL, KEY_LOOKUP_TIMEOUT, MAX_CACHED_KEYS, MAX_CACHED_MISSES, REVOKED_LOOKBACK_MS,
};

/// The key registry of a running server.
#[derive(Debug)]
pub struct Auth {
    store: Store,
    required: AtomicBool,
    cache: Mutex<KeyCache>,
    /// Ids of keys revoked while this server ran; open streams of a key
    /// watch it and end when their key is in it.
    revoked: tokio::sync::watch::Sender<HashSet<String>>,
}

/// Why a key could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The store did not answer within [`KEY_LOOKUP_TIMEOUT`].
    #[error("the key store did not answer within {KEY_LOOKUP_TIMEOUT:?}")]
    Timeout,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] modelyard_store::StoreError),
}

/// Key lookups: existing keys and unknown hashes in two bounded maps.
#[derive(Debug, Default)]
struct KeyCache {
    hits: HashMap<String, (ApiKeyRow, Instant)>,
    misses: HashMap<String, Instant>,
}

impl KeyCache {
    /// `Some(answer)` when `hash` was looked up less than [`KEY_CACHE_TTL`] ago.
    fn get(&self, hash: &str, now: Instant) -> Option<Option<ApiKeyRow>> {
        if let Some((row, at)) = self.hits.get(hash) {
            if now.duration_since(*at) < KEY_CACHE_TTL {
                return Some(Some(row.clone()));
            }
        }
        match self.misses.get(hash) {
            Some(at) if now.duration_since(*at) < KEY_CACHE_TTL => Some(None),
            _ => None,
        }
    }

    fn insert(&mut self, hash: String, row: Option<ApiKeyRow>, now: Instant) {
        match row {
            Some(row) => {
                self.misses.remove(&hash);
                if self.hits.len() >= MAX_CACHED_KEYS && !self.hits.contains_key(&hash) {
                    self.hits
                        .retain(|_, (_, at)| now.duration_since(*at) < KEY_CACHE_TTL);
                    if self.hits.len() >= MAX_CACHED_KEYS {
                        self.hits.clear();
                    }
                }
                self.hits.insert(hash, (row, now));
            }
            None => {
                self.hits.remove(&hash);
                if self.misses.len() >= MAX_CACHED_MISSES && !self.misses.contains_key(&hash) {
                    self.misses.clear();
                }
                self.misses.insert(hash, now);
            }
        }
    }

    fn forget_keys(&mut self, ids: &HashSet<String>) {
        self.hits.retain(|_, (row, _)| !ids.contains(&row.id));
    }

    fn clear(&mut self) {
        self.hits.clear();
        self.misses.clear();
    }
}

/// A newly generated key: the secret (shown once), its prefix and hash.
#[derive(Debug)]
pub struct NewKey {
    /// `mk_<40 hex>`.
    pub secret: String,
    /// The first 11 characters.
    pub prefix: String,
    /// Hex SHA-256 of the secret.
    pub hash: String,
}

/// Generates a key from 160 random bits (two UUIDv4s, from the OS RNG).
pub fn generate_key() -> NewKey {
    let random = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let secret = format!("mk_{}", &random[..40]);
    NewKey {
        prefix: secret[..11].to_owned(),
        hash: hash_key(&secret),
        secret,
    }
}

/// Hex SHA-256 of a key.
pub fn hash_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

impl Auth {
    /// Reads whether keys are required.
    ///
    /// # Errors
    /// The store's error.
    pub async fn load(store: Store) -> Result<Self, modelyard_store::StoreError> {
        let required = store.keys_required().await?;
        Ok(Self {
            store,
            required: AtomicBool::new(required),
            cache: Mutex::default(),
            revoked: tokio::sync::watch::Sender::new(HashSet::new()),
        })
    }

    /// Whether requests need a key. Once true, never false again.
    pub fn required(&self) -> bool {
        self.required.load(Ordering::Relaxed)
    }

    /// Re-reads the store (background task, every
    /// [`KEY_COUNT_INTERVAL`](super::KEY_COUNT_INTERVAL)): whether keys are
    /// now required (only ever false → true), and the keys revoked by another
    /// process, whose cached lookups are dropped and whose open streams end.
    pub async fn refresh(&self) {
        let store = &self.store;
        if !self.required() {
            match tokio::time::timeout(KEY_LOOKUP_TIMEOUT, store.keys_required()).await {
                Ok(Ok(true)) => self.required.store(true, Ordering::Relaxed),
                Ok(Ok(false)) => {}
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "cannot read whether keys are required")
                }
                Err(_) => tracing::warn!("reading whether keys are required timed out"),
            }
        }
        let since = crate::clock::now_ms().saturating_sub(REVOKED_LOOKBACK_MS);
        match tokio::time::timeout(KEY_LOOKUP_TIMEOUT, store.api_keys_revoked_since(since)).await {
            Ok(Ok(ids)) => self.note_revoked(ids),
            Ok(Err(err)) => tracing::warn!(error = %err, "cannot read revoked API keys"),
            Err(_) => tracing::warn!("reading revoked API keys timed out"),
        }
    }

    /// Notes a key created through this server: keys are required now.
    pub fn created(&self) {
        self.required.store(true, Ordering::Relaxed);
    }

    /// Notes a key revoked through this server: its lookups and open
    /// streams end at once.
    pub fn revoked(&self, id: &str) {
        self.note_revoked(vec![id.to_owned()]);
    }

    fn note_revoked(&self, ids: Vec<String>) {
        let new: HashSet<String> = {
            let known = self.revoked.borrow();
            ids.into_iter().filter(|id| !known.contains(id)).collect()
        };
        if new.is_empty() {
            return;
        }
        self.lock().forget_keys(&new);
        self.revoked.send_modify(|revoked| revoked.extend(new));
    }

    /// Resolves when key `id` is revoked (by this server, or by another
    /// process and seen by [`Self::refresh`]).
    pub fn until_revoked(&self, id: String) -> impl std::future::Future<Output = ()> + Send {
        let mut revoked = self.revoked.subscribe();
        async move {
            if revoked.wait_for(|ids| ids.contains(&id)).await.is_err() {
                // The server is gone; nothing will revoke the key any more.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Forgets every cached lookup.
    pub fn clear_cache(&self) {
        self.lock().clear();
    }

    /// The active key with this secret, if any; the store gets
    /// [`KEY_LOOKUP_TIMEOUT`] to answer.
    pub(super) async fn lookup(&self, secret: &str) -> Result<Option<ApiKeyRow>, LookupError> {
        let hash = hash_key(secret);
        if let Some(answer) = self.lock().get(&hash, Instant::now()) {
            return Ok(answer);
        }
        let row = tokio::time::timeout(KEY_LOOKUP_TIMEOUT, self.store.find_active_api_key(&hash))
            .await
            .map_err(|_| LookupError::Timeout)??;
        // A key revoked while its lookup ran is not cached as active.
        let row = row.filter(|r| !self.revoked.borrow().contains(&r.id));
        self.lock().insert(hash, row.clone(), Instant::now());
        Ok(row)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use modelyard_store::Role;

    use super::*;

    /// A key row as the store would return it.
    fn key_row(id: &str) -> ApiKeyRow {
        ApiKeyRow {
            id: id.to_owned(),
            project_id: "default".to_owned(),
            name: "valid".to_owned(),
            role: Role::Member,
            prefix: "mk_valid".to_owned(),
            created_at_ms: 0,
            revoked_at_ms: None,
        }
    }

    #[test]
    fn a_flood_of_random_keys_does_not_evict_a_valid_one() {
        // One instant for the whole flood: the cache's TTL plays no part,
        // however slow the machine (a flood through the store took longer
        // than the 10 s TTL on a loaded CI machine).
        let now = Instant::now();
        let mut cache = KeyCache::default();
        // Given a valid key in the cache...
        cache.insert("valid".to_owned(), Some(key_row("k1")), now);
        // ... when a client floods the server with random keys (more than
        // either map holds)...
        for i in 0..MAX_CACHED_MISSES + MAX_CACHED_KEYS + 1 {
            let hash = generate_key().hash;
            assert!(cache.get(&hash, now).is_none(), "lookup {i} was cached");
            cache.insert(hash, None, now);
        }
        // ... then the valid key is still answered from the cache, and both
        // maps stay within their bounds.
        assert_eq!(
            cache.get("valid", now).and_then(|row| row).map(|k| k.id),
            Some("k1".to_owned()),
            "the valid key was evicted by the flood"
        );
        assert!(cache.misses.len() <= MAX_CACHED_MISSES);
        assert!(cache.hits.len() <= MAX_CACHED_KEYS);
        // After the TTL the answer is asked again.
        assert!(cache.get("valid", now + KEY_CACHE_TTL).is_none());
    }

    #[test]
    fn keys_are_random_hashed_and_prefixed() {
        let a = generate_key();
        let b = generate_key();
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with("mk_") && a.secret.len() == 43);
        assert_eq!(a.prefix, a.secret[..11]);
        assert_eq!(a.hash, hash_key(&a.secret));
        assert_eq!(a.hash.len(), 64);
        assert!(!a.hash.contains(&a.secret[3..]));
    }
}
