//! The avatar cache file: everything a registered avatar needs to play and talk, in one file.
//!
//! ```text
//! offset 0  "FCAVATAR"                      magic (8 bytes)
//!           version u32                     VERSION; any other → re-register
//!           header_len u32 | header | header_crc u32
//!                                           header: JSON (the AvatarInfo fields,
//!                                           frame_count, crop_size)
//!           faces_len u64 | faces_crc u32 | faces
//!                                           faces: LZ4 (size-prepended) of, per frame:
//!                                           box 4×u32, landmarks 10×f32, score f32,
//!                                           crop CROP_SIZE²·3 bytes, mask CROP_SIZE² bytes
//!           index | index_crc u32           index: per frame (offset u64, len u32, crc u32)
//!           frames                          per frame: LZ4 (size-prepended) of
//!                                           width·height·4 RGBA bytes, back to back
//!           "FCAVATAR"                      trailer
//! ```
//! Little-endian throughout; CRCs are CRC-32 (IEEE) of the bytes as stored (compressed).
//!
//! Why this shape:
//! - Frames are compressed one by one, so playback reads and decompresses only the frame it
//!   shows instead of holding a whole decoded video in memory.
//! - [`CachedAvatar::open`] reads the header, faces and index only, never the frames, so a
//!   session starts in milliseconds even for a long video; each frame's CRC is checked when
//!   that frame is read.
//! - The header is JSON so fields can be added (with serde defaults) without a new version;
//!   the binary parts, whose layout cannot change silently, are what [`VERSION`] guards.
//! - Every part has its own checksum, so damage is reported as damage, never played as noise;
//!   the trailing magic catches a truncated copy without reading the frames.
//! - [`write`] writes a temporary file and renames it into place, so a crash, a full disk or
//!   bad input never leaves half a cache behind, and a session that has the old file open keeps
//!   reading the old file.

use crate::{AvatarInfo, FaceFrame, SourceKind, CROP_SIZE};
use facecast_common::Rect;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 8] = b"FCAVATAR";
pub const VERSION: u32 = 1;

/// Magic, version and header length: what must be read before anything else.
const PREAMBLE: u64 = 16;
/// The header is a few hundred bytes; anything near this is damage, not a header.
const MAX_HEADER: u32 = 1 << 20;
/// Faces are ~37 KB each before compression; this bounds the allocation a damaged length asks.
const MAX_FACES_BLOCK: u64 = 1 << 30;
/// 100 000 frames is over an hour at 25 fps, far beyond a sensible idle loop.
const MAX_FRAMES: u32 = 100_000;
/// Widest / tallest frame accepted; keeps `width·height·4` far from overflowing.
const MAX_SIDE: u32 = 16_384;
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
    #[error("avatar cache {path} is truncated (in its {what}): re-register the avatar")]
    Truncated { path: PathBuf, what: &'static str },
    #[error(
        "avatar cache {path} is damaged: its {what} fails its checksum; re-register the avatar"
    )]
    Checksum { path: PathBuf, what: String },
    #[error("avatar cache {path} is damaged: {reason}; re-register the avatar")]
    Corrupt { path: PathBuf, reason: String },
    #[error("frame {index} does not exist (the avatar has {count})")]
    Frame { index: usize, count: usize },
    /// The caller's mistake, not the file's: inconsistent data given to [`write`], or a
    /// wrongly sized buffer given to [`CachedAvatar::read_frame`].
    #[error("{0}")]
    Invalid(String),
}

/// An opened cache: the avatar's description and faces in memory, its frames read on demand.
///
/// Frames are read with positioned reads on one shared file handle, so `&self` (and an
/// `Arc<CachedAvatar>` shared between sessions) serves several threads without a lock. The
/// handle keeps the file readable even after it is replaced or deleted.
pub struct CachedAvatar {
    pub info: AvatarInfo,
    pub faces: Vec<FaceFrame>,
    path: PathBuf,
    file: File,
    file_len: u64,
    /// Per frame: offset, stored length, CRC of the stored bytes.
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

/// The header as stored. Private so the file format does not leak into `AvatarInfo` (which
/// stays serde-free); new fields must get `#[serde(default)]` to keep old files readable.
#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    name: String,
    kind: Kind,
    width: u32,
    height: u32,
    fps: [i32; 2],
    padding: [i32; 4],
    detector: String,
    created_unix: u64,
    frame_count: u32,
    crop_size: u32,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Image,
    Video,
}

