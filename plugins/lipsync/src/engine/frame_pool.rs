//! The memory of an engine's output frames, reused.
//!
//! Every output frame is a new buffer of the whole frame (1 MB at 512×512 RGBA). Allocated
//! fresh each time, the allocator hands most of them out as new pages, and faulting those in
//! cost the CPU about as much again as copying the frame. Here a frame's memory comes back when
//! downstream (the queue, the encoder) lets go of the buffer, and the next frame takes it. It
//! never waits: when every frame is still downstream, another is made. A few are kept, enough
//! for a live session's frames in flight; beyond those, memory handed back is freed, so a burst
//! (a session with a whole batch in flight) does not stay allocated.

use super::EngineError;
use std::sync::{Arc, Mutex, PoisonError};

/// Free frames kept per engine: a live session holds about its latency's worth downstream
/// (a 200 ms lip-sync delay is 5 frames at 25 fps, then the encoder's queue).
const FRAMES_KEPT: usize = 12;

type FreeFrames = Arc<Mutex<Vec<Vec<u8>>>>;

/// Clones share the free frames (a pending frame's copy is made later, on the thread that
/// draws it).
#[derive(Default, Clone)]
pub struct FramePool {
    free: FreeFrames,
}

/// A frame's memory, given back to its pool when GStreamer frees the buffer holding it.
struct PooledFrame {
    bytes: Vec<u8>,
    free: FreeFrames,
}

impl AsRef<[u8]> for PooledFrame {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl AsMut<[u8]> for PooledFrame {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
}

impl Drop for PooledFrame {
    fn drop(&mut self) {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        if free.len() < FRAMES_KEPT {
            free.push(std::mem::take(&mut self.bytes));
        }
    }
}

impl FramePool {
    /// An output frame of `size` bytes, its contents undefined.
    pub fn acquire(&mut self, size: usize) -> Result<gst::Buffer, EngineError> {
        let kept = {
            let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
            // Frames of another size (the caps changed) are of no more use.
            free.retain(|f| f.len() == size);
            free.pop()
        };
        let bytes = match kept {
            Some(bytes) => bytes,
            None => {
                let mut bytes = Vec::new();
                bytes
                    .try_reserve_exact(size)
                    .map_err(|_| EngineError::Alloc(size))?;
                bytes.resize(size, 0);
                bytes
            }
        };
        Ok(gst::Buffer::from_mut_slice(PooledFrame {
            bytes,
            free: self.free.clone(),
        }))
    }

    /// A copy of `source`: its bytes, metas (the face meta among them), timestamps and flags.
    pub fn copy(&mut self, source: &gst::BufferRef) -> Result<gst::Buffer, EngineError> {
        let mut buffer = self.acquire(source.size())?;
        {
            let out = buffer.get_mut().expect("a new buffer is ours alone");
            source
                .copy_into(
                    out,
                    gst::BufferCopyFlags::FLAGS
                        | gst::BufferCopyFlags::TIMESTAMPS
                        | gst::BufferCopyFlags::META,
                    ..,
                )
                .map_err(|_| EngineError::Map)?;
            let from = source.map_readable().map_err(|_| EngineError::Map)?;
            let mut to = out.map_writable().map_err(|_| EngineError::Map)?;
            to.copy_from_slice(&from);
        }
        Ok(buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use facecast_common::{FaceInfo, Rect};

    #[test]
    fn a_copy_keeps_the_bytes_face_and_timestamp_and_frames_are_reused() {
        gst::init().unwrap();
        let mut source =
            gst::Buffer::from_mut_slice((0..4096u32).map(|i| i as u8).collect::<Vec<_>>());
        let face = FaceInfo {
            face: Rect::new(1, 2, 3, 4),
            mouth: Rect::new(1, 3, 3, 2),
            pose: None,
            source: None,
        };
        {
            let s = source.get_mut().unwrap();
            s.set_pts(gst::ClockTime::from_mseconds(40));
            face.attach(s);
        }
        let mut pool = FramePool::default();
        let copy = pool.copy(&source).unwrap();
        assert_eq!(
            *copy.map_readable().unwrap(),
            *source.map_readable().unwrap()
        );
        assert_eq!(copy.pts(), Some(gst::ClockTime::from_mseconds(40)));
        assert_eq!(FaceInfo::from_buffer(&copy), Some(face));
        let memory = copy.map_readable().unwrap().as_ptr();
        drop(copy);
        let again = pool.copy(&source).unwrap();
        assert_eq!(
            again.map_readable().unwrap().as_ptr(),
            memory,
            "the frame came back"
        );
        assert_eq!(
            again
                .iter_meta::<gst_video::VideoRegionOfInterestMeta>()
                .count(),
            1,
            "a reused frame carries only its own copy's face meta"
        );
        // Held frames do not block the pool: it makes more.
        let held = pool.copy(&source).unwrap();
        assert_ne!(held.map_readable().unwrap().as_ptr(), memory);
        drop((again, held));
    }

    #[test]
    fn a_burst_of_frames_is_freed_beyond_the_few_kept() {
        gst::init().unwrap();
        let mut pool = FramePool::default();
        let burst: Vec<_> = (0..FRAMES_KEPT + 5)
            .map(|_| pool.acquire(1024).unwrap())
            .collect();
        drop(burst);
        assert_eq!(pool.free.lock().unwrap().len(), FRAMES_KEPT);
        // Another size: the kept frames of the old one go.
        let other = pool.acquire(2048).unwrap();
        assert_eq!(other.size(), 2048);
        assert!(pool.free.lock().unwrap().is_empty());
    }
}
