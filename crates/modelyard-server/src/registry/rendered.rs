//! Catalog response bodies cached per discovery snapshot.

/// Response bodies rendered from the discovery snapshot (`/v1/models`,
/// `/v1/catalog`), reused until what they show changes: a probe ran (its
/// check time moves) or the favorites differ. Keeps catalog reads of large
/// fleets to a lookup instead of re-serializing thousands of models.
#[derive(Debug, Default)]
pub struct RenderedBodies {
    entries: std::sync::Mutex<std::collections::HashMap<&'static str, (u64, bytes::Bytes)>>,
}

impl RenderedBodies {
    /// The body cached under `name` for `key`, else `render()` (cached).
    pub fn get_or_render(
        &self,
        name: &'static str,
        key: u64,
        render: impl FnOnce() -> bytes::Bytes,
    ) -> bytes::Bytes {
        if let Some((cached_key, body)) = self.lock().get(name) {
            if *cached_key == key {
                return body.clone();
            }
        }
        let body = render();
        self.lock().insert(name, (key, body.clone()));
        body
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<&'static str, (u64, bytes::Bytes)>>
    {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}
