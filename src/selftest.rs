//! `facecast selftest --device cuda:N`: on a GPU server, checks what CI cannot (it has no GPU).
//!
//! - The lip-sync kernels against their CPU references (`facecast-gpu`), which the tests check
//!   against the Wav2Lip engine's CPU path: on real frames of a registered avatar (its frames,
//!   face boxes and masks from the cache), the crop, the face inputs (fp16, and the fp32 one
//!   the live path writes into the model's input), the paste and the composed output frame
//!   must agree within one level of 8-bit colour.
//! - The kernels' time per frame for 1, 32 and 128 faces at once, on a frame resident on the
//!   GPU.
//! - NVML's readings of the GPU (name, memory, utilisation, temperature, power, encoder,
//!   decoder).
//! - Output frames made on the GPU through the loaded model (turned on for this check whatever
//!   the configuration says): a dozen frames of the avatar, each composed there, against the
//!   same outputs blended on the CPU; then the session below makes its frames there too.
//! - A live session end to end: the avatar talking through the configured lip-sync model on
//!   this GPU, as `facecast serve` runs it, for a few seconds: frames at the stream's rate,
//!   none repeated (each frame within 100 ms of its due time, or the configured frame budget),
//!   the model answering (skipped, saying so, without a configured model).
//!
//! Exits with failure if a kernel disagrees, the GPU cannot be opened, NVML does not answer, a
//! frame made on the GPU differs, or the session does not keep its pace.

use crate::config::Config;
use anyhow::Context;
use facecast_avatars::store::AvatarStore;
use facecast_gpu::cuda::Gpu;
use facecast_gpu::reference::{self, CROP};
use facecast_onnx::Device;
use gstfacecastlipsync::wav2lip_frames::face_box;

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
    let mut compose_diff = 0u8;
    let mut input_diff = 0f32;
    let checked = args.frames.clamp(1, avatar.frame_count());
    let mut first_box = None;
    for i in 0..checked {
        avatar.read_frame(i, &mut frame)?;
        let face = &avatar.faces[i];
        let b = face_box(face.face);
        first_box.get_or_insert(b);
        let want_crop = reference::crop_face(&frame, pitch, b);
        let crop = gpu.crop_faces(&frame, pitch, &[b])?;
        crop_diff = crop_diff.max(reference::max_level_difference(&crop, &want_crop));
        let want_tensor = reference::face_tensor(&want_crop);
        let tensor = gpu.face_tensors(&want_crop, 1)?;
        tensor_diff = tensor_diff.max(reference::max_tensor_difference(&tensor, &want_tensor));
        let want_input = reference::face_input_f32(&want_crop);
        let input = gpu.face_inputs(&want_crop, 1)?;
        input_diff = input
            .iter()
            .zip(&want_input)
            .map(|(a, b)| (a - b).abs() * 255.0)
            .fold(input_diff, f32::max);
        // A model output with the face's own content: the whole crop's B, G, R planes.
        let output = &want_tensor[3 * CROP * CROP..];
        let mut want_frame = frame.clone();
        reference::paste(&mut want_frame, pitch, b, output, &face.mask);
        let mut pasted = frame.clone();
        gpu.paste(&mut pasted, pitch, b, output, &face.mask)?;
        paste_diff = paste_diff.max(reference::max_level_difference(&pasted, &want_frame));
        // The live frame: the same output in fp32, as the model leaves it on the GPU.
        let wide: Vec<f32> = output.iter().map(|v| v.to_f32()).collect();
        let want_composed = reference::compose(&frame, pitch, b, &wide, &face.mask);
        let composed = gpu.compose(&frame, pitch, b, &wide, &face.mask)?;
        compose_diff = compose_diff.max(reference::max_level_difference(&composed, &want_composed));
        let want_i420 = reference::rgba_to_i420(&pasted, pitch, w, h);
        let i420 = gpu.rgba_to_i420(&pasted, pitch, w, h)?;
        i420_diff = i420_diff.max(reference::max_level_difference(&i420, &want_i420));
    }
    for (kernel, diff) in [
        ("crop_face", crop_diff as f32),
        ("face_tensor (fp16)", tensor_diff),
        ("face_input (fp32)", input_diff),
        ("paste", paste_diff as f32),
        ("compose", compose_diff as f32),
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
    let mut config = config;
    config.lipsync.device = Device::Cuda(ordinal);
    config.lipsync.devices.clear();
    // Frames must also come on time: each within 100 ms of its due time (unless the
    // configuration sets its own budget), else it is repeated and the check fails.
    if config.lipsync.frame_budget_ms == 0 {
        config.lipsync.frame_budget_ms = SESSION_FRAME_BUDGET_MS;
    }
    // Output frames made on the GPU are what CI cannot check: they are checked here whether
    // or not the configuration turns them on.
    if config.lipsync.gpu_frames_mb == 0 {
        config.lipsync.gpu_frames_mb =
            gstfacecastlipsync::wav2lip_batcher::DEFAULT_GPU_FRAMES_MB as u32;
    }
    if config.wav2lip_model().is_none() {
        println!(
            "session end to end: SKIPPED, no lip-sync model configured (lipsync.model or FACECAST_WAV2LIP_MODEL)"
        );
    } else {
        match session_end_to_end(config, &args.avatar, &avatar) {
            Ok(line) => println!("session end to end: {line}"),
            Err(e) => {
                println!("session end to end: {e:#} FAILED");
                failures.push("session");
            }
        }
    }
    anyhow::ensure!(
        failures.is_empty(),
        "selftest failed: {}",
        failures.join(", ")
    );
    println!("selftest passed");
    Ok(())
}

