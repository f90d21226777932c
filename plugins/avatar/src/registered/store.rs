//! The process-wide avatar store: avatar names → cache files, with an LRU of opened caches.
//!
//! Opening a cache reads and checks its header, faces and frame index (tens of ms for a long
//! video); sessions of the same avatar then share one opened copy. The least recently used
//! avatars leave memory first; hits and misses are counted for `/metrics`.

use super::cache::{self, CacheError, CachedAvatar};
use super::AvatarInfo;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Cache files end with this.
pub const EXTENSION: &str = "fcavatar";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid avatar name '{name}': {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("no avatar named '{0}' is registered")]
    Unknown(String),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Names become file names: 1–64 of `A-Z a-z 0-9 _ -`, not starting with `-`. That rules out
/// `/`, `..`, hidden files and anything a shell or URL would need to escape.
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    let bad = |reason| {
        Err(StoreError::BadName {
            name: name.chars().take(80).collect(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 64 {
        return bad("it is longer than 64 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return bad("use only letters, digits, '_' and '-'");
    }
    if name.starts_with('-') {
        return bad("it starts with '-'");
    }
    Ok(())
}

pub struct AvatarStore {
    dir: PathBuf,
    capacity: usize,
    /// Most recently used last.
    lru: Mutex<Vec<(String, Arc<CachedAvatar>)>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

static GLOBAL: OnceLock<AvatarStore> = OnceLock::new();

impl AvatarStore {
    pub fn new(dir: impl Into<PathBuf>, capacity: usize) -> Self {
        Self {
            dir: dir.into(),
            capacity: capacity.max(1),
            lru: Mutex::new(Vec::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Sets the process's store (the server does, from its configuration) unless one is set
    /// already; returns the one in use.
    pub fn init_global(data_dir: &Path, capacity: usize) -> &'static AvatarStore {
        GLOBAL.get_or_init(|| AvatarStore::new(data_dir.join("avatars"), capacity))
    }

    /// The process's store: `$FACECAST_DATA_DIR/avatars` (default `./data/avatars`), keeping
    /// `$FACECAST_AVATAR_CACHE_CAPACITY` (default 8) avatars open.
    pub fn global() -> &'static AvatarStore {
        GLOBAL.get_or_init(|| {
            let dir = std::env::var_os("FACECAST_DATA_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("data"));
            let capacity = std::env::var("FACECAST_AVATAR_CACHE_CAPACITY")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(8);
            AvatarStore::new(dir.join("avatars"), capacity)
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path_of(&self, name: &str) -> Result<PathBuf, StoreError> {
        validate_name(name)?;
        Ok(self.dir.join(format!("{name}.{EXTENSION}")))
    }

    /// The opened cache of avatar `name`, from memory if it is there.
    pub fn get(&self, name: &str) -> Result<Arc<CachedAvatar>, StoreError> {
        let path = self.path_of(name)?;
        let mut lru = self.lru.lock().unwrap();
        if let Some(pos) = lru.iter().position(|(n, _)| n == name) {
            let entry = lru.remove(pos);
            let avatar = entry.1.clone();
            lru.push(entry);
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(avatar);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let avatar = match CachedAvatar::open(&path) {
            Ok(a) => Arc::new(a),
            Err(CacheError::NotFound(_)) => return Err(StoreError::Unknown(name.to_owned())),
            Err(e) => return Err(e.into()),
        };
        if lru.len() >= self.capacity {
            lru.remove(0);
        }
        lru.push((name.to_owned(), avatar.clone()));
        Ok(avatar)
    }

    /// Forgets the opened copy of `name` (after it was registered again).
    pub fn invalidate(&self, name: &str) {
        self.lru.lock().unwrap().retain(|(n, _)| n != name);
    }

    /// Deletes avatar `name`. Sessions playing it keep their opened copy until they end.
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        let path = self.path_of(name)?;
        self.invalidate(name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::Unknown(name.to_owned()))
            }
            Err(source) => Err(StoreError::Io {
                what: "delete",
                path,
                source,
            }),
        }
    }

    /// Every registered avatar whose cache can be read, by name. Unreadable caches (an older
    /// version, a damaged file) are left out here; opening them by name says what is wrong.
    pub fn list(&self) -> Result<Vec<AvatarInfo>, StoreError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StoreError::Io {
                    what: "list",
                    path: self.dir.clone(),
                    source,
                })
            }
        };
        let mut found: Vec<AvatarInfo> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == EXTENSION))
            .filter_map(|p| cache::read_info(&p).ok())
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}
