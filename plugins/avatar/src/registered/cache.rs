//! The avatar cache file: everything a registered avatar needs to play and talk, in one file.
//!
//! ```text
//! "FCAVATAR" | version u32 | header_len u32 | header | header_crc u32
//! faces_len u64 | faces_crc u32 | faces (LZ4: per frame box, landmarks, score, crop, mask)
//! index: per frame (offset u64, len u32, crc u32) | index_crc u32
//! frames: per frame LZ4 of width·height·4 RGBA bytes
//! "FCAVATAR"
//! ```
//! Little-endian throughout; CRCs are CRC-32 (IEEE) of the bytes as stored.
//!
//! Why this shape: opening reads only the header, faces and index (a few MB even for a long
//! video), so a session starts in milliseconds; frames are compressed one by one, so playback
//! reads and decompresses only the frame it shows instead of holding a whole video decoded in
//! memory. Every part has its own checksum, so damage is reported as damage, never played as
//! noise; the trailing magic catches truncation cheaply. Files are written to a temporary name
//! and renamed into place, so a crash or a full disk never leaves half a cache behind.

use super::{AvatarInfo, FaceFrame, SourceKind, CROP_SIZE};
use facecast_common::Rect;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 8] = b"FCAVATAR";
pub const VERSION: u32 = 1;
const MAX_HEADER: u32 = 64 * 1024;
const MAX_FACES_BLOCK: u64 = 1 << 30;
const MAX_FRAMES: u32 = 100_000;
const CROP_BYTES: usize = CROP_SIZE * CROP_SIZE * 3;
const MASK_BYTES: usize = CROP_SIZE * CROP_SIZE;
/// Box, landmarks and score before each face's crop and mask.
const FACE_FIXED: usize = 4 * 4 + 10 * 4 + 4;
const FACE_BYTES: usize = FACE_FIXED + CROP_BYTES + MASK_BYTES;
const INDEX_ENTRY: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("avatar cache {0} does not exist")]
    NotFound(PathBuf),
    #[error("{0} is not a facecast avatar cache")]
    NotACache(PathBuf),
    #[error("avatar cache {path} has format version {found}, this facecast reads version {supported}: re-register the avatar")]
    Version {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("avatar cache {path} is truncated (in its {what})")]
    Truncated { path: PathBuf, what: &'static str },
    #[error("avatar cache {path} is damaged: its {what} fails its checksum")]
    Checksum { path: PathBuf, what: String },
    #[error("avatar cache {path} is damaged: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("frame {index} does not exist (the avatar has {count})")]
    Frame { index: usize, count: usize },
    #[error("cannot write the avatar: {0}")]
    Invalid(String),
}

/// An opened cache: the avatar's description and faces in memory, its frames read on demand.
pub struct CachedAvatar {
    pub info: AvatarInfo,
    pub faces: Vec<FaceFrame>,
    path: PathBuf,
    file: File,
    file_len: u64,
    /// Per frame: offset, stored length, CRC.
    index: Vec<(u64, u32, u32)>,
}

impl std::fmt::Debug for CachedAvatar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedAvatar")
            .field("info", &self.info)
            .field("frames", &self.index.len())
            .field("path", &self.path)
            .finish()
    }
}

// ---- encoding -------------------------------------------------------------------------------

