//! The limits of a request's key and project, read from the store and
//! cached for [`LIMITS_TTL`].

use std::time::Instant;

use modelyard_core::limits::Limits;
use modelyard_store::{LimitSubject, ProjectId};

use super::{lock, Applicable, HashMap, Quotas, LIMITS_TTL, MAX_CACHED, STORE_TIMEOUT};

/// The limits of a subject as last read, and when.
#[derive(Debug, Clone)]
pub(super) struct Cached {
    limits: Option<Limits>,
    at: Instant,
}

/// The cached limits, by key id and by project id (two maps, so a lookup
/// borrows the ids instead of building a key).
#[derive(Debug, Default)]
pub(super) struct LimitsCache {
    keys: HashMap<String, Cached>,
    projects: HashMap<String, Cached>,
}

impl LimitsCache {
    fn get(&self, subject: &LimitSubject) -> Option<&Cached> {
        match subject {
            LimitSubject::Key(id) => self.keys.get(id),
            LimitSubject::Project(id) => self.projects.get(id),
        }
    }

    fn insert(&mut self, subject: &LimitSubject, cached: Cached) {
        match subject {
            LimitSubject::Key(id) => self.keys.insert(id.clone(), cached),
            LimitSubject::Project(id) => self.projects.insert(id.clone(), cached),
        };
    }
}

impl Quotas {
    /// The limits of key `key_id` (if any) and of `project`, those that
    /// have any; read from the store at most every [`LIMITS_TTL`]. While the
    /// store cannot answer, the last known limits apply (none if never
    /// read: requests are not refused for it). A cached lookup allocates
    /// only for the subjects that have limits.
    pub async fn limits_for(&self, project: &ProjectId, key_id: Option<&str>) -> Applicable {
        let now = Instant::now();
        {
            let cache = lock(&self.cache);
            let fresh = |c: Option<&Cached>| {
                c.filter(|c| now.duration_since(c.at) < LIMITS_TTL)
                    .map(|c| c.limits)
            };
            let key = match key_id {
                Some(id) => fresh(cache.keys.get(id)).map(|l| l.map(|l| (id, l))),
                None => Some(None),
            };
            if let (Some(key), Some(project_limits)) =
                (key, fresh(cache.projects.get(project.as_str())))
            {
                let mut found = Vec::new();
                if let Some((id, limits)) = key {
                    found.push((LimitSubject::Key(id.to_owned()), limits));
                }
                if let Some(limits) = project_limits {
                    found.push((LimitSubject::Project(project.as_str().to_owned()), limits));
                }
                return found;
            }
        }
        let mut subjects = Vec::with_capacity(2);
        if let Some(key) = key_id {
            subjects.push(LimitSubject::Key(key.to_owned()));
        }
        subjects.push(LimitSubject::Project(project.as_str().to_owned()));
        match tokio::time::timeout(STORE_TIMEOUT, self.store.limits_of(project, &subjects)).await {
            Ok(Ok(rows)) => {
                let mut cache = lock(&self.cache);
                if cache.keys.len() + cache.projects.len() + subjects.len() > MAX_CACHED {
                    *cache = LimitsCache::default();
                }
                for subject in &subjects {
                    let limits = rows.iter().find(|(s, _)| s == subject).map(|(_, l)| *l);
                    cache.insert(subject, Cached { limits, at: now });
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
            .filter_map(|s| cache.get(s).and_then(|c| c.limits).map(|l| (s.clone(), l)))
            .collect()
    }

    /// Forgets the cached limits of `subject` (they were just changed
    /// through this server).
    pub fn forget(&self, subject: &LimitSubject) {
        let mut cache = lock(&self.cache);
        match subject {
            LimitSubject::Key(id) => cache.keys.remove(id),
            LimitSubject::Project(id) => cache.projects.remove(id),
        };
    }
}
