//! `facecast selftest --device cuda:N`: on a GPU server, checks what CI cannot (it has no GPU).
//!
//! - The lip-sync kernels against their CPU references (`facecast-gpu`), which the tests check
//!   against the Wav2Lip engine's CPU path: on real frames of a registered avatar (its frames,
//!   face boxes and masks from the cache), the crop, the fp16 face tensor and the paste must
//!   agree within one level of 8-bit colour.
//! - The kernels' time per frame for 1, 32 and 128 faces at once, on a frame resident on the
//!   GPU.
//! - NVML's readings of the GPU (name, memory, utilisation, temperature, power, encoder,
//!   decoder).
//!
//! Exits with failure if a kernel disagrees, the GPU cannot be opened or NVML does not answer.

use crate::config::Config;
use anyhow::Context;
use facecast_avatars::store::AvatarStore;
use facecast_gpu::cuda::Gpu;
use facecast_gpu::reference::{self, FaceBox, CROP};
use facecast_onnx::Device;

#[derive(clap::Args, Debug)]
pub struct SelftestArgs {
    /// The GPU to check: cuda:N.
    #[arg(long, default_value = "cuda:0")]
    device: String,
    /// A registered avatar whose frames the kernels are checked on (in the data folder).
    #[arg(long, default_value = "astronaut")]
    avatar: String,
    /// The configuration file (for the data folder).
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Frames of the avatar checked.
    #[arg(long, default_value_t = 8)]
    frames: usize,
}

/// The most a kernel may differ from its reference, in levels of 8-bit colour.
const TOLERANCE: f32 = 1.0;

pub fn run(args: SelftestArgs) -> anyhow::Result<()> {
    let ordinal = match args.device.parse::<Device>().map_err(anyhow::Error::msg)? {
        Device::Cuda(n) => n,
        Device::Cpu => anyhow::bail!("selftest checks a GPU: give --device cuda:N"),
    };
    let config = Config::load(args.config.as_deref())?;
    let mut failures = Vec::new();

    let gpu = Gpu::open(ordinal as usize).context("opening the GPU")?;
    println!(
        "GPU {ordinal}: {} (kernels compiled for {})",
        gpu.name, gpu.arch
    );

    let store = AvatarStore::init_global(&config.data_dir, 2);
    let avatar = store.get(&args.avatar).with_context(|| {
        format!(
            "avatar '{}' in {} (register one: facecast avatar add)",
            args.avatar,
            config.data_dir.display()
        )
    })?;
    let (w, h) = (avatar.info.width as usize, avatar.info.height as usize);
    let pitch = w * 4;
    let mut frame = vec![0u8; avatar.frame_size()];
    let (mut crop_diff, mut tensor_diff, mut paste_diff, mut i420_diff) = (0u8, 0f32, 0u8, 0u8);
    let checked = args.frames.clamp(1, avatar.frame_count());
    let mut first_box = None;
    for i in 0..checked {
        avatar.read_frame(i, &mut frame)?;
        let face = &avatar.faces[i];
        let b = FaceBox {
            x: face.face.x,
            y: face.face.y,
            w: face.face.w,
            h: face.face.h,
        };
        first_box.get_or_insert(b);
        let want_crop = reference::crop_face(&frame, pitch, b);
        let crop = gpu.crop_faces(&frame, pitch, &[b])?;
        crop_diff = crop_diff.max(reference::max_level_difference(&crop, &want_crop));
        let want_tensor = reference::face_tensor(&want_crop);
        let tensor = gpu.face_tensors(&want_crop, 1)?;
        tensor_diff = tensor_diff.max(reference::max_tensor_difference(&tensor, &want_tensor));
        // A model output with the face's own content: the whole crop's B, G, R planes.
        let output = &want_tensor[3 * CROP * CROP..];
        let mut want_frame = frame.clone();
        reference::paste(&mut want_frame, pitch, b, output, &face.mask);
        let mut pasted = frame.clone();
        gpu.paste(&mut pasted, pitch, b, output, &face.mask)?;
        paste_diff = paste_diff.max(reference::max_level_difference(&pasted, &want_frame));
        let want_i420 = reference::rgba_to_i420(&pasted, pitch, w, h);
        let i420 = gpu.rgba_to_i420(&pasted, pitch, w, h)?;
        i420_diff = i420_diff.max(reference::max_level_difference(&i420, &want_i420));
    }
    for (kernel, diff) in [
        ("crop_face", crop_diff as f32),
        ("face_tensor (fp16)", tensor_diff),
        ("paste", paste_diff as f32),
        ("rgba_to_i420", i420_diff as f32),
    ] {
        let ok = diff <= TOLERANCE;
        println!(
            "{kernel:<20} max difference from its CPU reference over {checked} frames of '{}' ({w}x{h}): {diff:.3} levels {}",
            args.avatar,
            if ok { "ok" } else { "FAILED" }
        );
        if !ok {
            failures.push(kernel);
        }
    }

    let (convert, download) = gpu.time_i420(&frame, pitch, w, h, 50)?;
    println!(
        "RGBA → I420 of a {w}x{h} frame: {:.3} ms, its download: {:.3} ms (medians of 50)",
        convert.as_secs_f64() * 1e3,
        download.as_secs_f64() * 1e3
    );
    if let Some(b) = first_box {
        for faces in [1usize, 32, 128] {
            let t = gpu.time_frame_kernels(&frame, pitch, b, faces, 50)?;
            println!(
                "crop + face tensor + paste for {faces:>3} faces: {:.3} ms (median of 50), {:.1} µs per face",
                t.as_secs_f64() * 1e3,
                t.as_secs_f64() * 1e6 / faces as f64
            );
        }
    }

    match facecast_gpu::nvml::read(ordinal as u32) {
        Ok(r) => {
            let gib = |b: Option<u64>| {
                b.map_or("?".into(), |b| {
                    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
                })
            };
            println!(
                "NVML GPU {}: {}, utilisation {:?} %, memory {} of {}, {:?} °C, {:?} W, encoder {:?} %, decoder {:?} %",
                r.index,
                r.name,
                r.utilization_percent,
                gib(r.memory_used_bytes),
                gib(r.memory_total_bytes),
                r.temperature_celsius,
                r.power_watts,
                r.encoder_percent,
                r.decoder_percent
            );
            if r.name.is_empty() || r.memory_total_bytes.unwrap_or(0) == 0 {
                failures.push("nvml");
            }
        }
        Err(e) => {
            println!("NVML: {e} FAILED");
            failures.push("nvml");
        }
    }
    println!(
        "session end to end: not part of this selftest yet (it needs GStreamer's plugins on the GPU machine)"
    );
    anyhow::ensure!(
        failures.is_empty(),
        "selftest failed: {}",
        failures.join(", ")
    );
    println!("selftest passed");
    Ok(())
}
