//! Live frames made on the GPU: a registered avatar's frame, kept there, with the model's
//! output blended into its face box where the output already is, and the finished frame
//! downloaded once into page-locked memory that becomes the output buffer.
//!
//! Without this, each frame's outputs came down as 96×96 planes, and the session's thread
//! copied the whole avatar frame (1 MB at 512×512) and blended the face into it. Here those
//! are a kernel and a DMA on the batch worker's lane ([`crate::lane`]), queued after the
//! model, so the host only writes a few launches a frame.
//!
//! - [`Composer`]: one per lane; the frames resident on the GPU (least recently used first
//!   out, under a memory budget), the scratch frame the kernel writes, and the page-locked
//!   output frames.
//! - [`BudgetLru`]: the cache's bookkeeping, apart from CUDA so that it is tested anywhere.

use crate::cuda::{driver, GpuError};
use crate::lane::Lane;
use crate::reference::{FaceBox, CROP};
use cudarc::driver::{CudaSlice, PinnedHostSlice};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

/// Values kept by key, each with its size in bytes, the least recently used dropped first
/// whenever the total would pass the budget.
pub struct BudgetLru<K, V> {
    budget: usize,
    used: usize,
    /// Each value, its size, and when it was last used (a count of uses).
    entries: HashMap<K, (V, usize, u64)>,
    clock: u64,
}

impl<K: Hash + Eq + Clone, V> BudgetLru<K, V> {
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            used: 0,
            entries: HashMap::new(),
            clock: 0,
        }
    }

    /// Bytes held.
    pub fn used(&self) -> usize {
        self.used
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value for `key`, made by `make` when absent (`size` bytes); making it first drops
    /// the least recently used values until it fits. A value larger than the whole budget is
    /// refused with `too_big`'s error (given the budget), and nothing is dropped for it.
    pub fn get_or_insert<E>(
        &mut self,
        key: &K,
        size: usize,
        make: impl FnOnce() -> Result<V, E>,
        too_big: impl FnOnce(usize) -> E,
    ) -> Result<&V, E> {
        self.clock += 1;
        let now = self.clock;
        if !self.entries.contains_key(key) {
            if size > self.budget {
                return Err(too_big(self.budget));
            }
            while self.used + size > self.budget {
                let oldest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, _, used))| *used)
                    .map(|(k, _)| k.clone())
                    .expect("something is held while used > 0");
                let (_, freed, _) = self.entries.remove(&oldest).expect("just found");
                self.used -= freed;
            }
            let value = make()?;
            self.used += size;
            self.entries.insert(key.clone(), (value, size, now));
        }
        let entry = self.entries.get_mut(key).expect("present");
        entry.2 = now;
        Ok(&entry.0)
    }
}

/// Which frame of which registration of an avatar: a name registered again (replaced) is
/// told apart by its registration time and its face box.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FrameKey {
    pub avatar: Arc<str>,
    pub registered: u64,
    pub index: u32,
    pub face: FaceBox,
}

/// A frame and its blend mask on the GPU.
struct Resident {
    frame: CudaSlice<u8>,
    mask: CudaSlice<u8>,
}

/// Free output frames a composer keeps (of one size); beyond these, frames given back are
/// freed. Live, each session holds a few frames between the lip-sync element and its encoder;
/// page-locking memory takes milliseconds, so these are kept warm: 256 at 512×512 are 256 MB.
const FRAMES_KEPT: usize = 256;

type FreeFrames = Arc<Mutex<Vec<PinnedHostSlice<u8>>>>;

/// A finished frame in page-locked host memory, ready once its batch's mark is done; given
/// back to its composer when dropped.
pub struct PinnedFrame {
    /// Always set; taken only by `drop`.
    memory: Option<PinnedHostSlice<u8>>,
    /// `memory`'s bytes, read and written through `AsRef` and `AsMut`.
    bytes: *mut u8,
    len: usize,
    free: FreeFrames,
}

// SAFETY: `bytes` points into `memory`, which is Send and Sync and lives as long as this;
// it is written only through `&mut self`.
unsafe impl Send for PinnedFrame {}
unsafe impl Sync for PinnedFrame {}

impl AsRef<[u8]> for PinnedFrame {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `len` bytes of `memory`, alive while `self` is.
        unsafe { std::slice::from_raw_parts(self.bytes, self.len) }
    }
}

