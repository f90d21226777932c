//! Admission of neural lip-sync sessions: a new photo- or video-avatar session is refused
//! (503 with `Retry-After`) when it would take the lip-sync device past what it holds, so the
//! sessions already running are never starved.
//!
//! Three signals, checked in this order:
//! - **live lateness**: the device's sessions repeated a late or failed frame in the last
//!   [`BUSY_WINDOW`] (`lipsync` shows the previous frame when one fails, or misses its frame
//!   budget where one is set). That is the device at its limit, measured as it runs:
//!   `gpu_busy` (`cpu_busy`).
//! - **configured capacity**: `[lipsync] capacity_fps`, the frames a second the device held
//!   with none repeated (`facecast bench --serve --avatar …`). Each session reserves its frame
//!   rate; beyond `max_load` of the capacity: `gpu_busy` (`cpu_busy`).
//! - **GPU memory**: less free than `gpu_memory_reserve_mb` (read through NVML): `gpu_full`.

use facecast_onnx::Device;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long after a repeated frame the device counts as busy.
pub const BUSY_WINDOW: Duration = Duration::from_secs(10);

/// Why a session was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("the lip-sync device {device} is at its capacity: its sessions repeated late frames in the last {window} s; try again shortly", window = BUSY_WINDOW.as_secs())]
    Late { device: Device },
    #[error("the lip-sync device {device} is at its capacity: {reserved:.0} of {capacity:.0} frames/s taken, a session needs {needed:.0}; try again shortly")]
    Capacity {
        device: Device,
        reserved: f64,
        capacity: f64,
        needed: f64,
    },
    #[error("the GPU {device} is out of memory: {free_mb} MB free, {reserve_mb} MB kept for the sessions running")]
    Memory {
        device: Device,
        free_mb: u64,
        reserve_mb: u64,
    },
}

impl Refusal {
    /// The API's error code.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Memory { .. } => "gpu_full",
            Refusal::Late { device } | Refusal::Capacity { device, .. } => match device {
                Device::Cpu => "cpu_busy",
                Device::Cuda(_) => "gpu_busy",
            },
        }
    }
}

/// What admission needs to know about a device.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Frames a second the device holds (None: no configured limit).
    pub capacity_fps: Option<f64>,
    /// Share of the capacity handed out (0..=1).
    pub max_load: f64,
    /// GPU memory kept free, in MB (0: not checked).
    pub memory_reserve_mb: u64,
}

#[derive(Default)]
struct DeviceState {
    reserved_fps: f64,
    last_repeat: Option<Instant>,
}

/// Per device: the frame rate reserved by its sessions and when one last repeated a frame.
#[derive(Default)]
pub struct Admission {
    devices: Mutex<HashMap<Device, DeviceState>>,
}

/// A session's share of its device, given back when dropped.
pub struct Reservation {
    admission: Arc<Admission>,
    pub device: Device,
    fps: f64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut devices = self.admission.devices.lock().unwrap();
        if let Some(d) = devices.get_mut(&self.device) {
            d.reserved_fps = (d.reserved_fps - self.fps).max(0.0);
        }
    }
}

impl Admission {
    /// Admits a session of `fps` frames a second on `device`, or says why not. `free_mb`
    /// reads the GPU's free memory (None when it cannot be read: not checked).
    pub fn admit(
        self: &Arc<Self>,
        device: Device,
        fps: f64,
        limits: Limits,
        now: Instant,
        free_mb: impl FnOnce() -> Option<u64>,
    ) -> Result<Reservation, Refusal> {
        let mut devices = self.devices.lock().unwrap();
        let state = devices.entry(device).or_default();
        if state
            .last_repeat
            .is_some_and(|at| now.saturating_duration_since(at) < BUSY_WINDOW)
        {
            return Err(Refusal::Late { device });
        }
        if let Some(capacity) = limits.capacity_fps {
            let allowed = capacity * limits.max_load.clamp(0.0, 1.0);
            if state.reserved_fps + fps > allowed {
                return Err(Refusal::Capacity {
                    device,
                    reserved: state.reserved_fps,
                    capacity: allowed,
                    needed: fps,
                });
            }
        }
        if device != Device::Cpu && limits.memory_reserve_mb > 0 {
            if let Some(free) = free_mb() {
                if free < limits.memory_reserve_mb {
                    return Err(Refusal::Memory {
                        device,
                        free_mb: free,
                        reserve_mb: limits.memory_reserve_mb,
                    });
                }
            }
        }
        state.reserved_fps += fps;
        Ok(Reservation {
            admission: self.clone(),
            device,
            fps,
        })
    }

    /// Places a session of `fps` frames a second on the least-loaded of `devices` that admits
    /// it (ties: the first listed). When none does, the refusal of the least-loaded one says
    /// why. `free_mb` reads a GPU's free memory.
    pub fn place(
        self: &Arc<Self>,
        devices: &[Device],
        fps: f64,
        limits: Limits,
        now: Instant,
        free_mb: impl Fn(Device) -> Option<u64>,
    ) -> Result<Reservation, Refusal> {
        let mut order: Vec<(f64, usize, Device)> = devices
            .iter()
            .enumerate()
            .map(|(i, &d)| (self.reserved_fps(d), i, d))
            .collect();
        order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut first_refusal = None;
        for (_, _, device) in order {
            match self.admit(device, fps, limits, now, || free_mb(device)) {
                Ok(r) => return Ok(r),
                Err(refusal) => {
                    first_refusal.get_or_insert(refusal);
                }
            }
        }
        Err(first_refusal.expect("at least one lip-sync device is configured"))
    }

