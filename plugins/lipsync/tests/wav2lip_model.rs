//! The Wav2Lip model runner with ONNX Runtime and the generated test model
//! (`scripts/fetch-test-assets.sh`, which `make test` runs first).

use facecast_onnx::Device;
use gstfacecastlipsync::wav2lip_model::{
    face_input, FrameInput, ModelError, ModelIo, Wav2LipModel,
};
use std::path::{Path, PathBuf};

fn assets() -> (&'static ort::environment::Environment, PathBuf) {
    (
        facecast_testkit::onnx_runtime(),
        facecast_testkit::wav2lip_model(),
    )
}

fn inputs(n: usize) -> (Vec<f32>, Vec<f32>) {
    let mel = (0..n * 80 * 16)
        .map(|i| ((i * 7919) % 800) as f32 / 100.0 - 4.0)
        .collect();
    let face = (0..n * 6 * 96 * 96)
        .map(|i| ((i * 104729) % 255) as f32 / 255.0)
        .collect();
    (mel, face)
}

#[test]
fn runs_and_batches_agree() {
    let (env, path) = assets();
    let mut model = Wav2LipModel::load(env, &path, ModelIo::default(), Device::Cpu, 2).unwrap();
    let (mel, face) = inputs(4);
    let batched = model.infer(4, &mel, &face).unwrap();
    assert_eq!(batched.len(), 4 * 3 * 96 * 96);
    assert!(batched.iter().all(|v| (0.0..=1.0).contains(v)));
    // Frame by frame gives the same pixels as the batch.
    for i in 0..4 {
        let one = model
            .infer(
                1,
                &mel[i * 1280..(i + 1) * 1280],
                &face[i * 55296..(i + 1) * 55296],
            )
            .unwrap();
        let worst = one
            .iter()
            .zip(&batched[i * 27648..(i + 1) * 27648])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst < 1e-5,
            "frame {i}: batch 1 and batch 4 differ by {worst}"
        );
    }
    // Different faces give different outputs (the model is not constant).
    let (_, face2) = inputs(5);
    let other = model
        .infer(1, &mel[..1280], &face2[55296..2 * 55296])
        .unwrap();
    assert!(other
        .iter()
        .zip(&batched[..27648])
        .any(|(a, b)| (a - b).abs() > 1e-4));
}

/// Live frames (mel windows and 8-bit crops, run by `run_batch`) give what the model gives
/// for the same inputs as tensors, each frame its own output, in order; a frame of the wrong
/// size, or more frames than the batch holds, is refused.
#[test]
fn frames_from_crops_give_the_models_outputs() {
    let (env, path) = assets();
    let mut model = Wav2LipModel::load(env, &path, ModelIo::default(), Device::Cpu, 2).unwrap();
    let (mel, _) = inputs(3);
    let crops: Vec<Vec<u8>> = (0..3)
        .map(|k| {
            (0..96 * 96 * 3)
                .map(|i| ((i * 31 + k * 97) % 256) as u8)
                .collect()
        })
        .collect();
    let face: Vec<f32> = crops.iter().flat_map(|c| face_input(c)).collect();
    let want = model.infer(3, &mel, &face).unwrap();
    let frames: Vec<FrameInput> = crops
        .iter()
        .enumerate()
        .map(|(i, crop)| FrameInput {
            mel: &mel[i * 1280..(i + 1) * 1280],
            crop,
        })
        .collect();
    let outputs = model.run_batch(4, &frames).unwrap();
    let got: Vec<_> = outputs.frames(frames.len()).collect();
    assert_eq!(got.len(), 3);
    for (i, out) in got.iter().enumerate() {
        assert_eq!(&out[..], &want[i * 27648..(i + 1) * 27648], "frame {i}");
    }
    let short = [FrameInput {
        mel: &mel[..1280],
        crop: &crops[0][..100],
    }];
    assert!(matches!(
        model.run_batch(1, &short),
        Err(ModelError::Run(m)) if m.contains("crop")
    ));
    assert!(matches!(
        model.run_batch(2, &frames),
        Err(ModelError::Run(m)) if m.contains("do not fit")
    ));
}