impl Header {
    fn new(info: &AvatarInfo, frame_count: u32) -> Self {
        Header {
            name: info.name.clone(),
            kind: match info.kind {
                SourceKind::Image => Kind::Image,
                SourceKind::Video => Kind::Video,
            },
            width: info.width,
            height: info.height,
            fps: [info.fps.0, info.fps.1],
            padding: info.padding,
            detector: info.detector.clone(),
            created_unix: info.created_unix,
            frame_count,
            crop_size: CROP_SIZE as u32,
        }
    }

    /// The avatar's description and frame count, or why the header cannot be right.
    fn into_info(self) -> Result<(AvatarInfo, u32), String> {
        if self.crop_size as usize != CROP_SIZE {
            return Err(format!(
                "face crops are {0}x{0}, this facecast uses {CROP_SIZE}x{CROP_SIZE}",
                self.crop_size
            ));
        }
        if !(1..=MAX_SIDE).contains(&self.width) || !(1..=MAX_SIDE).contains(&self.height) {
            return Err(format!("frame size {}x{}", self.width, self.height));
        }
        if !(1..=MAX_FRAMES).contains(&self.frame_count) {
            return Err(format!("{} frames", self.frame_count));
        }
        let info = AvatarInfo {
            name: self.name,
            kind: match self.kind {
                Kind::Image => SourceKind::Image,
                Kind::Video => SourceKind::Video,
            },
            width: self.width,
            height: self.height,
            fps: (self.fps[0], self.fps[1]),
            padding: self.padding,
            detector: self.detector,
            created_unix: self.created_unix,
        };
        Ok((info, self.frame_count))
    }
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
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
    fn f32(&mut self) -> Option<f32> {
        self.array().map(f32::from_le_bytes)
    }
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
    if bytes.len() != count.checked_mul(FACE_BYTES)? {
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
                mask: r.take(MASK_BYTES)?.into(),
            })
        })
        .collect()
}

/// The most bytes one stored frame can take: LZ4's worst case plus the size prefix.
fn max_stored_frame(frame_size: usize) -> usize {
    4 + lz4_flex::block::get_maximum_output_size(frame_size)
}

// ---- writing --------------------------------------------------------------------------------