    /// A session on `device` repeated a frame (late or failed) at `at`.
    pub fn frame_repeated(&self, device: Device, at: Instant) {
        let mut devices = self.devices.lock().unwrap();
        let state = devices.entry(device).or_default();
        state.last_repeat = Some(state.last_repeat.map_or(at, |t| t.max(at)));
    }

    /// Frames a second reserved on `device` now.
    pub fn reserved_fps(&self, device: Device) -> f64 {
        self.devices
            .lock()
            .unwrap()
            .get(&device)
            .map_or(0.0, |d| d.reserved_fps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GPU: Device = Device::Cuda(0);

    fn limits(capacity: Option<f64>) -> Limits {
        Limits {
            capacity_fps: capacity,
            max_load: 0.9,
            memory_reserve_mb: 1024,
        }
    }

    #[test]
    fn sessions_fit_under_the_capacity_and_give_it_back_when_they_end() {
        let a = Arc::new(Admission::default());
        let now = Instant::now();
        // 90 % of 100 frames/s: three sessions of 25 fit, a fourth does not.
        let held: Vec<_> = (0..3)
            .map(|_| {
                a.admit(GPU, 25.0, limits(Some(100.0)), now, || None)
                    .unwrap()
            })
            .collect();
        let refused = a
            .admit(GPU, 25.0, limits(Some(100.0)), now, || None)
            .err()
            .unwrap();
        assert_eq!(refused.code(), "gpu_busy");
        assert!(
            refused.to_string().contains("75 of 90 frames/s"),
            "{refused}"
        );
        // Another device is not affected.
        assert!(a
            .admit(Device::Cuda(1), 25.0, limits(Some(100.0)), now, || None)
            .is_ok());
        drop(held);
        assert_eq!(a.reserved_fps(GPU), 0.0);
        assert!(a
            .admit(GPU, 25.0, limits(Some(100.0)), now, || None)
            .is_ok());
    }

    #[test]
    fn a_device_that_repeated_frames_lately_takes_no_new_session() {
        let a = Arc::new(Admission::default());
        let now = Instant::now();
        let running = a.admit(GPU, 25.0, limits(None), now, || None).unwrap();
        a.frame_repeated(GPU, now);
        let refused = a
            .admit(
                GPU,
                25.0,
                limits(None),
                now + Duration::from_secs(3),
                || None,
            )
            .err()
            .unwrap();
        assert_eq!(refused, Refusal::Late { device: GPU });
        assert_eq!(
            a.admit(Device::Cpu, 25.0, limits(None), now, || None)
                .err()
                .map(|r| r.code()),
            None
        );
        a.frame_repeated(Device::Cpu, now);
        assert_eq!(
            a.admit(Device::Cpu, 25.0, limits(None), now, || None)
                .err()
                .map(|r| r.code()),
            Some("cpu_busy")
        );
        // The session already running keeps its share; after the window, new ones come in.
        assert_eq!(a.reserved_fps(GPU), 25.0);
        assert!(a
            .admit(GPU, 25.0, limits(None), now + BUSY_WINDOW, || None)
            .is_ok());
        drop(running);
    }

    #[test]
    fn sessions_go_to_the_least_loaded_gpu_with_room_and_a_failing_one_is_avoided() {
        let a = Arc::new(Admission::default());
        let now = Instant::now();
        let gpus = [Device::Cuda(0), Device::Cuda(1), Device::Cuda(2)];
        // Room for two 25 fps sessions per GPU (90 % of 60 frames/s).
        let l = limits(Some(60.0));
        let free = |_| Some(8192);
        let placed: Vec<_> = (0..4)
            .map(|_| a.place(&gpus, 25.0, l, now, free).unwrap())
            .collect();
        let on: Vec<Device> = placed.iter().map(|r| r.device).collect();
        assert_eq!(
            on,
            [gpus[0], gpus[1], gpus[2], gpus[0]],
            "spread, then the first"
        );
        // cuda:1's batch failed (its sessions repeat frames): new sessions avoid it.
        a.frame_repeated(gpus[1], now);
        let next = a.place(&gpus, 25.0, l, now, free).unwrap();
        assert_eq!(next.device, gpus[2]);
        // cuda:0 and cuda:2 are full and cuda:1 is late: refused, saying why.
        let refused = a.place(&gpus, 25.0, l, now, free).err().unwrap();
        assert_eq!(refused, Refusal::Late { device: gpus[1] });
        // A GPU short of memory is skipped for one with room.
        drop(placed);
        let short = |d: Device| Some(if d == gpus[0] { 100 } else { 8192 });
        assert_eq!(a.place(&gpus, 25.0, l, now, short).unwrap().device, gpus[2]);
        drop(next);
    }

    #[test]
    fn a_gpu_short_of_memory_is_full_and_the_cpu_is_never_asked() {
        let a = Arc::new(Admission::default());
        let now = Instant::now();
        let refused = a
            .admit(GPU, 25.0, limits(None), now, || Some(512))
            .err()
            .unwrap();
        assert_eq!(refused.code(), "gpu_full");
        assert!(a.admit(GPU, 25.0, limits(None), now, || Some(4096)).is_ok());
        // Unreadable memory is not a refusal, and the CPU has none to read.
        assert!(a.admit(GPU, 25.0, limits(None), now, || None).is_ok());
        assert!(a
            .admit(Device::Cpu, 25.0, limits(None), now, || panic!("not read"))
            .is_ok());
    }
}
