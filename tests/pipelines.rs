//! Every description in `pipelines/` parses with facecast's elements; the file ones also run.

mod common;

use gst::prelude::*;
use std::path::Path;

fn description(name: &str) -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("pipelines")
            .join(name),
    )
    .unwrap_or_else(|e| panic!("pipelines/{name}: {e}"));
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn every_pipeline_description_parses() {
    common::init();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "pipeline") {
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            let bin = gst::parse::launch(&description(&name))
                .unwrap_or_else(|e| panic!("{name} does not parse: {e}"));
            for factory in ["lipsync", "avatarsrc"] {
                let found = bin
                    .downcast_ref::<gst::Bin>()
                    .unwrap()
                    .iterate_recurse()
                    .into_iter()
                    .any(|e| e.unwrap().factory().is_some_and(|f| f.name() == factory));
                assert!(found, "{name} has no {factory}");
            }
            n += 1;
        }
    }
    assert!(n >= 3, "expected the three documented pipelines, found {n}");
}

#[test]
fn wav_to_mp4_runs() {
    common::init();
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("input.wav");
    let mp4 = dir.path().join("output.mp4");
    let u =
        gstfacecasttts::espeak::synthesize("Testing the pipeline.", &Default::default()).unwrap();
    facecast_testkit::write_wav(&wav, u.sample_rate, &u.samples);
    let desc = description("wav-to-mp4.pipeline")
        .replace("location=input.wav", &format!("location={}", wav.display()))
        .replace(
            "location=output.mp4",
            &format!("location={}", mp4.display()),
        );
    let pipeline = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    common::run_to_eos(&pipeline, 120);
    assert!(std::fs::metadata(&mp4).unwrap().len() > 10_000);
}

#[test]
fn mic_to_window_runs_live_with_a_test_source() {
    common::init();
    // The live graph of mic-to-window, with a 2 s live test tone for the microphone and an
    // appsink for the window.
    let desc = description("mic-to-window.pipeline")
        .replace(
            "autoaudiosrc",
            "audiotestsrc is-live=true num-buffers=100 samplesperbuffer=320",
        )
        .replace("autovideosink sync=false", "appsink name=out sync=false");
    let pipeline = gst::parse::launch(&desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let frames = common::collect_buffers(&pipeline, "out");
    common::run_to_eos(&pipeline, 30);
    let pts: Vec<_> = frames
        .lock()
        .unwrap()
        .iter()
        .map(|b| b.pts().unwrap())
        .collect();
    // 2 s of live audio at 25 fps.
    assert!((45..=55).contains(&pts.len()), "{} frames", pts.len());
    assert!(pts
        .windows(2)
        .all(|w| w[1] - w[0] == gst::ClockTime::from_mseconds(40)));
}
