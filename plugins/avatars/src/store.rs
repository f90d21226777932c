//! The process-wide avatar store: avatar names → cache files, with an LRU of opened caches.
//!
//! Opening a cache reads and checks its header, faces and frame index (tens of ms and a few MB
//! for a long video); sessions of the same avatar then share one opened copy, and frames are
//! still read from disk one at a time. The least recently used avatars leave memory first;
//! hits and misses are counted for `/metrics`.
//!
//! The file name is the avatar's identity: `DIR/NAME.fcavatar`. A session that holds an
//! `Arc<CachedAvatar>` keeps playing it even if the avatar is re-registered or deleted
//! meanwhile (its open file handle still reads the old file); the next `get` sees the new one.

use crate::cache::{self, CacheError, CachedAvatar};
use crate::AvatarInfo;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

/// Cache files end with this.
pub const EXTENSION: &str = "fcavatar";
/// Longest avatar name, in characters (all ASCII, so bytes too).
pub const MAX_NAME_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid avatar name '{name}': {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("no avatar named '{0}' is registered")]
    Unknown(String),
    /// For callers that refuse to replace an avatar; the store itself never refuses.
    #[error("an avatar named '{0}' already exists")]
    Exists(String),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Names become file names and URL path segments: 1–64 of `A-Z a-z 0-9 _ -`, not starting
/// with `-` (it would read as an option on a command line). That rules out `/`, `..`, hidden
/// files, spaces and anything a shell or URL would need to escape.
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
    if name.chars().count() > MAX_NAME_LEN {
        return bad("it is longer than 64 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return bad("use only letters, digits, '_' and '-' (no spaces, '/' or '.')");
    }
    if name.starts_with('-') {
        return bad("it starts with '-'");
    }
    Ok(())
}

