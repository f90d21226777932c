//! The memory of an engine's output frames, reused.
//!
//! Every output frame is a new buffer of the whole frame (1 MB at 512×512 RGBA). Allocated
//! fresh each time, the allocator hands most of them out as new pages, and faulting those in
//! cost the CPU about as much again as copying the frame. A buffer pool keeps the frames that
//! downstream (the queue, the encoder) has let go of and hands them out again. It never blocks:
//! when every frame it made is still downstream, it makes another, so it keeps as many frames
//! as a session has held at once.

use super::EngineError;
use gst::prelude::*;

#[derive(Default)]
pub struct FramePool {
    /// The pool and the frame size it hands out; made again when the size changes.
    pool: Option<(usize, gst::BufferPool)>,
}

impl FramePool {
    /// An output frame of `size` bytes, its contents undefined.
    pub fn acquire(&mut self, size: usize) -> Result<gst::Buffer, EngineError> {
        let pool = match &self.pool {
            Some((made_for, pool)) if *made_for == size => pool,
            _ => {
                self.release();
                let pool = gst::BufferPool::new();
                let mut config = pool.config();
                let bytes = u32::try_from(size).map_err(|_| EngineError::Alloc(size))?;
                // No caps needed: the frames are plain memory. No maximum: never wait.
                config.set_params(None, bytes, 0, 0);
                pool.set_config(config)
                    .and_then(|_| pool.set_active(true))
                    .map_err(|_| EngineError::Alloc(size))?;
                &self.pool.insert((size, pool)).1
            }
        };
        pool.acquire_buffer(None)
            .map_err(|_| EngineError::Alloc(size))
    }

    /// A copy of `source`: its bytes, metas (the face meta among them), timestamps and flags.
    pub fn copy(&mut self, source: &gst::BufferRef) -> Result<gst::Buffer, EngineError> {
        let mut buffer = self.acquire(source.size())?;
        {
            let out = buffer.get_mut().expect("a pooled buffer is ours alone");
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

    fn release(&mut self) {
        if let Some((_, pool)) = self.pool.take() {
            // Frames still downstream are freed when they come back to an inactive pool.
            let _ = pool.set_active(false);
        }
    }
}

impl Drop for FramePool {
    fn drop(&mut self) {
        self.release();
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
            "the returned frame's face meta went with it"
        );
        // Held frames do not block the pool: it makes more.
        let held = pool.copy(&source).unwrap();
        assert_ne!(held.map_readable().unwrap().as_ptr(), memory);
        drop((again, held));
    }
}