/// The frame budget of the session check when the configuration sets none (ms past due time).
const SESSION_FRAME_BUDGET_MS: u32 = 100;

/// One photo-avatar session, live on `config`'s GPU, saying a sentence: its frames in 4 s, the
/// frames repeated (late or failed), and the frames the model ran.
fn session_end_to_end(
    config: Config,
    avatar: &str,
    cached: &facecast_avatars::cache::CachedAvatar,
) -> anyhow::Result<String> {
    use crate::session::{CreateSession, Registry};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    crate::serve::prepare_lipsync(&config)?;
    let composing = composed_frames_check(cached)?;
    println!("frames composed on the GPU through the model: {composing}");
    let config = Arc::new(config);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let registry = Registry::new(config.clone(), metrics.clone());
        let session = registry
            .create(CreateSession {
                avatar: Some(avatar.to_owned()),
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let count = || {
            (
                metrics.frames_produced.with_label_values(&[&session.id]).get(),
                metrics.frames_repeated.with_label_values(&[&session.id]).get(),
            )
        };
        let inferred = gstfacecastlipsync::wav2lip_batcher::frames_so_far;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (before, inferred_before) = (count(), inferred());
        session.say(
            "Hello! I am talking on the graphics card now, one frame after another.",
            None,
        );
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(4)).await;
        let wall = started.elapsed().as_secs_f64();
        let (after, inferred_after) = (count(), inferred());
        let ran = inferred_after.0 - inferred_before.0;
        let made_on_gpu = inferred_after.1 - inferred_before.1;
        registry.end(&session.id, "selftest");
        let (frames, repeated) = (after.0 - before.0, after.1 - before.1);
        let fps = frames as f64 / wall;
        let line = format!(
            "{frames} frames in {wall:.1} s ({fps:.1} fps of {}), {repeated} repeated (frame budget {} ms), {ran} frames through the model, {made_on_gpu} of them composed on the GPU",
            config.video.fps,
            config.lipsync.frame_budget_ms
        );
        let on_gpu = made_on_gpu > 0;
        anyhow::ensure!(
            fps >= config.video.fps as f64 * 0.95 && repeated == 0 && ran > 0 && on_gpu,
            "{line}"
        );
        Ok(line)
    })
}

/// Frames of `avatar` through the loaded model with their output frames composed on the GPU,
/// each against the same output blended into the frame on the CPU (the engine's paste): the
/// live wiring (each frame's own output, box and mask) as well as the kernel. Distinct mel
/// windows give each frame of a batch its own output.
fn composed_frames_check(avatar: &facecast_avatars::cache::CachedAvatar) -> anyhow::Result<String> {
    use gstfacecastlipsync::engine::wav2lip::paste;
    use gstfacecastlipsync::wav2lip_batcher::{loaded, Waited};
    use gstfacecastlipsync::wav2lip_frames::ComposeJob;
    let model = loaded()
        .into_iter()
        .next()
        .context("no lip-sync model is loaded")?;
    if !model.frames_on_gpu {
        anyhow::bail!(
            "output frames are not made on the GPU: the model's worker has no lane (see the log)"
        );
    }
    let (w, h) = (avatar.info.width as usize, avatar.info.height as usize);
    let pitch = w * 4;
    let frames = 12usize;
    let mut pending = Vec::new();
    for i in 0..frames {
        let index = i % avatar.frame_count();
        let mut pixels = vec![0u8; avatar.frame_size()];
        avatar.read_frame(index, &mut pixels)?;
        let face = &avatar.faces[index];
        let r = face.face;
        let mut rng = fastrand::Rng::with_seed(i as u64);
        let mel: Vec<f32> = (0..80 * 16).map(|_| rng.f32() * 8.0 - 4.0).collect();
        let frame = gst::Buffer::from_slice(pixels.clone());
        let (index, mask) = (index as u32, face.mask.clone());
        let job = ComposeJob::avatar_frame(avatar, index, r, frame, pitch, h, mask);
        let submitted = model.submit(mel, face.crop.clone(), None, Some(job))?;
        pending.push((submitted, pixels, r, face.mask.clone()));
    }
    let (mut composed, mut worst) = (0usize, 0u8);
    for (submitted, pixels, r, mask) in pending {
        let answer = match submitted.wait(None) {
            Waited::Answer(answer) => answer?,
            Waited::Late(_) => anyhow::bail!("a frame without a deadline came late"),
        };
        let Some(frame) = answer.frame else {
            continue;
        };
        composed += 1;
        let mut want = pixels;
        paste(&mut want, pitch, r, &answer.output, &mask);
        worst = worst.max(reference::max_level_difference(frame.as_ref(), &want));
    }
    let line = format!(
        "{composed} of {frames} frames, max difference from the CPU's paste of the same outputs {worst} levels"
    );
    anyhow::ensure!(
        composed == frames && f32::from(worst) <= TOLERANCE,
        "{line} FAILED"
    );
    Ok(line)
}