/// Writes an avatar's cache to `path` atomically (temporary file, fsync, rename); returns the
/// file's size. `frames` must hold exactly one `width·height·4`-byte RGBA frame per face; they
/// are compressed and written one at a time, so a long video is never held compressed in
/// memory. On any error nothing is left at `path` (an older cache there stays as it was) and the
/// temporary file is removed. The parent directory is created if missing.
pub fn write(
    path: &Path,
    info: &AvatarInfo,
    faces: &[FaceFrame],
    frames: impl IntoIterator<Item = impl AsRef<[u8]>>,
) -> Result<u64, CacheError> {
    check_input(info, faces)?;
    let io = |what: &'static str, p: &Path| {
        let p = p.to_owned();
        move |source| CacheError::Io {
            what,
            path: p,
            source,
        }
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| CacheError::Invalid(format!("{} is not a file path", path.display())))?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    // Same directory, so the rename is atomic; hidden and unique, so listings and concurrent
    // writers never see or clobber it.
    let tmp = dir.join(format!(
        ".{file_name}.tmp-{}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let result = write_to(&tmp, info, faces, frames).and_then(|len| {
        std::fs::rename(&tmp, path).map_err(io("rename into place", path))?;
        Ok(len)
    });
    match result {
        Ok(len) => {
            // Makes the rename itself durable; the cache is complete either way, so a failure
            // here is not worth failing the registration for.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(len)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Refuses what `open` would refuse, before a byte is written.
fn check_input(info: &AvatarInfo, faces: &[FaceFrame]) -> Result<(), CacheError> {
    let invalid = |m: String| Err(CacheError::Invalid(format!("cannot write avatar: {m}")));
    if faces.is_empty() || faces.len() > MAX_FRAMES as usize {
        return invalid(format!(
            "an avatar has 1 to {MAX_FRAMES} frames, not {}",
            faces.len()
        ));
    }
    if info.kind == SourceKind::Image && faces.len() != 1 {
        return invalid(format!(
            "an image avatar has one frame, not {}",
            faces.len()
        ));
    }
    if !(1..=MAX_SIDE).contains(&info.width) || !(1..=MAX_SIDE).contains(&info.height) {
        return invalid(format!(
            "frame size {}x{} (1 to {MAX_SIDE} pixels each way)",
            info.width, info.height
        ));
    }
    if let Some(i) = faces
        .iter()
        .position(|f| f.crop.len() != CROP_BYTES || f.mask.len() != MASK_BYTES)
    {
        return invalid(format!(
            "face {i} has a {}-byte crop and a {}-byte mask, not {CROP_BYTES} and {MASK_BYTES}",
            faces[i].crop.len(),
            faces[i].mask.len()
        ));
    }
    Ok(())
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
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(io)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);

    let header = serde_json::to_vec(&Header::new(info, count as u32))
        .map_err(|e| CacheError::Invalid(format!("cannot encode the avatar header: {e}")))?;
    if header.len() > MAX_HEADER as usize {
        return Err(CacheError::Invalid(format!(
            "the avatar header is {} bytes (name or detector too long)",
            header.len()
        )));
    }
    out.write_all(MAGIC).map_err(io)?;
    out.write_all(&VERSION.to_le_bytes()).map_err(io)?;
    out.write_all(&(header.len() as u32).to_le_bytes())
        .map_err(io)?;
    out.write_all(&header).map_err(io)?;
    out.write_all(&crc32fast::hash(&header).to_le_bytes())
        .map_err(io)?;

    let faces_block = lz4_flex::compress_prepend_size(&encode_faces(faces));
    if faces_block.len() as u64 > MAX_FACES_BLOCK {
        return Err(CacheError::Invalid(format!(
            "the faces take {} bytes compressed, more than a cache holds",
            faces_block.len()
        )));
    }
    out.write_all(&(faces_block.len() as u64).to_le_bytes())
        .map_err(io)?;
    out.write_all(&crc32fast::hash(&faces_block).to_le_bytes())
        .map_err(io)?;
    out.write_all(&faces_block).map_err(io)?;
    drop(faces_block);

    // The index is known only once the frames are compressed: reserve it, fill it in after.
    let index_len = count * INDEX_ENTRY + 4;
    let index_at = out.stream_position().map_err(io)?;
    out.write_all(&vec![0u8; index_len]).map_err(io)?;
    let mut index = Vec::with_capacity(index_len);
    let mut offset = index_at + index_len as u64;
    // One buffer for every frame: size prefix, then LZ4's worst case.
    let mut block = vec![0u8; max_stored_frame(frame_size)];
    let mut written = 0;
    for frame in frames {
        let frame = frame.as_ref();
        if written == count {
            return Err(CacheError::Invalid(format!(
                "cannot write avatar: more frames than its {count} faces"
            )));
        }
        if frame.len() != frame_size {
            return Err(CacheError::Invalid(format!(
                "cannot write avatar: frame {written} has {} bytes, a {}x{} RGBA frame has {frame_size}",
                frame.len(),
                info.width,
                info.height
            )));
        }
        block[..4].copy_from_slice(&(frame_size as u32).to_le_bytes());
        let n = lz4_flex::compress_into(frame, &mut block[4..])
            .map_err(|e| CacheError::Invalid(format!("cannot compress frame {written}: {e}")))?;
        let stored = &block[..4 + n];
        out.write_all(stored).map_err(io)?;
        index.extend_from_slice(&offset.to_le_bytes());
        index.extend_from_slice(&(stored.len() as u32).to_le_bytes());
        index.extend_from_slice(&crc32fast::hash(stored).to_le_bytes());
        offset += stored.len() as u64;
        written += 1;
    }
    if written != count {
        return Err(CacheError::Invalid(format!(
            "cannot write avatar: {written} frames for {count} faces"
        )));
    }
    out.write_all(MAGIC).map_err(io)?;
    let index_crc = crc32fast::hash(&index);
    index.extend_from_slice(&index_crc.to_le_bytes());
    out.seek(SeekFrom::Start(index_at)).map_err(io)?;
    out.write_all(&index).map_err(io)?;
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok(offset + MAGIC.len() as u64)
}

// ---- reading --------------------------------------------------------------------------------

/// What [`open_header`] found: the open file, its length, the header and where it ends.
struct Opened {
    file: File,
    file_len: u64,
    info: AvatarInfo,
    frame_count: u32,
    header_end: u64,
}

/// Opens `path` and reads its start: magic, version and header.
fn open_header(path: &Path) -> Result<Opened, CacheError> {
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
    if file_len < PREAMBLE {
        // Too short to say: a prefix of the magic (the empty file included) is a cut cache.
        let mut start = Vec::new();
        file.read_to_end(&mut start)
            .map_err(|source| CacheError::Io {
                what: "read",
                path: path.to_owned(),
                source,
            })?;
        let n = start.len().min(MAGIC.len());
        return if start[..n] == MAGIC[..n] {
            Err(truncated("header"))
        } else {
            Err(CacheError::NotACache(path.to_owned()))
        };
    }
    let mut preamble = [0u8; PREAMBLE as usize];
    file.read_exact(&mut preamble)
        .map_err(|_| truncated("header"))?;
    let mut r = Reader(&preamble);
    if r.take(MAGIC.len()) != Some(&MAGIC[..]) {
        return Err(CacheError::NotACache(path.to_owned()));
    }
    let (version, header_len) = (r.u32(), r.u32());
    let (Some(version), Some(header_len)) = (version, header_len) else {
        return Err(truncated("header"));
    };
    if version != VERSION {
        return Err(CacheError::Version {
            path: path.to_owned(),
            found: version,
            supported: VERSION,
        });
    }
    if header_len > MAX_HEADER {
        return Err(CacheError::Corrupt {
            path: path.to_owned(),
            reason: format!("its header claims {header_len} bytes"),
        });
    }
    let header_end = PREAMBLE + header_len as u64 + 4;
    if header_end > file_len {
        return Err(truncated("header"));
    }
    let mut header = vec![0u8; header_len as usize + 4];
    file.read_exact(&mut header)
        .map_err(|_| truncated("header"))?;
    let mut r = Reader(&header);
    let (Some(json), Some(crc)) = (r.take(header_len as usize), r.u32()) else {
        return Err(truncated("header"));
    };
    if crc32fast::hash(json) != crc {
        return Err(CacheError::Checksum {
            path: path.to_owned(),
            what: "header".into(),
        });
    }
    let corrupt = |reason: String| CacheError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let (info, frame_count) = serde_json::from_slice::<Header>(json)
        .map_err(|e| corrupt(format!("unreadable header: {e}")))?
        .into_info()
        .map_err(|e| corrupt(format!("impossible header: {e}")))?;
    Ok(Opened {
        file,
        file_len,
        info,
        frame_count,
        header_end,
    })
}

/// The avatar's description alone, for listings: reads and checks only the header, so it does
/// not notice damage further on (opening the avatar does).
pub fn read_info(path: &Path) -> Result<AvatarInfo, CacheError> {
    open_header(path).map(|o| o.info)
}

impl CachedAvatar {
    /// Opens and checks a cache: magic, version, header, faces, frame index and trailer, with
    /// their checksums. Frames are not read here; each is checked when [`read_frame`] reads it.
    ///
    /// [`read_frame`]: CachedAvatar::read_frame
    pub fn open(path: &Path) -> Result<CachedAvatar, CacheError> {
        let Opened {
            file,
            file_len,
            info,
            frame_count,
            header_end,
        } = open_header(path)?;
        let truncated = |what| CacheError::Truncated {
            path: path.to_owned(),
            what,
        };
        let corrupt = |reason: String| CacheError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        let checksum = |what: &str| CacheError::Checksum {
            path: path.to_owned(),
            what: what.into(),
        };
        // Lengths come from the file: check them against its size before allocating.
        let read = |at: u64, len: u64, what: &'static str| -> Result<Vec<u8>, CacheError> {
            match at.checked_add(len) {
                Some(end) if end <= file_len => {}
                _ => return Err(truncated(what)),
            }
            let mut buf = vec![0u8; len as usize];
            file.read_exact_at(&mut buf, at)
                .map_err(|_| truncated(what))?;
            Ok(buf)
        };
        let count = frame_count as usize;
        let frame_size = info.width as usize * info.height as usize * 4;
        let mut at = header_end;

        let fixed = read(at, 12, "faces")?;
        let mut r = Reader(&fixed);
        let (Some(faces_len), Some(faces_crc)) = (r.u64(), r.u32()) else {
            return Err(truncated("faces"));
        };
        at += 12;
        if faces_len > MAX_FACES_BLOCK {
            return Err(corrupt(format!("its faces block claims {faces_len} bytes")));
        }
        let block = read(at, faces_len, "faces")?;
        at += faces_len;
        if crc32fast::hash(&block) != faces_crc {
            return Err(checksum("faces"));
        }
        // Check the size the block claims before letting it allocate.
        let expected = count * FACE_BYTES;
        let mut r = Reader(&block);
        let claimed = r.u32().ok_or_else(|| corrupt("empty faces block".into()))?;
        if claimed as usize != expected {
            return Err(corrupt(format!(
                "its faces block holds {claimed} bytes, {count} faces take {expected}"
            )));
        }
        let mut raw = vec![0u8; expected];
        let n = lz4_flex::decompress_into(r.0, &mut raw)
            .map_err(|e| corrupt(format!("its faces do not decompress: {e}")))?;
        if n != expected {
            return Err(corrupt(format!(
                "its faces block holds {n} bytes, {count} faces take {expected}"
            )));
        }
        let faces = decode_faces(&raw, count)
            .ok_or_else(|| corrupt(format!("its faces block does not hold {count} faces")))?;
        drop(raw);

        let index_bytes = read(at, (count * INDEX_ENTRY + 4) as u64, "frame index")?;
        let mut r = Reader(&index_bytes);
        let (Some(entries), Some(index_crc)) = (r.take(count * INDEX_ENTRY), r.u32()) else {
            return Err(truncated("frame index"));
        };
        if crc32fast::hash(entries) != index_crc {
            return Err(checksum("frame index"));
        }
        let frames_start = at + index_bytes.len() as u64;
        let frames_end = file_len
            .checked_sub(MAGIC.len() as u64)
            .filter(|&end| end >= frames_start)
            .ok_or_else(|| truncated("frames"))?;
        // Frames lie back to back from the end of the index; anything else is damage.
        let max_len = max_stored_frame(frame_size);
        let mut index = Vec::with_capacity(count);
        let mut expected_at = frames_start;
        let mut r = Reader(entries);
        for i in 0..count {
            let (Some(offset), Some(len), Some(crc)) = (r.u64(), r.u32(), r.u32()) else {
                return Err(truncated("frame index"));
            };
            if offset != expected_at || len < 4 || len as usize > max_len {
                return Err(corrupt(format!(
                    "its frame index does not match its frames (at frame {i})"
                )));
            }
            expected_at += len as u64;
            index.push((offset, len, crc));
        }
        if expected_at > frames_end {
            return Err(truncated("frames"));
        }
        if expected_at < frames_end {
            return Err(corrupt(format!(
                "{} unexpected bytes after its last frame",
                frames_end - expected_at
            )));
        }
        let tail = read(frames_end, MAGIC.len() as u64, "end marker")?;
        if tail != MAGIC {
            return Err(corrupt("its end marker is damaged".into()));
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

    /// How many frames the avatar has (always `faces.len()`, 1 for an image).
    pub fn frame_count(&self) -> usize {
        self.index.len()
    }

    /// Bytes of one decoded RGBA frame: the size `read_frame` wants.
    pub fn frame_size(&self) -> usize {
        self.info.width as usize * self.info.height as usize * 4
    }

    /// Size of the cache file on disk.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Where the cache was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Decodes frame `index` (RGBA, tightly packed rows) into `out`, which must be
    /// [`frame_size`](Self::frame_size) bytes. The frame's checksum is verified before it is
    /// decompressed, and it must decompress to exactly one frame.
    ///
    /// Allocates the compressed block per call: a shared buffer would need a lock between the
    /// sessions playing the same avatar, and the allocation is small next to the decompression.
    pub fn read_frame(&self, index: usize, out: &mut [u8]) -> Result<(), CacheError> {
        let &(offset, len, crc) = self.index.get(index).ok_or(CacheError::Frame {
            index,
            count: self.index.len(),
        })?;
        let frame_size = self.frame_size();
        if out.len() != frame_size {
            return Err(CacheError::Invalid(format!(
                "a {}x{} frame needs a {frame_size}-byte buffer, not {}",
                self.info.width,
                self.info.height,
                out.len()
            )));
        }
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
        let mut r = Reader(&block);
        let size = r
            .u32()
            .ok_or_else(|| damaged(format!("frame {index} is empty")))?;
        if size as usize != frame_size {
            return Err(damaged(format!(
                "frame {index} holds {size} bytes, not {frame_size}"
            )));
        }
        let n = lz4_flex::decompress_into(r.0, out)
            .map_err(|e| damaged(format!("frame {index} does not decompress: {e}")))?;
        if n != frame_size {
            return Err(damaged(format!(
                "frame {index} decompresses to {n} bytes, not {frame_size}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const W: u32 = 64;
    const H: u32 = 48;

    /// A synthetic avatar whose every face and frame differs from the others.
    pub(crate) fn avatar(name: &str, frames: usize) -> (AvatarInfo, Vec<FaceFrame>, Vec<Vec<u8>>) {
        let info = AvatarInfo {
            name: name.into(),
            kind: if frames == 1 {
                SourceKind::Image
            } else {
                SourceKind::Video
            },
            width: W,
            height: H,
            fps: if frames == 1 { (0, 1) } else { (25, 1) },
            padding: [0, 10, -2, 3],
            detector: "test \"detector\" ü".into(),
            created_unix: 1_700_000_000,
        };
        let faces = (0..frames)
            .map(|i| FaceFrame {
                face: Rect::new(i as u32, 2 + i as u32, 30, 40 - i as u32),
                landmarks: std::array::from_fn(|k| [i as f32 + k as f32 * 0.5, -1.25 * k as f32]),
                score: 0.9 - i as f32 * 0.01,
                crop: (0..CROP_BYTES).map(|p| (p * 3 + i * 17) as u8).collect(),
                mask: (0..MASK_BYTES).map(|p| (p / 96 + i * 5) as u8).collect(),
            })
            .collect();
        let pixels = (0..frames)
            .map(|i| {
                (0..(W * H * 4) as usize)
                    .map(|p| ((p / 4 % W as usize) * (i + 1) + p / (4 * W as usize) * 3) as u8)
                    .collect()
            })
            .collect();
        (info, faces, pixels)
    }

    struct Written {
        path: PathBuf,
        info: AvatarInfo,
        faces: Vec<FaceFrame>,
        pixels: Vec<Vec<u8>>,
    }

    fn written(dir: &Path, frames: usize) -> Written {
        let (info, faces, pixels) = avatar("anna", frames);
        let path = dir.join("anna.fcavatar");
        let len = write(&path, &info, &faces, &pixels).unwrap();
        assert_eq!(len, std::fs::metadata(&path).unwrap().len());
        Written {
            path,
            info,
            faces,
            pixels,
        }
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn round_trip_video_and_image() {
        let dir = tempfile::tempdir().unwrap();
        for frames in [3, 1] {
            let w = written(dir.path(), frames);
            let a = CachedAvatar::open(&w.path).unwrap();
            assert_eq!(a.info, w.info);
            assert_eq!(a.faces, w.faces);
            assert_eq!(a.frame_count(), frames);
            assert_eq!(a.frame_size(), (W * H * 4) as usize);
            assert_eq!(a.file_len(), std::fs::metadata(&w.path).unwrap().len());
            let mut out = vec![0u8; a.frame_size()];
            // Out of order too: frames are independent.
            for i in (0..frames).rev().chain(0..frames) {
                a.read_frame(i, &mut out).unwrap();
                assert!(out == w.pixels[i], "frame {i}");
            }
            assert!(matches!(
                a.read_frame(frames, &mut out),
                Err(CacheError::Frame { index, count }) if index == frames && count == frames
            ));
            let mut short = vec![0u8; a.frame_size() - 1];
            assert!(matches!(
                a.read_frame(0, &mut short),
                Err(CacheError::Invalid(_))
            ));
            assert_eq!(read_info(&w.path).unwrap(), w.info);
        }
    }

    #[test]
    fn frames_read_from_several_threads() {
        let dir = tempfile::tempdir().unwrap();
        let w = written(dir.path(), 3);
        let a = std::sync::Arc::new(CachedAvatar::open(&w.path).unwrap());
        std::thread::scope(|s| {
            for t in 0..4 {
                let (a, pixels) = (a.clone(), &w.pixels);
                s.spawn(move || {
                    let mut out = vec![0u8; a.frame_size()];
                    for k in 0..20 {
                        let i = (t + k) % 3;
                        a.read_frame(i, &mut out).unwrap();
                        assert!(out == pixels[i]);
                    }
                });
            }
        });
    }

    /// Where the parts of a 3-frame cache start, from the file itself.
    struct Layout {
        faces: usize,
        index: usize,
        frames: [usize; 3],
    }

    fn layout(path: &Path) -> Layout {
        let bytes = std::fs::read(path).unwrap();
        let header_len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
        let faces = 16 + header_len + 4 + 12;
        let a = CachedAvatar::open(path).unwrap();
        let frames = [0, 1, 2].map(|i| a.index[i].0 as usize);
        Layout {
            faces,
            index: frames[0] - 3 * INDEX_ENTRY - 4,
            frames,
        }
    }

    #[test]
    fn damage_is_reported_never_played() {
        let dir = tempfile::tempdir().unwrap();
        let w = written(dir.path(), 3);
        let good = std::fs::read(&w.path).unwrap();
        let at = layout(&w.path);
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut bad = good.clone();
            f(&mut bad);
            std::fs::write(&w.path, bad).unwrap();
        };
        let flip = |i: usize| with(&|b| b[i] ^= 0x5a);
        let open_err = || CachedAvatar::open(&w.path).unwrap_err();

        flip(20); // header JSON
        assert!(matches!(open_err(), CacheError::Checksum { what, .. } if what == "header"));
        flip(at.faces + 10);
        assert!(matches!(open_err(), CacheError::Checksum { what, .. } if what == "faces"));
        flip(at.index + 20);
        assert!(matches!(open_err(), CacheError::Checksum { what, .. } if what == "frame index"));
        flip(good.len() - 3);
        assert!(matches!(open_err(), CacheError::Corrupt { .. }));

        // A damaged frame: the avatar opens, the other frames play, that one is refused.
        flip(at.frames[1] + 9);
        let a = CachedAvatar::open(&w.path).unwrap();
        let mut out = vec![0u8; a.frame_size()];
        a.read_frame(0, &mut out).unwrap();
        a.read_frame(2, &mut out).unwrap();
        let err = a.read_frame(1, &mut out).unwrap_err();
        assert!(
            matches!(&err, CacheError::Checksum { what, .. } if what == "frame 1"),
            "{err}"
        );
        drop(a);

        // Extra bytes after the last frame.
        with(&|b| {
            b.truncate(good.len() - 8);
            b.extend_from_slice(b"junk");
            b.extend_from_slice(MAGIC);
        });
        assert!(matches!(open_err(), CacheError::Corrupt { .. }));
    }

    #[test]
    fn truncation_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let w = written(dir.path(), 3);
        let good = std::fs::read(&w.path).unwrap();
        let at = layout(&w.path);
        for cut in [
            0,
            3,
            8,
            12,
            15,
            30,
            at.faces - 5,
            at.faces + 3,
            at.index + 5,
            at.frames[0],
            at.frames[1] + 100,
            at.frames[2] + 1,
            good.len() - 8,
            good.len() - 1,
        ] {
            std::fs::write(&w.path, &good[..cut]).unwrap();
            let err = CachedAvatar::open(&w.path).unwrap_err();
            assert!(
                matches!(err, CacheError::Truncated { .. }),
                "cut at {cut}: {err}"
            );
            assert!(err.to_string().contains("truncated"), "{err}");
        }
    }

    #[test]
    fn other_versions_and_other_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let w = written(dir.path(), 1);
        let good = std::fs::read(&w.path).unwrap();
        for version in [0u32, 2] {
            let mut other = good.clone();
            other[8..12].copy_from_slice(&version.to_le_bytes());
            std::fs::write(&w.path, other).unwrap();
            let err = CachedAvatar::open(&w.path).unwrap_err();
            assert!(
                matches!(err, CacheError::Version { found, supported: VERSION, .. } if found == version)
            );
            assert!(err.to_string().contains("re-register"), "{err}");
            assert!(read_info(&w.path).is_err());
        }
        for garbage in [
            &b"GIF89a not an avatar at all"[..],
            b"x",
            b"FCAV\0",
            &[0xffu8; 4096][..],
        ] {
            std::fs::write(&w.path, garbage).unwrap();
            assert!(
                matches!(CachedAvatar::open(&w.path), Err(CacheError::NotACache(_))),
                "{garbage:?}"
            );
        }
        std::fs::write(&w.path, b"").unwrap();
        assert!(matches!(
            CachedAvatar::open(&w.path),
            Err(CacheError::Truncated { .. })
        ));
        // A huge header length is refused before anything is allocated.
        let mut huge = good.clone();
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&w.path, huge).unwrap();
        assert!(matches!(
            CachedAvatar::open(&w.path),
            Err(CacheError::Corrupt { .. })
        ));
        assert!(matches!(
            CachedAvatar::open(&dir.path().join("none.fcavatar")),
            Err(CacheError::NotFound(_))
        ));
    }

    #[test]
    fn impossible_headers_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let w = written(dir.path(), 1);
        let good = std::fs::read(&w.path).unwrap();
        let header_len = u32::from_le_bytes(good[12..16].try_into().unwrap()) as usize;
        let json: serde_json::Value = serde_json::from_slice(&good[16..16 + header_len]).unwrap();
        // A well-checksummed header whose numbers cannot be right must not reach an allocation.
        for (field, value) in [
            ("width", serde_json::json!(u32::MAX)),
            ("height", serde_json::json!(0)),
            ("frame_count", serde_json::json!(u32::MAX)),
            ("crop_size", serde_json::json!(128)),
            ("kind", serde_json::json!("hologram")),
        ] {
            let mut h = json.clone();
            h[field] = value;
            let h = serde_json::to_vec(&h).unwrap();
            let mut bad = good[..12].to_vec();
            bad.extend_from_slice(&(h.len() as u32).to_le_bytes());
            bad.extend_from_slice(&h);
            bad.extend_from_slice(&crc32fast::hash(&h).to_le_bytes());
            bad.extend_from_slice(&good[16 + header_len + 4..]);
            std::fs::write(&w.path, bad).unwrap();
            let err = CachedAvatar::open(&w.path).unwrap_err();
            assert!(matches!(err, CacheError::Corrupt { .. }), "{field}: {err}");
        }
        // A header from the same writer with one more frame: the faces no longer match.
        let mut h = json.clone();
        h["frame_count"] = serde_json::json!(2);
        let h = serde_json::to_vec(&h).unwrap();
        let mut bad = good[..12].to_vec();
        bad.extend_from_slice(&(h.len() as u32).to_le_bytes());
        bad.extend_from_slice(&h);
        bad.extend_from_slice(&crc32fast::hash(&h).to_le_bytes());
        bad.extend_from_slice(&good[16 + header_len + 4..]);
        std::fs::write(&w.path, bad).unwrap();
        assert!(matches!(
            CachedAvatar::open(&w.path),
            Err(CacheError::Corrupt { .. })
        ));
    }

    #[test]
    fn failed_writes_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        let path = sub.join("anna.fcavatar");
        let (info, faces, pixels) = avatar("anna", 3);

        let mut short = pixels.clone();
        short[2].pop();
        let err = write(&path, &info, &faces, &short).unwrap_err();
        assert!(err.to_string().contains("frame 2"), "{err}");
        let few = &pixels[..2];
        assert!(matches!(
            write(&path, &info, &faces, few),
            Err(CacheError::Invalid(_))
        ));
        let many: Vec<_> = pixels.iter().chain(&pixels).collect();
        assert!(matches!(
            write(&path, &info, &faces, many),
            Err(CacheError::Invalid(_))
        ));
        let mut bad_crop = faces.clone();
        bad_crop[1].crop.pop();
        assert!(matches!(
            write(&path, &info, &bad_crop, &pixels),
            Err(CacheError::Invalid(_))
        ));
        let mut image = info.clone();
        image.kind = SourceKind::Image;
        assert!(matches!(
            write(&path, &image, &faces, &pixels),
            Err(CacheError::Invalid(_))
        ));
        assert!(entries(&sub).is_empty());

        // Replacing an existing cache swaps it whole; an opened copy keeps reading the old one.
        let old = written(&sub, 1);
        let opened = CachedAvatar::open(&old.path).unwrap();
        write(&old.path, &info, &faces, &pixels).unwrap();
        let new = CachedAvatar::open(&old.path).unwrap();
        assert_eq!(new.frame_count(), 3);
        assert_eq!(new.faces, faces);
        let mut out = vec![0u8; opened.frame_size()];
        opened.read_frame(0, &mut out).unwrap();
        assert!(out == old.pixels[0]);
        // A failed rewrite leaves the previous cache in place.
        assert!(write(&old.path, &info, &faces, &short).is_err());
        assert_eq!(CachedAvatar::open(&old.path).unwrap().frame_count(), 3);
        assert_eq!(entries(&sub), ["anna.fcavatar"]);
    }
}
