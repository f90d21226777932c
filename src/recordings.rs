//! The recordings folder (`<data_dir>/recordings`): what is in it, and which names may be
//! asked for. Sessions write there ([`crate::session::output`]); the API lists and serves it.

use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct Recording {
    pub name: String,
    pub bytes: u64,
    /// Last written, seconds since the Unix epoch (a recording still running grows).
    pub modified_secs: u64,
    /// Where to download it (HTTP Range supported).
    pub url: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordingError {
    #[error("invalid recording name: use a name from GET /api/v1/recordings (letters, digits, '-', '_', ending in .mp4; no '/' or '..')")]
    BadName,
}

/// A recording's name: a plain file name in the folder, never a path out of it.
pub fn check_name(name: &str) -> Result<(), RecordingError> {
    let plain = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.ends_with(".mp4");
    if plain {
        Ok(())
    } else {
        Err(RecordingError::BadName)
    }
}

/// The recordings in `dir`, newest first (none if the folder does not exist yet).
pub fn list(dir: &Path) -> std::io::Result<Vec<Recording>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let meta = entry.metadata()?;
        if !meta.is_file() || check_name(&name).is_err() {
            continue;
        }
        let modified_secs = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        out.push(Recording {
            url: format!("/api/v1/recordings/{name}"),
            name,
            bytes: meta.len(),
            modified_secs,
        });
    }
    out.sort_by(|a, b| {
        b.modified_secs
            .cmp(&a.modified_secs)
            .then(a.name.cmp(&b.name))
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_never_leave_the_folder() {
        assert!(check_name("0a1b-o1-1764870000.mp4").is_ok());
        for bad in [
            "",
            "../etc/passwd",
            "a/b.mp4",
            "..mp4",
            ".hidden.mp4",
            "x.mp4/..",
            "a%2Fb.mp4",
            "notes.txt",
            "a\\b.mp4",
        ] {
            assert_eq!(check_name(bad), Err(RecordingError::BadName), "{bad:?}");
        }
    }

    #[test]
    fn lists_recordings_only() {
        let dir = tempfile::tempdir().unwrap();
        assert!(list(&dir.path().join("absent")).unwrap().is_empty());
        std::fs::write(dir.path().join("s-o1-1.mp4"), b"1234").unwrap();
        std::fs::write(dir.path().join("other.txt"), b"x").unwrap();
        let l = list(dir.path()).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!((l[0].name.as_str(), l[0].bytes), ("s-o1-1.mp4", 4));
        assert_eq!(l[0].url, "/api/v1/recordings/s-o1-1.mp4");
    }
}