pub struct AvatarStore {
    dir: PathBuf,
    capacity: usize,
    /// Opened caches, most recently used last. A Vec is enough: the capacity is a handful and
    /// a lookup is a few string compares next to the milliseconds an open takes.
    lru: Mutex<Vec<(String, Arc<CachedAvatar>)>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

static GLOBAL: OnceLock<AvatarStore> = OnceLock::new();

impl AvatarStore {
    /// A store over `dir` (created when the first avatar is written) keeping up to `capacity`
    /// avatars open; a capacity of 0 counts as 1 so concurrent sessions still share a copy.
    pub fn new(dir: impl Into<PathBuf>, capacity: usize) -> Self {
        Self {
            dir: dir.into(),
            capacity: capacity.max(1),
            lru: Mutex::new(Vec::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Sets the process's store to `data_dir/avatars` (the server does, from its
    /// configuration) unless one is set already; returns the one in use.
    pub fn init_global(data_dir: &Path, capacity: usize) -> &'static AvatarStore {
        GLOBAL.get_or_init(|| AvatarStore::new(data_dir.join("avatars"), capacity))
    }

    /// The process's store: the one [`init_global`](Self::init_global) set, or else
    /// `$FACECAST_DATA_DIR/avatars` (default `./data/avatars`) keeping
    /// `$FACECAST_AVATAR_CACHE_CAPACITY` (default 8) avatars open. Plugins use this, so the
    /// elements in any pipeline of the process share one cache.
    pub fn global() -> &'static AvatarStore {
        GLOBAL.get_or_init(|| {
            let dir = std::env::var_os("FACECAST_DATA_DIR")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("data"));
            let capacity = std::env::var("FACECAST_AVATAR_CACHE_CAPACITY")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(8);
            AvatarStore::new(dir.join("avatars"), capacity)
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where avatar `name`'s cache lives (whether or not it exists), once the name is valid.
    pub fn path_of(&self, name: &str) -> Result<PathBuf, StoreError> {
        validate_name(name)?;
        Ok(self.dir.join(format!("{name}.{EXTENSION}")))
    }

    /// A poisoned lock only means another thread panicked while holding it; the list itself
    /// is always consistent (every change is a single push, remove or retain).
    fn lru(&self) -> MutexGuard<'_, Vec<(String, Arc<CachedAvatar>)>> {
        self.lru.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The opened cache of avatar `name`, from memory if it is there, else opened from disk
    /// (and checked) and kept, evicting the least recently used beyond the capacity. A missing
    /// file is [`StoreError::Unknown`]; a damaged or outdated one is [`StoreError::Cache`].
    ///
    /// Opening happens under the lock: simple, and it stops two sessions starting at once from
    /// opening the same avatar twice.
    pub fn get(&self, name: &str) -> Result<Arc<CachedAvatar>, StoreError> {
        let path = self.path_of(name)?;
        let mut lru = self.lru();
        if let Some(pos) = lru.iter().position(|(n, _)| n == name) {
            let entry = lru.remove(pos);
            let avatar = entry.1.clone();
            lru.push(entry);
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(avatar);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let mut avatar = match CachedAvatar::open(&path) {
            Ok(a) => a,
            Err(CacheError::NotFound(_)) => return Err(StoreError::Unknown(name.to_owned())),
            Err(e) => return Err(e.into()),
        };
        // The file name is what callers address the avatar by; a file renamed by hand answers
        // to its new name.
        avatar.info.name = name.to_owned();
        let avatar = Arc::new(avatar);
        while lru.len() >= self.capacity {
            lru.remove(0);
        }
        lru.push((name.to_owned(), avatar.clone()));
        Ok(avatar)
    }

    /// Forgets the opened copy of `name`, so the next `get` reads the file again. Registration
    /// calls this after writing; sessions holding the old copy are not affected.
    pub fn invalidate(&self, name: &str) {
        self.lru().retain(|(n, _)| n != name);
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

    /// Every registered avatar whose cache header can be read, sorted by name (each `name` is
    /// the file's, the one `get` takes). Only headers are read, so this stays cheap with many
    /// avatars. Unreadable caches (an older version, a damaged file), files whose names are not
    /// valid avatar names and write-in-progress temporaries are left out; `get` by name says
    /// what is wrong with a damaged one. A missing directory is an empty list.
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
            .filter_map(|e| {
                let path = e.path();
                if path.extension()? != EXTENSION {
                    return None;
                }
                let name = path.file_stem()?.to_str()?.to_owned();
                validate_name(&name).ok()?;
                let mut info = cache::read_info(&path).ok()?;
                info.name = name;
                Some(info)
            })
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    /// `get`s answered from memory.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// `get`s that went to disk (including those that found nothing).
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::tests::avatar;

    fn register(store: &AvatarStore, name: &str, frames: usize) {
        let (info, faces, pixels) = avatar(name, frames);
        cache::write(&store.path_of(name).unwrap(), &info, &faces, &pixels).unwrap();
        store.invalidate(name);
    }

    #[test]
    fn names() {
        let longest = "x".repeat(64);
        for ok in ["anna", "a_b-1", "A9", "_", longest.as_str()] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        let long = "x".repeat(65);
        for bad in [
            "",
            "../x",
            "a/b",
            "..",
            ".",
            ".hidden",
            "a b",
            "-x",
            "anna.fcavatar",
            "ä",
            "a\0",
            long.as_str(),
        ] {
            let err = validate_name(bad).unwrap_err();
            assert!(matches!(err, StoreError::BadName { .. }), "{bad:?}");
            assert!(err.to_string().contains("invalid avatar name"), "{err}");
        }
        let store = AvatarStore::new("/tmp/avatars", 2);
        assert_eq!(
            store.path_of("anna").unwrap(),
            Path::new("/tmp/avatars/anna.fcavatar")
        );
        assert!(store.path_of("../etc/passwd").is_err());
    }

    #[test]
    fn get_counts_hits_and_misses() {
        let dir = tempfile::tempdir().unwrap();
        let store = AvatarStore::new(dir.path().join("avatars"), 4);
        let err = store.get("anna").unwrap_err();
        assert!(
            matches!(&err, StoreError::Unknown(n) if n == "anna"),
            "{err}"
        );
        assert!(err.to_string().contains("'anna'"), "{err}");
        assert!(matches!(store.get("a/b"), Err(StoreError::BadName { .. })));
        let before = (store.misses(), store.hits());
        assert_eq!(before, (1, 0));

        register(&store, "anna", 3);
        let a = store.get("anna").unwrap();
        let b = store.get("anna").unwrap();
        assert!(Arc::ptr_eq(&a, &b), "the second get shares the opened copy");
        assert_eq!((store.misses(), store.hits()), (2, 1));
        assert_eq!(a.frame_count(), 3);
        assert_eq!(a.info.name, "anna");
    }

    #[test]
    fn least_recently_used_is_evicted() {
        let dir = tempfile::tempdir().unwrap();
        let store = AvatarStore::new(dir.path(), 1);
        register(&store, "anna", 2);
        register(&store, "bob", 1);
        store.get("anna").unwrap();
        store.get("anna").unwrap();
        assert_eq!((store.misses(), store.hits()), (1, 1));
        store.get("bob").unwrap(); // evicts anna
        store.get("anna").unwrap();
        assert_eq!((store.misses(), store.hits()), (3, 1));

        let store = AvatarStore::new(dir.path(), 2);
        store.get("anna").unwrap();
        store.get("bob").unwrap();
        store.get("anna").unwrap(); // anna is now the most recent
        register(&store, "carl", 1);
        store.get("carl").unwrap(); // evicts bob, not anna
        store.get("anna").unwrap();
        assert_eq!((store.misses(), store.hits()), (3, 2));
        store.get("bob").unwrap();
        assert_eq!(store.misses(), 4);
    }

    #[test]
    fn reregistering_and_removal() {
        let dir = tempfile::tempdir().unwrap();
        let store = AvatarStore::new(dir.path(), 4);
        register(&store, "anna", 1);
        let old = store.get("anna").unwrap();
        register(&store, "anna", 3); // invalidates
        assert_eq!(store.get("anna").unwrap().frame_count(), 3);
        // The session that had the old copy still plays it.
        let mut out = vec![0u8; old.frame_size()];
        old.read_frame(0, &mut out).unwrap();

        let path = store.path_of("anna").unwrap();
        store.remove("anna").unwrap();
        assert!(!path.exists());
        assert!(matches!(store.get("anna"), Err(StoreError::Unknown(_))));
        assert!(matches!(store.remove("anna"), Err(StoreError::Unknown(_))));
        assert!(matches!(
            store.remove(".."),
            Err(StoreError::BadName { .. })
        ));
    }

    #[test]
    fn damaged_caches_are_reported_by_get_and_skipped_by_list() {
        let dir = tempfile::tempdir().unwrap();
        let store = AvatarStore::new(dir.path().join("avatars"), 4);
        assert!(store.list().unwrap().is_empty(), "no directory yet");
        register(&store, "bob", 1);
        register(&store, "anna", 2);
        std::fs::write(store.path_of("broken").unwrap(), b"FCAVATAR\x01\0\0\0").unwrap();
        std::fs::write(store.dir().join("notes.txt"), b"hello").unwrap();
        std::fs::write(store.dir().join(".anna.fcavatar.tmp-1-2"), b"FCAV").unwrap();
        // A copy under a new name answers to that name.
        std::fs::copy(
            store.path_of("bob").unwrap(),
            store.path_of("bob2").unwrap(),
        )
        .unwrap();

        let names: Vec<String> = store.list().unwrap().into_iter().map(|i| i.name).collect();
        assert_eq!(names, ["anna", "bob", "bob2"]);
        assert_eq!(store.get("bob2").unwrap().info.name, "bob2");
        assert!(matches!(
            store.get("broken"),
            Err(StoreError::Cache(CacheError::Truncated { .. }))
        ));
        // A failed open is not kept: fixing the file fixes the avatar.
        register(&store, "broken", 1);
        assert!(store.get("broken").is_ok());
    }
}
