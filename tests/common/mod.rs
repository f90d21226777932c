//! Helpers shared by the integration tests.
#![allow(dead_code)]

use gst::prelude::*;

pub fn init() {
    use std::sync::Once;
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstfacecasttts::plugin_register_static().unwrap();
        gstfacecastavatar::plugin_register_static().unwrap();
        gstfacecastlipsync::plugin_register_static().unwrap();
    });
}

/// Runs `pipeline` to EOS (or fails the test with the bus error), then stops it.
pub fn run_to_eos(pipeline: &gst::Pipeline, timeout_s: u64) {
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(timeout_s),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("pipeline neither finished nor failed in time");
    pipeline.set_state(gst::State::Null).unwrap();
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("pipeline error: {} ({:?})", e.error(), e.debug());
    }
}

/// Writes 16-bit mono PCM as a WAV file.
pub fn write_wav(path: &std::path::Path, rate: u32, samples: &[i16]) {
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, out).unwrap();
}

/// Every buffer the appsink `name` of `pipeline` receives, collected as they come.
pub fn collect_buffers(
    pipeline: &gst::Pipeline,
    name: &str,
) -> std::sync::Arc<std::sync::Mutex<Vec<gst::Buffer>>> {
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let o = out.clone();
    pipeline
        .by_name(name)
        .unwrap_or_else(|| panic!("no element named {name}"))
        .downcast::<gst_app::AppSink>()
        .expect("an appsink")
        .set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let s = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    o.lock().unwrap().push(s.buffer_owned().unwrap());
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
    out
}

/// The project root (where `.cache/` with the test assets lives).
pub fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Loads ONNX Runtime (`ORT_DYLIB_PATH`, else the copy in `.cache/`) and returns the Piper test
/// voice; fails loudly, saying how to get them.
pub fn piper_voice() -> std::path::PathBuf {
    let lib = std::env::var_os("ORT_DYLIB_PATH")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root().join(".cache/onnxruntime/libonnxruntime.so.1.31.1"));
    let voice = root().join(".cache/models/piper/en_US-joe-medium.onnx");
    for p in [&lib, &voice] {
        assert!(
            p.is_file(),
            "test asset missing: {} (run scripts/fetch-test-assets.sh; README, 'Piper voices')",
            p.display()
        );
    }
    facecast_onnx::runtime(Some(&lib)).expect("ONNX Runtime loads");
    voice
}

/// The pauses inside speech, as the tests define them: stretches of at least 120 ms whose
/// 10 ms windows are all 40 dB or more below the loudest window, with sound on both sides.
/// Returned as (start, end) in seconds.
pub fn inner_pauses(samples: &[f32], rate: u32) -> Vec<(f64, f64)> {
    let window = (rate / 100) as usize;
    let levels: Vec<f32> = samples
        .chunks(window)
        .map(|w| (w.iter().map(|s| s * s).sum::<f32>() / w.len() as f32).sqrt())
        .collect();
    let loudest = levels.iter().cloned().fold(0.0, f32::max);
    let quiet = loudest / 100.0;
    let mut out = Vec::new();
    let mut start = None;
    let mut heard = false;
    for (i, &l) in levels.iter().enumerate() {
        if l < quiet {
            start.get_or_insert(i);
        } else {
            if let Some(s) = start.take() {
                if heard && i - s >= 12 {
                    out.push((s as f64 * 0.01, i as f64 * 0.01));
                }
            }
            heard = true;
        }
    }
    out
}

/// Frames (at `fps`) whose middle lies in a pause from 80 ms after its sound stops to 80 ms
/// before the next sound: there the mouth must be closed.
pub fn frames_in_pauses(pauses: &[(f64, f64)], fps: f64, frames: usize) -> Vec<usize> {
    (0..frames)
        .filter(|&n| {
            let mid = (n as f64 + 0.5) / fps;
            pauses
                .iter()
                .any(|&(s, e)| mid >= s + 0.080 && mid <= e - 0.080)
        })
        .collect()
}
