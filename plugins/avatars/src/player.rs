//! Plays a registered avatar as an endless idle loop: a photo stays still, a video loop plays
//! forwards then backwards (ping-pong), so the loop point never jumps.

use crate::cache::{CacheError, CachedAvatar};
use facecast_common::{AvatarFrameRef, FaceInfo, Rect};
use std::sync::Arc;

pub struct AvatarPlayer {
    avatar: Arc<CachedAvatar>,
    /// The last frame produced, reused while the index does not change (a photo's only frame).
    last: Option<(usize, gst::Buffer)>,
}

impl AvatarPlayer {
    pub fn new(avatar: Arc<CachedAvatar>) -> Self {
        Self { avatar, last: None }
    }

    pub fn avatar(&self) -> &CachedAvatar {
        &self.avatar
    }

    /// The frame shown at `t` since the loop started.
    pub fn index_at(&self, t: gst::ClockTime) -> usize {
        let count = self.avatar.frame_count();
        let (num, den) = self.avatar.info.fps;
        if count <= 1 || num <= 0 || den <= 0 {
            return 0;
        }
        let n = (t.nseconds() as u128 * num as u128 / (den as u128 * 1_000_000_000)) as usize;
        ping_pong(n, count)
    }

    /// The frame for time `t`, with its face meta (box, mouth region and which frame it is).
    pub fn frame_at(&mut self, t: gst::ClockTime) -> Result<gst::Buffer, CacheError> {
        let index = self.index_at(t);
        if let Some((i, buffer)) = &self.last {
            if *i == index {
                return Ok(buffer.clone());
            }
        }
        let size = self.avatar.frame_size();
        let mut buffer = gst::Buffer::with_size(size).map_err(|_| CacheError::Corrupt {
            path: Default::default(),
            reason: format!("cannot allocate a {size}-byte frame"),
        })?;
        {
            let b = buffer.get_mut().expect("new buffer is writable");
            {
                let mut map = b.map_writable().map_err(|_| CacheError::Corrupt {
                    path: Default::default(),
                    reason: "cannot map a new frame".into(),
                })?;
                self.avatar.read_frame(index, map.as_mut_slice())?;
            }
            let face = &self.avatar.faces[index];
            let f = face.face;
            FaceInfo {
                face: f,
                // Wav2Lip repaints the lower half of the box.
                mouth: Rect::new(f.x, f.y + f.h / 2, f.w, f.h - f.h / 2),
                pose: None,
                source: Some(AvatarFrameRef {
                    avatar: self.avatar.info.name.clone(),
                    index: index as u32,
                }),
            }
            .attach(b);
        }
        self.last = Some((index, buffer.clone()));
        Ok(buffer)
    }
}

/// Frame `n` of an endless forwards-backwards loop over `count` frames: 0 1 2 … c−1 c−2 … 1 0 1 …
pub fn ping_pong(n: usize, count: usize) -> usize {
    if count <= 1 {
        return 0;
    }
    let period = 2 * (count - 1);
    let i = n % period;
    if i < count {
        i
    } else {
        period - i
    }
}

#[cfg(test)]
mod tests {
    use super::ping_pong;

    #[test]
    fn ping_pong_turns_at_the_ends() {
        let seq: Vec<usize> = (0..10).map(|n| ping_pong(n, 4)).collect();
        assert_eq!(seq, [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]);
        assert_eq!(ping_pong(5, 1), 0);
    }
}