impl AsMut<[u8]> for PinnedFrame {
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_ref`, borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.bytes, self.len) }
    }
}

impl Drop for PinnedFrame {
    fn drop(&mut self) {
        if let Some(memory) = self.memory.take() {
            let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
            if free.len() < FRAMES_KEPT {
                free.push(memory);
            } else {
                // Freed here, on whichever thread let go of the buffer: with the GPU's context
                // current, as freeing page-locked memory wants.
                drop(free);
                let _ = memory.context().bind_to_thread();
            }
        }
    }
}

/// Composes a lane's live frames (see the module's docs).
pub struct Composer {
    lane: Arc<Lane>,
    resident: BudgetLru<FrameKey, Resident>,
    /// What the kernel writes, downloaded from there: one frame, as the lane runs its work in
    /// order (a frame's download is done before the next frame's kernel writes here).
    scratch: Option<CudaSlice<u8>>,
    free: FreeFrames,
}

impl Composer {
    /// A composer on `lane` keeping up to `budget` bytes of avatar frames on the GPU.
    pub fn new(lane: Arc<Lane>, budget: usize) -> Self {
        Self {
            lane,
            resident: BudgetLru::new(budget),
            scratch: None,
            free: Arc::default(),
        }
    }

    /// Queues on the lane the frame `key` (uploaded from `frame`, with `mask`, when not
    /// resident: an RGBA frame of `pitch` bytes a row and `frame.len() / pitch` rows) with the
    /// model's output at `output` blended into `face`, and its download into a page-locked
    /// frame; returns that frame, to be read once a mark made after this call is done.
    ///
    /// # Safety
    /// `output` must be device memory of this GPU's primary context holding one frame's
    /// output (`3 × CROP²` f32, planar B, G, R), written by work queued on the lane before this
    /// call and not rewritten before a mark made after it is done.
    pub unsafe fn compose(
        &mut self,
        key: &FrameKey,
        frame: &[u8],
        pitch: usize,
        mask: &[u8],
        output: u64,
    ) -> Result<PinnedFrame, GpuError> {
        let face = key.face;
        let height = frame.len().checked_div(pitch).unwrap_or(0);
        if !pitch.is_multiple_of(4)
            || mask.len() != CROP * CROP
            || face.w == 0
            || face.h == 0
            || (face.x as usize + face.w as usize) * 4 > pitch
            || face.y as usize + face.h as usize > height
        {
            return Err(GpuError::Driver(format!(
                "cannot compose a {pitch}-byte-pitch frame of {height} rows with box {face:?} and a {}-byte mask",
                mask.len()
            )));
        }
        let len = pitch * height;
        let lane = self.lane.clone();
        let resident = self.resident.get_or_insert(
            key,
            len + mask.len(),
            || -> Result<Resident, GpuError> {
                Ok(Resident {
                    frame: lane.upload(&frame[..len])?,
                    mask: lane.upload(mask)?,
                })
            },
            |budget| {
                GpuError::Driver(format!(
                    "a {len}-byte frame does not fit the {budget}-byte frame cache"
                ))
            },
        )?;
        // A key names one frame of one registration, so its size cannot change; were it to,
        // the kernel would read past the resident frame.
        if resident.frame.len() != len {
            return Err(GpuError::Driver(format!(
                "the resident frame has {} bytes, this one {len}",
                resident.frame.len()
            )));
        }
        if self.scratch.as_ref().is_none_or(|s| s.len() < len) {
            self.scratch = Some(lane.alloc(len)?);
        }
        let scratch = self.scratch.as_mut().expect("made above");
        let into = take_frame(&self.free, &lane, len)?;
        // SAFETY: the frame and mask are resident (sizes checked above), `scratch` holds
        // `len` bytes, `into` is page-locked room of `len` bytes read only after a later mark;
        // `output` the caller vouches for.
        unsafe {
            let stream = lane.stream();
            stream.context().bind_to_thread().map_err(driver)?;
            let (frame, mask) = (&resident.frame, &resident.mask);
            let gpu = lane.gpu();
            gpu.queue_compose(stream, frame, mask, scratch, pitch, height, face, output)?;
            lane.download_bytes(scratch, len, into.bytes)?;
        }
        Ok(into)
    }
}

/// A free output frame of `len` bytes, or a new one.
fn take_frame(free: &FreeFrames, lane: &Lane, len: usize) -> Result<PinnedFrame, GpuError> {
    let kept = {
        let mut free = free.lock().unwrap_or_else(PoisonError::into_inner);
        // Frames of another size (the caps changed) are of no more use.
        free.retain(|f| f.len() == len);
        free.pop()
    };
    let mut memory = match kept {
        Some(memory) => memory,
        None => lane.pinned(len)?,
    };
    let bytes = memory.as_mut_ptr().map_err(driver)?;
    Ok(PinnedFrame {
        memory: Some(memory),
        bytes,
        len,
        free: free.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn too_big(budget: usize) -> String {
        format!("over {budget}")
    }

    #[test]
    fn the_least_recently_used_go_first_and_the_budget_holds() {
        let mut lru = BudgetLru::<u32, u32>::new(100);
        let mut made = Vec::new();
        let mut get = |lru: &mut BudgetLru<u32, u32>, k: u32, size: usize| {
            *lru.get_or_insert(
                &k,
                size,
                || {
                    made.push(k);
                    Ok::<_, String>(k * 10)
                },
                too_big,
            )
            .unwrap()
        };
        assert_eq!(get(&mut lru, 1, 40), 10);
        assert_eq!(get(&mut lru, 2, 40), 20);
        assert_eq!(get(&mut lru, 1, 40), 10, "kept, not made again");
        // 3 does not fit beside both: 2, used least recently, goes.
        assert_eq!(get(&mut lru, 3, 40), 30);
        assert_eq!(lru.used(), 80);
        assert_eq!(lru.len(), 2);
        assert_eq!(get(&mut lru, 1, 40), 10);
        assert_eq!(get(&mut lru, 2, 40), 20, "made again");
        assert_eq!(made, [1, 2, 3, 2]);
        assert!(lru.used() <= 100);
    }

    #[test]
    fn a_value_larger_than_the_budget_is_refused_and_nothing_is_dropped() {
        let mut lru = BudgetLru::<u32, u32>::new(100);
        lru.get_or_insert(&1, 60, || Ok::<_, String>(1), too_big)
            .unwrap();
        let refused = lru.get_or_insert(&2, 101, || Ok::<_, String>(2), too_big);
        assert_eq!(refused.err().as_deref(), Some("over 100"));
        assert_eq!((lru.used(), lru.len()), (60, 1));
    }

    #[test]
    fn a_value_that_fails_to_be_made_is_not_counted() {
        let mut lru = BudgetLru::<u32, u32>::new(100);
        let failed = lru.get_or_insert(&1, 60, || Err::<u32, _>("no memory".to_owned()), too_big);
        assert!(failed.is_err());
        assert_eq!((lru.used(), lru.len()), (0, 0));
    }
}