fn encode_header(info: &AvatarInfo, frames: u32) -> Vec<u8> {
    let mut h = Vec::new();
    h.push(match info.kind {
        SourceKind::Image => 0u8,
        SourceKind::Video => 1,
    });
    for v in [info.width, info.height, frames, CROP_SIZE as u32] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    for v in [info.fps.0, info.fps.1] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    for v in info.padding {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h.extend_from_slice(&info.created_unix.to_le_bytes());
    for s in [&info.name, &info.detector] {
        let bytes = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
        h.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        h.extend_from_slice(bytes);
    }
    h
}

/// Reads little-endian values off a byte slice, failing (not panicking) past its end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    }
    fn f32(&mut self) -> Option<f32> {
        self.take(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

/// The header's fields: the avatar's description and its frame count.
fn decode_header(bytes: &[u8]) -> Option<(AvatarInfo, u32)> {
    let mut r = Reader(bytes);
    let kind = match r.u8()? {
        0 => SourceKind::Image,
        1 => SourceKind::Video,
        _ => return None,
    };
    let (width, height, frames, crop) = (r.u32()?, r.u32()?, r.u32()?, r.u32()?);
    if crop as usize != CROP_SIZE || width == 0 || height == 0 || frames == 0 || frames > MAX_FRAMES
    {
        return None;
    }
    let fps = (r.i32()?, r.i32()?);
    let padding = [r.i32()?, r.i32()?, r.i32()?, r.i32()?];
    let created_unix = r.u64()?;
    let name = r.string()?;
    let detector = r.string()?;
    Some((
        AvatarInfo {
            name,
            kind,
            width,
            height,
            fps,
            padding,
            detector,
            created_unix,
        },
        frames,
    ))
}

fn encode_faces(faces: &[FaceFrame]) -> Vec<u8> {
    let mut out = Vec::with_capacity(faces.len() * FACE_BYTES);
    for f in faces {
        for v in [f.face.x, f.face.y, f.face.w, f.face.h] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for p in f.landmarks {
            out.extend_from_slice(&p[0].to_le_bytes());
            out.extend_from_slice(&p[1].to_le_bytes());
        }
        out.extend_from_slice(&f.score.to_le_bytes());
        out.extend_from_slice(&f.crop);
        out.extend_from_slice(&f.mask);
    }
    out
}

fn decode_faces(bytes: &[u8], count: usize) -> Option<Vec<FaceFrame>> {
    if bytes.len() != count * FACE_BYTES {
        return None;
    }
    let mut r = Reader(bytes);
    (0..count)
        .map(|_| {
            let face = Rect::new(r.u32()?, r.u32()?, r.u32()?, r.u32()?);
            let mut landmarks = [[0f32; 2]; 5];
            for p in &mut landmarks {
                *p = [r.f32()?, r.f32()?];
            }
            Some(FaceFrame {
                face,
                landmarks,
                score: r.f32()?,
                crop: r.take(CROP_BYTES)?.to_vec(),
                mask: r.take(MASK_BYTES)?.to_vec(),
            })
        })
        .collect()
}

// ---- writing --------------------------------------------------------------------------------

/// Writes an avatar's cache to `path` atomically; returns the file's size.
pub fn write(
    path: &Path,
    info: &AvatarInfo,
    faces: &[FaceFrame],
    frames: impl IntoIterator<Item = impl AsRef<[u8]>>,
) -> Result<u64, CacheError> {
    if faces.is_empty() || faces.len() > MAX_FRAMES as usize {
        return Err(CacheError::Invalid(format!(
            "an avatar has 1 to {MAX_FRAMES} frames, not {}",
            faces.len()
        )));
    }
    if faces
        .iter()
        .any(|f| f.crop.len() != CROP_BYTES || f.mask.len() != MASK_BYTES)
    {
        return Err(CacheError::Invalid(format!(
            "face crops are {CROP_BYTES} bytes and masks {MASK_BYTES}"
        )));
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let io = |what: &'static str, p: &Path| {
        let p = p.to_owned();
        move |source| CacheError::Io {
            what,
            path: p,
            source,
        }
    };
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{file_name}.tmp-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let result = write_to(&tmp, info, faces, frames).and_then(|len| {
        std::fs::rename(&tmp, path).map_err(io("rename into place", path))?;
        Ok(len)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_to(
    tmp: &Path,
    info: &AvatarInfo,
    faces: &[FaceFrame],
    frames: impl IntoIterator<Item = impl AsRef<[u8]>>,
) -> Result<u64, CacheError> {
    let io = |source| CacheError::Io {
        what: "write",
        path: tmp.to_owned(),
        source,
    };
    let frame_size = info.width as usize * info.height as usize * 4;
    let count = faces.len();
    let mut out = BufWriter::new(File::create(tmp).map_err(io)?);

    let header = encode_header(info, count as u32);
    out.write_all(MAGIC).map_err(io)?;
    out.write_all(&VERSION.to_le_bytes()).map_err(io)?;
    out.write_all(&(header.len() as u32).to_le_bytes())
        .map_err(io)?;
    out.write_all(&header).map_err(io)?;
    out.write_all(&crc32fast::hash(&header).to_le_bytes())
        .map_err(io)?;
    let faces_block = lz4_flex::compress_prepend_size(&encode_faces(faces));
    out.write_all(&(faces_block.len() as u64).to_le_bytes())
        .map_err(io)?;
    out.write_all(&crc32fast::hash(&faces_block).to_le_bytes())
        .map_err(io)?;
    out.write_all(&faces_block).map_err(io)?;
    // The index is known only once the frames are compressed: reserve it, fill it in after.
    let index_at = out.stream_position().map_err(io)?;
    out.write_all(&vec![0u8; count * INDEX_ENTRY + 4])
        .map_err(io)?;
    let mut index = Vec::with_capacity(count * INDEX_ENTRY);
    let mut offset = index_at + (count * INDEX_ENTRY + 4) as u64;
    let mut written = 0;
    for frame in frames {
        let frame = frame.as_ref();
        if written == count {
            return Err(CacheError::Invalid(format!(
                "more frames than the {count} faces"
            )));
        }
        if frame.len() != frame_size {
            return Err(CacheError::Invalid(format!(
                "frame {written} has {} bytes, a {}x{} RGBA frame has {frame_size}",
                frame.len(),
                info.width,
                info.height
            )));
        }
        let block = lz4_flex::compress_prepend_size(frame);
        out.write_all(&block).map_err(io)?;
        index.extend_from_slice(&offset.to_le_bytes());
        index.extend_from_slice(&(block.len() as u32).to_le_bytes());
        index.extend_from_slice(&crc32fast::hash(&block).to_le_bytes());
        offset += block.len() as u64;
        written += 1;
    }
    if written != count {
        return Err(CacheError::Invalid(format!(
            "{written} frames for {count} faces"
        )));
    }
    out.write_all(MAGIC).map_err(io)?;
    out.seek(SeekFrom::Start(index_at)).map_err(io)?;
    out.write_all(&index).map_err(io)?;
    out.write_all(&crc32fast::hash(&index).to_le_bytes())
        .map_err(io)?;
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok(offset + MAGIC.len() as u64)
}

// ---- reading --------------------------------------------------------------------------------

/// Opens `path` and reads the fixed start: magic, version, header.
fn open_header(path: &Path) -> Result<(File, u64, AvatarInfo, u32, u64), CacheError> {
    let mut file = File::open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            CacheError::NotFound(path.to_owned())
        } else {
            CacheError::Io {
                what: "open",
                path: path.to_owned(),
                source,
            }
        }
    })?;
    let file_len = file
        .metadata()
        .map_err(|source| CacheError::Io {
            what: "read",
            path: path.to_owned(),
            source,
        })?
        .len();
    let truncated = |what| CacheError::Truncated {
        path: path.to_owned(),
        what,
    };
    let mut start = [0u8; 16];
    if file_len < 16 {
        if file_len >= 8 {
            let mut m = [0u8; 8];
            let _ = file.read_exact(&mut m);
            if &m == MAGIC {
                return Err(truncated("header"));
            }
        }
        return Err(CacheError::NotACache(path.to_owned()));
    }
    file.read_exact(&mut start)
        .map_err(|_| truncated("header"))?;
    if &start[..8] != MAGIC {
        return Err(CacheError::NotACache(path.to_owned()));
    }
    let version = u32::from_le_bytes(start[8..12].try_into().unwrap());
    if version != VERSION {
        return Err(CacheError::Version {
            path: path.to_owned(),
            found: version,
            supported: VERSION,
        });
    }
    let header_len = u32::from_le_bytes(start[12..16].try_into().unwrap());
    if header_len > MAX_HEADER {
        return Err(CacheError::Corrupt {
            path: path.to_owned(),
            reason: format!("header of {header_len} bytes"),
        });
    }
    if 16 + header_len as u64 + 4 > file_len {
        return Err(truncated("header"));
    }
    let mut header = vec![0u8; header_len as usize + 4];
    file.read_exact(&mut header)
        .map_err(|_| truncated("header"))?;
    let crc = u32::from_le_bytes(header[header_len as usize..].try_into().unwrap());
    header.truncate(header_len as usize);
    if crc32fast::hash(&header) != crc {
        return Err(CacheError::Checksum {
            path: path.to_owned(),
            what: "header".into(),
        });
    }
    let (info, frames) = decode_header(&header).ok_or_else(|| CacheError::Corrupt {
        path: path.to_owned(),
        reason: "unreadable header".into(),
    })?;
    Ok((file, file_len, info, frames, 16 + header_len as u64 + 4))
}

/// The avatar's description alone (for listings): reads only the header.
pub fn read_info(path: &Path) -> Result<AvatarInfo, CacheError> {
    open_header(path).map(|(_, _, info, _, _)| info)
}

impl CachedAvatar {
    /// Opens and checks a cache: header, faces and frame index (frames are checked as read).
    pub fn open(path: &Path) -> Result<CachedAvatar, CacheError> {
        let (file, file_len, info, frames, mut at) = open_header(path)?;
        let truncated = |what| CacheError::Truncated {
            path: path.to_owned(),
            what,
        };
        let corrupt = |reason: String| CacheError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        let read = |at: u64, len: usize, what: &'static str| -> Result<Vec<u8>, CacheError> {
            if at + len as u64 > file_len {
                return Err(truncated(what));
            }
            let mut buf = vec![0u8; len];
            file.read_exact_at(&mut buf, at)
                .map_err(|_| truncated(what))?;
            Ok(buf)
        };
        let count = frames as usize;

        let fixed = read(at, 12, "faces")?;
        let faces_len = u64::from_le_bytes(fixed[..8].try_into().unwrap());
        let faces_crc = u32::from_le_bytes(fixed[8..].try_into().unwrap());
        at += 12;
        if faces_len > MAX_FACES_BLOCK {
            return Err(corrupt(format!("faces block of {faces_len} bytes")));
        }
        let block = read(at, faces_len as usize, "faces")?;
        at += faces_len;
        if crc32fast::hash(&block) != faces_crc {
            return Err(CacheError::Checksum {
                path: path.to_owned(),
                what: "faces".into(),
            });
        }
        let raw = lz4_flex::decompress_size_prepended(&block)
            .map_err(|e| corrupt(format!("faces do not decompress: {e}")))?;
        let faces = decode_faces(&raw, count)
            .ok_or_else(|| corrupt(format!("faces block does not hold {count} faces")))?;

        let index_bytes = read(at, count * INDEX_ENTRY + 4, "frame index")?;
        let (entries, crc) = index_bytes.split_at(count * INDEX_ENTRY);
        if crc32fast::hash(entries) != u32::from_le_bytes(crc.try_into().unwrap()) {
            return Err(CacheError::Checksum {
                path: path.to_owned(),
                what: "frame index".into(),
            });
        }
        let frames_start = at + index_bytes.len() as u64;
        let frames_end = file_len
            .checked_sub(MAGIC.len() as u64)
            .ok_or(truncated("frames"))?;
        let mut index = Vec::with_capacity(count);
        let mut expected = frames_start;
        for e in entries.chunks_exact(INDEX_ENTRY) {
            let offset = u64::from_le_bytes(e[..8].try_into().unwrap());
            let len = u32::from_le_bytes(e[8..12].try_into().unwrap());
            let crc = u32::from_le_bytes(e[12..].try_into().unwrap());
            if offset != expected {
                return Err(corrupt("frame index does not match the frames".into()));
            }
            expected += len as u64;
            index.push((offset, len, crc));
        }
        if expected > frames_end {
            return Err(truncated("frames"));
        }
        let tail = read(frames_end, MAGIC.len(), "end")?;
        if expected != frames_end || tail != MAGIC {
            return Err(truncated("frames"));
        }
        Ok(CachedAvatar {
            info,
            faces,
            path: path.to_owned(),
            file,
            file_len,
            index,
        })
    }

    pub fn frame_count(&self) -> usize {
        self.index.len()
    }

    /// Bytes of one decoded RGBA frame.
    pub fn frame_size(&self) -> usize {
        self.info.width as usize * self.info.height as usize * 4
    }

    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Decodes frame `index` (RGBA, tightly packed) into `out`.
    pub fn read_frame(&self, index: usize, out: &mut [u8]) -> Result<(), CacheError> {
        let &(offset, len, crc) = self.index.get(index).ok_or(CacheError::Frame {
            index,
            count: self.index.len(),
        })?;
        let mut block = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut block, offset)
            .map_err(|source| CacheError::Io {
                what: "read",
                path: self.path.clone(),
                source,
            })?;
        if crc32fast::hash(&block) != crc {
            return Err(CacheError::Checksum {
                path: self.path.clone(),
                what: format!("frame {index}"),
            });
        }
        let damaged = |reason: String| CacheError::Corrupt {
            path: self.path.clone(),
            reason,
        };
        if out.len() != self.frame_size() || block.len() < 4 {
            return Err(damaged(format!("frame {index} has the wrong size")));
        }
        let size = u32::from_le_bytes(block[..4].try_into().unwrap()) as usize;
        if size != out.len() {
            return Err(damaged(format!("frame {index} has the wrong size")));
        }
        let n = lz4_flex::decompress_into(&block[4..], out)
            .map_err(|e| damaged(format!("frame {index} does not decompress: {e}")))?;
        if n != out.len() {
            return Err(damaged(format!("frame {index} has the wrong size")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registered::store::{AvatarStore, StoreError};

    fn avatar(name: &str, frames: usize) -> (AvatarInfo, Vec<FaceFrame>, Vec<Vec<u8>>) {
        let (w, h) = (64u32, 48u32);
        let info = AvatarInfo {
            name: name.into(),
            kind: if frames == 1 {
                SourceKind::Image
            } else {
                SourceKind::Video
            },
            width: w,
            height: h,
            fps: if frames == 1 { (0, 1) } else { (25, 1) },
            padding: [0, 10, 0, 0],
            detector: "test".into(),
            created_unix: 1_700_000_000,
        };
        let faces = (0..frames)
            .map(|i| FaceFrame {
                face: Rect::new(i as u32, 2, 30, 40),
                landmarks: [[i as f32, 1.5]; 5],
                score: 0.9,
                crop: vec![i as u8; CROP_BYTES],
                mask: vec![200 - i as u8; MASK_BYTES],
            })
            .collect();
        let pixels = (0..frames)
            .map(|i| {
                (0..w * h * 4)
                    .map(|p| (p as usize * 7 + i * 31) as u8)
                    .collect()
            })
            .collect();
        (info, faces, pixels)
    }

    fn written(dir: &Path, frames: usize) -> (PathBuf, AvatarInfo, Vec<FaceFrame>, Vec<Vec<u8>>) {
        let (info, faces, pixels) = avatar("anna", frames);
        let path = dir.join("anna.fcavatar");
        write(&path, &info, &faces, &pixels).unwrap();
        (path, info, faces, pixels)
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        for frames in [1, 3] {
            let (path, info, faces, pixels) = written(dir.path(), frames);
            let a = CachedAvatar::open(&path).unwrap();
            assert_eq!(a.info, info);
            assert_eq!(a.faces, faces);
            assert_eq!(a.frame_count(), frames);
            let mut out = vec![0u8; a.frame_size()];
            for (i, p) in pixels.iter().enumerate() {
                a.read_frame(i, &mut out).unwrap();
                assert_eq!(&out, p);
            }
            assert!(matches!(
                a.read_frame(frames, &mut out),
                Err(CacheError::Frame { .. })
            ));
            assert_eq!(read_info(&path).unwrap(), info);
        }
    }

    #[test]
    fn damage_is_reported_never_played() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _, _, _) = written(dir.path(), 3);
        let good = std::fs::read(&path).unwrap();
        let header_len = u32::from_le_bytes(good[12..16].try_into().unwrap()) as usize;
        let faces_at = 16 + header_len + 4 + 12;
        let a = CachedAvatar::open(&path).unwrap();
        let (frame1_at, _, _) = a.index[1];
        let index_at = a.index[0].0 as usize - 3 * INDEX_ENTRY - 4;
        drop(a);
        let flip = |at: usize| {
            let mut bad = good.clone();
            bad[at] ^= 0x5a;
            std::fs::write(&path, bad).unwrap();
        };
        flip(20);
        assert!(
            matches!(CachedAvatar::open(&path), Err(CacheError::Checksum { what, .. }) if what == "header")
        );
        flip(faces_at + 10);
        assert!(
            matches!(CachedAvatar::open(&path), Err(CacheError::Checksum { what, .. }) if what == "faces")
        );
        flip(index_at + 20);
        assert!(
            matches!(CachedAvatar::open(&path), Err(CacheError::Checksum { what, .. }) if what == "frame index")
        );
        flip(frame1_at as usize + 9);
        let a = CachedAvatar::open(&path).unwrap();
        let mut out = vec![0u8; a.frame_size()];
        a.read_frame(0, &mut out).unwrap();
        let err = a.read_frame(1, &mut out).unwrap_err();
        assert!(err.to_string().contains("frame 1"), "{err}");

        for cut in [
            0,
            5,
            12,
            30,
            faces_at + 3,
            index_at + 5,
            frame1_at as usize + 100,
            good.len() - 1,
        ] {
            std::fs::write(&path, &good[..cut]).unwrap();
            let err = CachedAvatar::open(&path).unwrap_err();
            assert!(
                matches!(err, CacheError::Truncated { .. } | CacheError::NotACache(_)),
                "cut at {cut}: {err}"
            );
        }
        for version in [0u32, 2] {
            let mut old = good.clone();
            old[8..12].copy_from_slice(&version.to_le_bytes());
            std::fs::write(&path, old).unwrap();
            let err = CachedAvatar::open(&path).unwrap_err();
            assert!(matches!(err, CacheError::Version { found, .. } if found == version));
            assert!(err.to_string().contains("re-register"), "{err}");
        }
        std::fs::write(&path, b"GIF89a not an avatar at all").unwrap();
        assert!(matches!(
            CachedAvatar::open(&path),
            Err(CacheError::NotACache(_))
        ));
        assert!(matches!(
            CachedAvatar::open(&dir.path().join("none.fcavatar")),
            Err(CacheError::NotFound(_))
        ));
    }

    #[test]
    fn failed_writes_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (info, faces, mut pixels) = avatar("anna", 3);
        pixels[2].pop();
        let path = dir.path().join("anna.fcavatar");
        let err = write(&path, &info, &faces, &pixels).unwrap_err();
        assert!(err.to_string().contains("frame 2"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // Replacing an existing cache swaps it whole.
        let (path, _, _, _) = written(dir.path(), 1);
        let (info3, faces3, pixels3) = avatar("anna", 3);
        write(&path, &info3, &faces3, &pixels3).unwrap();
        assert_eq!(CachedAvatar::open(&path).unwrap().frame_count(), 3);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn store_names_lru_and_removal() {
        use crate::registered::store::validate_name;
        for ok in ["anna", "a_b-1", "A9"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        let long = "x".repeat(65);
        for bad in [
            "",
            "../x",
            "a/b",
            "..",
            ".hidden",
            "a b",
            "-x",
            long.as_str(),
        ] {
            assert!(
                matches!(validate_name(bad), Err(StoreError::BadName { .. })),
                "{bad:?}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let store = AvatarStore::new(dir.path(), 1);
        assert!(matches!(store.get("anna"), Err(StoreError::Unknown(_))));
        for name in ["anna", "bob"] {
            let (info, faces, pixels) = avatar(name, 2);
            write(&store.path_of(name).unwrap(), &info, &faces, &pixels).unwrap();
        }
        let before = store.misses();
        store.get("anna").unwrap();
        store.get("anna").unwrap();
        assert_eq!((store.misses() - before, store.hits()), (1, 1));
        store.get("bob").unwrap(); // evicts anna (capacity 1)
        store.get("anna").unwrap();
        assert_eq!(store.misses() - before, 3);
        let names: Vec<String> = store.list().unwrap().into_iter().map(|i| i.name).collect();
        assert_eq!(names, ["anna", "bob"]);
        store.remove("anna").unwrap();
        assert!(matches!(store.get("anna"), Err(StoreError::Unknown(_))));
        assert!(matches!(store.remove("anna"), Err(StoreError::Unknown(_))));
    }
}