#[test]
fn bad_models_and_inputs_are_named() {
    let (env, path) = assets();
    match Wav2LipModel::load(
        env,
        Path::new("/nonexistent/wav2lip.onnx"),
        ModelIo::default(),
        Device::Cpu,
        1,
    ) {
        Err(ModelError::NotFound(p)) => assert!(p.ends_with("wav2lip.onnx")),
        other => panic!("{:?}", other.err()),
    }
    let renamed = ModelIo {
        mel: "audio_sequences".into(),
        ..ModelIo::default()
    };
    let err = Wav2LipModel::load(env, &path, renamed, Device::Cpu, 1)
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(
        text.contains("no 'audio_sequences'") && text.contains("[N,1,80,16]"),
        "{text}"
    );

    let junk = std::env::temp_dir().join(format!("facecast-junk-{}.onnx", std::process::id()));
    std::fs::write(&junk, b"not a model").unwrap();
    let err = Wav2LipModel::load(env, &junk, ModelIo::default(), Device::Cpu, 1)
        .err()
        .unwrap();
    std::fs::remove_file(&junk).unwrap();
    assert!(matches!(err, ModelError::Load { .. }), "{err}");

    let mut model = Wav2LipModel::load(env, &path, ModelIo::default(), Device::Cpu, 1).unwrap();
    assert!(matches!(
        model.infer(2, &[0.0; 10], &[0.0; 10]),
        Err(ModelError::Run(_))
    ));
}

#[test]
fn names_left_at_their_defaults_are_taken_from_the_shapes() {
    let (env, path) = assets();
    let renamed = path.with_file_name("wav2lip_w025_seed7_renamed.onnx");
    assert!(
        renamed.is_file(),
        "{} missing: run scripts/fetch-test-assets.sh",
        renamed.display()
    );
    // Inputs audio_sequences/face_sequences and output out: no configuration needed.
    let mut model = Wav2LipModel::load(env, &renamed, ModelIo::default(), Device::Cpu, 1).unwrap();
    assert_eq!(
        model.io(),
        &ModelIo {
            mel: "audio_sequences".into(),
            face: "face_sequences".into(),
            output: "out".into(),
        }
    );
    let notes = model.inferred_names().join("; ");
    assert!(
        notes.contains("'out'") && notes.contains("'audio_sequences'"),
        "{notes}"
    );
    let (mel, face) = inputs(1);
    let renamed_out = model.infer(1, &mel, &face).unwrap();
    // The same network as the conventionally named model: the same output.
    let mut reference = Wav2LipModel::load(env, &path, ModelIo::default(), Device::Cpu, 1).unwrap();
    assert!(reference.inferred_names().is_empty());
    assert_eq!(renamed_out, reference.infer(1, &mel, &face).unwrap());

    // A name someone chose is never guessed: it must exist.
    let chosen = ModelIo {
        output: "result".into(),
        ..ModelIo::default()
    };
    let text = Wav2LipModel::load(env, &renamed, chosen, Device::Cpu, 1)
        .err()
        .unwrap()
        .to_string();
    assert!(
        text.contains("no 'result'") && text.contains("\"out\""),
        "{text}"
    );
}

/// A model that fails at run time fails quietly: the error comes back to the caller, which
/// reports it once per run of failures, and ONNX Runtime prints nothing of its own (it used to
/// print an error line for every failed batch: a broken model filled the server's log at the
/// frame rate). ONNX Runtime writes to the process's stderr, so this runs in a child process
/// whose stderr the test reads.
#[test]
fn failed_runs_are_returned_not_printed() {
    const CHILD: &str = "FACECAST_FAILING_RUNS_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let mut model = Wav2LipModel::load(
            facecast_testkit::onnx_runtime(),
            &facecast_testkit::faulty_wav2lip_model(),
            ModelIo::default(),
            Device::Cpu,
            1,
        )
        .unwrap();
        let (mel, face) = inputs(2);
        let failed = (0..5)
            .filter(|_| matches!(model.infer(2, &mel, &face), Err(ModelError::Run(_))))
            .count();
        println!("failed runs: {failed}");
        return;
    }
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "failed_runs_are_returned_not_printed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr),
    );
    assert!(child.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("failed runs: 5"), "{stdout}");
    assert!(
        !stderr.contains("[E:onnxruntime"),
        "ONNX Runtime printed its own errors:\n{stderr}"
    );
}

