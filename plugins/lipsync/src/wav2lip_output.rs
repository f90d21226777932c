//! A batch's outputs, shared by the answers of its frames: each frame reads its own part of
//! the batch's memory, with no copy of its own. On a GPU that memory is page-locked room the
//! outputs were downloaded into, taken from a pool and given back when the last frame lets go.
//! A batch queued on a worker's lane ([`facecast_gpu::lane`]) has its outputs on their way
//! ([`ComingOutputs`]) until the GPU is done with it.

use crate::wav2lip_model::OUT_LEN;
use facecast_gpu::cuda::{Gpu, GpuError, OutputBatch};
use facecast_gpu::lane::Mark;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Free rooms a pool keeps; rooms given back beyond these are freed. Each session's thread
/// blocks on its oldest frame and draws it once answered, so a batch's room is held for
/// about as long as its sessions take to wake and paste: a few rooms serve any number of
/// sessions. A few more are kept against bursts, because making a room pins memory and
/// freeing one can wait for the whole GPU (`cuMemFreeHost`): 8 rooms at batch 64 are 56 MB.
const ROOMS_KEPT: usize = 8;

/// Where one batch's outputs are: `OUT_LEN` values a frame (BGR in 0..1, planar), frame after
/// frame.
pub enum BatchOutputs {
    /// Copied out of ONNX Runtime's output tensor in host memory.
    Host(Vec<f32>),
    /// Downloaded from the GPU into page-locked room of a pool.
    Pinned(PooledRoom),
}

impl BatchOutputs {
    pub fn values(&self) -> &[f32] {
        match self {
            BatchOutputs::Host(values) => values,
            BatchOutputs::Pinned(room) => room.room().values(),
        }
    }

    /// The values, moved out when nothing else holds them, else copied.
    pub fn into_vec(outputs: Arc<Self>) -> Vec<f32> {
        match Arc::try_unwrap(outputs) {
            Ok(BatchOutputs::Host(values)) => values,
            Ok(pinned) => pinned.values().to_vec(),
            Err(shared) => shared.values().to_vec(),
        }
    }

    /// The first `n` frames' outputs (fewer if it holds fewer), each sharing this batch.
    pub fn frames(self: &Arc<Self>, n: usize) -> impl Iterator<Item = ModelOutput> + '_ {
        let held = self.values().len() / OUT_LEN;
        (0..n.min(held)).map(|index| ModelOutput {
            batch: self.clone(),
            index,
        })
    }
}

/// One frame's output, `OUT_LEN` values (BGR in 0..1, planar), read where its batch's
/// outputs are.
#[derive(Clone)]
pub struct ModelOutput {
    batch: Arc<BatchOutputs>,
    /// The frame's place in its batch; `BatchOutputs::frames` made it only for frames held.
    index: usize,
}

impl std::ops::Deref for ModelOutput {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        &self.batch.values()[self.index * OUT_LEN..(self.index + 1) * OUT_LEN]
    }
}

/// A batch's outputs once its work has been queued: there already, or on their way from the
/// GPU.
pub enum ComingOutputs {
    Ready(Arc<BatchOutputs>),
    /// Being downloaded into `room` by work on a lane, all done at `done`; `start` marks the
    /// batch's first step there.
    Downloading {
        room: PooledRoom,
        start: Mark,
        done: Arc<Mark>,
    },
}

impl ComingOutputs {
    /// Waits for the outputs; with them, the batch's time on the GPU when it was queued on a
    /// lane. An error is one of the batch's work on the GPU.
    pub fn wait(self) -> Result<(Arc<BatchOutputs>, Option<Duration>), GpuError> {
        match self {
            ComingOutputs::Ready(outputs) => Ok((outputs, None)),
            ComingOutputs::Downloading { room, start, done } => {
                done.wait()?;
                let on_gpu = done.since(&start)?;
                Ok((Arc::new(BatchOutputs::Pinned(room)), Some(on_gpu)))
            }
        }
    }
}

type FreeRooms = Arc<Mutex<Vec<OutputBatch>>>;

/// Page-locked rooms for the outputs of one batch shape. A batch takes a free room, or makes
/// one when every room is still held by frames not yet drawn.
pub struct OutputPool {
    gpu: Arc<Gpu>,
    values: usize,
    free: FreeRooms,
}

impl OutputPool {
    /// A pool of rooms for `values` f32 each, with one room made now: a GPU without room for
    /// it fails here, at load, rather than on a live batch.
    pub fn new(gpu: Arc<Gpu>, values: usize) -> Result<Self, GpuError> {
        let first = gpu.output_batch(values)?;
        Ok(Self {
            gpu,
            values,
            free: Arc::new(Mutex::new(vec![first])),
        })
    }

    pub fn take(&self) -> Result<PooledRoom, GpuError> {
        let free = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let room = match free {
            Some(room) => room,
            None => self.gpu.output_batch(self.values)?,
        };
        Ok(PooledRoom {
            room: Some(room),
            free: self.free.clone(),
        })
    }
}

/// A room taken from an [`OutputPool`], given back when dropped.
pub struct PooledRoom {
    /// Always set; taken only by `drop`.
    room: Option<OutputBatch>,
    free: FreeRooms,
}

impl PooledRoom {
    pub fn room(&self) -> &OutputBatch {
        self.room.as_ref().expect("set until dropped")
    }

    pub fn room_mut(&mut self) -> &mut OutputBatch {
        self.room.as_mut().expect("set until dropped")
    }
}

impl Drop for PooledRoom {
    fn drop(&mut self) {
        if let Some(room) = self.room.take() {
            let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
            if free.len() < ROOMS_KEPT {
                free.push(room);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_frame_reads_its_own_part_of_the_batch() {
        let values: Vec<f32> = (0..3 * OUT_LEN).map(|i| i as f32).collect();
        let batch = Arc::new(BatchOutputs::Host(values));
        let frames: Vec<ModelOutput> = batch.frames(2).collect();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].len(), OUT_LEN);
        assert_eq!(frames[1][0], OUT_LEN as f32);
        assert_eq!(batch.frames(5).count(), 3, "only frames the batch holds");
    }
}
