//! The limits of a request's key and project, read from the store and
//! cached for [`LIMITS_TTL`].

use std::time::Instant;

use modelyard_core::limits::Limits;
use modelyard_store::{LimitSubject, ProjectId};

use super::{lock, Applicable, Quotas, LIMITS_TTL, MAX_CACHED, STORE_TIMEOUT};

/// The limits of a subject as last read, and when.
#[derive(Debug, Clone)]
pub(super) struct Cached {
    limits: Option<Limits>,
    at: Instant,
}

impl Quotas {
    /// The limits of key `key_id` (if any) and of `project`, those that
    /// have any; read from the store at most every [`LIMITS_TTL`]. While the
    /// store cannot answer, the last known limits apply (none if never
    /// read: requests are not refused for it).
    pub async fn limits_for(&self, project: &ProjectId, key_id: Option<&str>) -> Applicable {
        let mut subjects = Vec::with_capacity(2);
        if let Some(key) = key_id {
            subjects.push(LimitSubject::Key(key.to_owned()));
        }
        subjects.push(LimitSubject::Project(project.as_str().to_owned()));
        let now = Instant::now();
        let cached: Option<Applicable> = {
            let cache = lock(&self.cache);
            subjects
                .iter()
                .map(|s| {
                    cache
                        .get(&s.key())
                        .filter(|c| now.duration_since(c.at) < LIMITS_TTL)
                        .map(|c| c.limits.map(|l| (s.clone(), l)))
                })
                .collect::<Option<Vec<_>>>()
                .map(|found| found.into_iter().flatten().collect())
        };
        if let Some(found) = cached {
            return found;
        }
        match tokio::time::timeout(STORE_TIMEOUT, self.store.limits_of(project, &subjects)).await {
            Ok(Ok(rows)) => {
                let mut cache = lock(&self.cache);
                if cache.len() + subjects.len() > MAX_CACHED {
                    cache.clear();
                }
                for subject in &subjects {
                    let limits = rows.iter().find(|(s, _)| s == subject).map(|(_, l)| *l);
                    cache.insert(subject.key(), Cached { limits, at: now });
                }
                rows
            }
            Ok(Err(err)) => self.stale(&subjects, &err.to_string()),
            Err(_) => self.stale(&subjects, "timed out"),
        }
    }

    fn stale(&self, subjects: &[LimitSubject], error: &str) -> Applicable {
        tracing::warn!(error, "cannot read limits; the last known ones apply");
        let cache = lock(&self.cache);
        subjects
            .iter()
            .filter_map(|s| {
                cache
                    .get(&s.key())
                    .and_then(|c| c.limits)
                    .map(|l| (s.clone(), l))
            })
            .collect()
    }

    /// Forgets the cached limits of `subject` (they were just changed
    /// through this server).
    pub fn forget(&self, subject: &LimitSubject) {
        lock(&self.cache).remove(&subject.key());
    }
}