/// A frame still queued after its `expires` instant is left out of its batch and answered late
/// at once; the others in the batch are run as usual.
#[test]
fn frames_that_expire_before_their_batch_runs_are_left_out() {
    use gstfacecastlipsync::wav2lip_batcher::{shared, ModelKey, Waited};
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};
    let (_, path) = assets();
    // Its own key (batch 6, 150 ms wait): the counters are this test's alone.
    let model = shared(&ModelKey::new(&path, Device::Cpu, 6, 150, 1)).unwrap();
    let (mel, _) = inputs(1);
    let crop = vec![128u8; 96 * 96 * 3];
    let soon = Instant::now() + Duration::from_millis(20);
    let frames: Vec<_> = [None, Some(soon), None, Some(soon), Some(soon)]
        .into_iter()
        .map(|expires| {
            model
                .submit(mel.clone(), crop.clone(), expires, None)
                .unwrap()
        })
        .collect();
    // The batch gathers for 150 ms, so the three frames expiring after 20 ms are left out.
    let answers: Vec<_> = frames.into_iter().map(|f| f.wait(None)).collect();
    let kinds: Vec<&str> = answers
        .iter()
        .map(|a| match a {
            Waited::Answer(Ok(a)) if a.output.len() == 3 * 96 * 96 => "output",
            Waited::Answer(Err(ModelError::Late)) => "late",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["output", "late", "output", "late", "late"]);
    assert_eq!(model.stats.expired.load(Ordering::Relaxed), 3);
    assert_eq!(model.stats.frames.load(Ordering::Relaxed), 2);
}

/// Two batch workers take turns on one queue: every frame submitted from several threads is
/// answered, with the output one worker gives for it.
#[test]
fn two_batch_workers_answer_every_frame_as_one_does() {
    use gstfacecastlipsync::wav2lip_batcher::{shared, ModelKey, Waited};
    let (_, path) = assets();
    // Their own keys (batch 3, 5 ms wait): the counters are this test's alone.
    let one = shared(&ModelKey::new(&path, Device::Cpu, 3, 5, 1)).unwrap();
    let mut key = ModelKey::new(&path, Device::Cpu, 3, 5, 1);
    key.workers = 2;
    let two = shared(&key).unwrap();
    let (mel, _) = inputs(1);
    let crop = |k: usize| -> Vec<u8> {
        (0..96 * 96 * 3)
            .map(|i| ((i * 31 + k * 57) % 251) as u8)
            .collect()
    };
    let run = |model: &gstfacecastlipsync::wav2lip_batcher::SharedModel| -> Vec<Vec<f32>> {
        std::thread::scope(|s| {
            let threads: Vec<_> = (0..4)
                .map(|t| {
                    let (mel, crop) = (&mel, &crop);
                    s.spawn(move || {
                        // Each thread keeps its 6 frames in flight at once, like a session.
                        let pending: Vec<_> = (0..6)
                            .map(|i| {
                                model
                                    .submit(mel.clone(), crop(t * 6 + i), None, None)
                                    .unwrap()
                            })
                            .collect();
                        pending
                            .into_iter()
                            .map(|p| match p.wait(None) {
                                Waited::Answer(Ok(a)) => a.output.to_vec(),
                                Waited::Answer(Err(e)) => panic!("frame failed: {e}"),
                                Waited::Late(_) => panic!("no deadline was set"),
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect()
        })
    };
    let (by_one, by_two) = (run(&one), run(&two));
    assert_eq!(by_two.len(), 24);
    for (k, (a, b)) in by_one.iter().zip(&by_two).enumerate() {
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            worst < 1e-5,
            "frame {k}: one worker and two differ by {worst}"
        );
    }
}
