//! Avatar registration on real inputs: the public-domain astronaut portrait with the YuNet
//! detector (both from the shared test assets), and the errors users meet.
//!
//! The assets come from `scripts/fetch-test-assets.sh` (`make test` runs it), found through
//! `facecast-testkit`.

use facecast_avatars::cache::{CacheError, CachedAvatar};
use facecast_avatars::registration::detect::FaceDetector;
use facecast_avatars::registration::{register, RegisterError, RegisterOptions};
use facecast_avatars::store::{AvatarStore, StoreError};
use facecast_avatars::{SourceKind, CROP_SIZE};
use facecast_common::Rect;
use std::path::{Path, PathBuf};

/// Loads ONNX Runtime and returns (detector, portrait).
fn assets() -> (PathBuf, PathBuf) {
    (facecast_testkit::yunet(), facecast_testkit::portrait())
}

fn close(a: f32, b: f32, tol: f32) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn yunet_finds_the_astronaut() {
    let (detector, portrait) = assets();
    gst::init().unwrap();
    let decoded =
        facecast_avatars::registration::decode::decode(&portrait, 720, 10, &mut |_| {}).unwrap();
    assert_eq!(
        (decoded.width, decoded.height, decoded.frames.len()),
        (512, 512, 1)
    );
    assert_eq!(decoded.decoder, "pngdec");
    let mut yunet = FaceDetector::load(&detector).unwrap();
    let started = std::time::Instant::now();
    let faces = yunet.detect(&decoded.frames[0], 512, 512).unwrap();
    eprintln!("YuNet on 512x512: {:?}", started.elapsed());
    assert_eq!(faces.len(), 1, "{faces:?}");
    let f = faces[0];
    assert!(
        close(f.x1, 180.0, 8.0)
            && close(f.y1, 59.0, 8.0)
            && close(f.x2, 270.0, 8.0)
            && close(f.y2, 177.0, 8.0),
        "face at ({},{})-({},{})",
        f.x1,
        f.y1,
        f.x2,
        f.y2
    );
    // Eyes above the nose above the mouth, inside the box.
    let [re, le, nose, rm, lm] = f.landmarks;
    assert!(re[1] < nose[1] && le[1] < nose[1] && nose[1] < rm[1] && nose[1] < lm[1]);
    assert!(re[0] < le[0] && rm[0] < lm[0]);
}

#[test]
fn a_registered_photo_round_trips_through_its_cache() {
    let (detector, portrait) = assets();
    let dir = tempfile::tempdir().unwrap();
    let store = AvatarStore::new(dir.path(), 4);
    let options = RegisterOptions::new("astronaut", &portrait, &detector);
    let mut stages = Vec::new();
    let reg = register(&store, &options, &mut |s, _| stages.push(s)).unwrap();
    assert!(reg.warnings.is_empty(), "{:?}", reg.warnings);
    assert_eq!((reg.info.kind, reg.frames), (SourceKind::Image, 1));
    let avatar = store.get("astronaut").unwrap();
    let face = &avatar.faces[0];
    // Wav2Lip's padding adds 10 px at the bottom.
    let b = face.face;
    assert!(
        close(b.x as f32, 180.0, 8.0) && close(b.y as f32, 59.0, 8.0),
        "{b:?}"
    );
    assert!(
        close((b.x + b.w) as f32, 270.0, 8.0) && close((b.y + b.h) as f32, 187.0, 8.0),
        "{b:?}"
    );
    assert_eq!(face.crop.len(), CROP_SIZE * CROP_SIZE * 3);
    // The mask covers the mouth, not the eyes.
    let mask = |x: usize, y: usize| face.mask[y * CROP_SIZE + x];
    assert_eq!(mask(48, 78), 255);
    assert_eq!(mask(30, 30), 0);
    // The stored frame is the photo itself.
    let mut frame = vec![0u8; avatar.frame_size()];
    avatar.read_frame(0, &mut frame).unwrap();
    let decoded =
        facecast_avatars::registration::decode::decode(&portrait, 720, 10, &mut |_| {}).unwrap();
    assert_eq!(frame, decoded.frames[0]);

    // Registering again needs `replace`; a manual box skips detection.
    assert!(matches!(
        register(&store, &options, &mut |_, _| {}),
        Err(RegisterError::Exists(_))
    ));
    let mut manual = options.clone();
    manual.replace = true;
    manual.face_box = Some(Rect::new(100, 100, 200, 200));
    register(&store, &manual, &mut |_, _| {}).unwrap();
    let again = store.get("astronaut").unwrap();
    assert_eq!(again.faces[0].face, Rect::new(100, 100, 200, 210));
    assert_eq!(again.info.detector, "manual");
}

#[test]
fn bad_inputs_get_clear_errors() {
    let (detector, portrait) = assets();
    let dir = tempfile::tempdir().unwrap();
    let store = AvatarStore::new(dir.path().join("avatars"), 4);

    // A picture without a face: a flat grey PNG.
    let blank = dir.path().join("blank.png");
    let status = std::process::Command::new("gst-launch-1.0")
        .args([
            "-q",
            "videotestsrc",
            "num-buffers=1",
            "pattern=gradient",
            "!",
            "video/x-raw,width=320,height=240",
            "!",
            "videoconvert",
            "!",
            "pngenc",
            "!",
            "filesink",
        ])
        .arg(format!("location={}", blank.display()))
        .status()
        .expect("gst-launch-1.0 runs");
    assert!(status.success());
    let err = register(
        &store,
        &RegisterOptions::new("blank", &blank, &detector),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(matches!(err, RegisterError::NoFace(_)), "{err}");
    assert!(err.to_string().contains("--face-box"), "{err}");

    // Not media at all.
    let junk = dir.path().join("junk.png");
    std::fs::write(&junk, b"this is not an image").unwrap();
    let err = register(
        &store,
        &RegisterOptions::new("junk", &junk, &detector),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(matches!(err, RegisterError::Decode(_)), "{err}");

    // Names that would escape the folder.
    for name in ["../evil", "a/b", ".."] {
        let err = register(
            &store,
            &RegisterOptions::new(name, &portrait, &detector),
            &mut |_, _| {},
        )
        .unwrap_err();
        assert!(
            matches!(err, RegisterError::Store(StoreError::BadName { .. })),
            "{name}: {err}"
        );
    }
    // A missing detector says where to get it.
    let err = register(
        &store,
        &RegisterOptions::new("x", &portrait, Path::new("/nonexistent/yunet.onnx")),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("libfacedetection"), "{err}");
    // A face box outside the picture.
    let mut outside = RegisterOptions::new("x", &portrait, &detector);
    outside.face_box = Some(Rect::new(400, 400, 200, 200));
    assert!(matches!(
        register(&store, &outside, &mut |_, _| {}),
        Err(RegisterError::BadBox { .. })
    ));
    // Nothing was left behind by the failures.
    let left: Vec<_> = std::fs::read_dir(store.dir())
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    // A damaged cache is refused by name.
    let path = store.path_of("broken").unwrap();
    std::fs::create_dir_all(store.dir()).unwrap();
    std::fs::write(&path, b"FCAVATAR\x01\x00\x00\x00").unwrap();
    assert!(matches!(
        store.get("broken"),
        Err(StoreError::Cache(CacheError::Truncated { .. }))
    ));
    let _ = CachedAvatar::open(&path).unwrap_err();
}

#[test]
fn a_video_loop_registers_every_frame() {
    let (detector, portrait) = assets();
    let dir = tempfile::tempdir().unwrap();
    // A 1 s clip of the portrait drifting sideways (x264 in MP4).
    let clip = dir.path().join("clip.mp4");
    let status = std::process::Command::new("gst-launch-1.0")
        .arg("-q")
        .arg("filesrc")
        .arg(format!("location={}", portrait.display()))
        .args([
            "!",
            "pngdec",
            "!",
            "imagefreeze",
            "num-buffers=25",
            "!",
            "videoconvert",
            "!",
            "videobox",
            "left=-8",
            "!",
        ])
        .args([
            "video/x-raw,framerate=25/1",
            "!",
            "videoconvert",
            "!",
            "x264enc",
            "!",
            "mp4mux",
            "!",
            "filesink",
        ])
        .arg(format!("location={}", clip.display()))
        .status()
        .expect("gst-launch-1.0 runs");
    assert!(status.success());
    let store = AvatarStore::new(dir.path().join("avatars"), 4);
    let reg = register(
        &store,
        &RegisterOptions::new("clip", &clip, &detector),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(reg.info.kind, SourceKind::Video);
    assert_eq!(reg.frames, 25);
    // The H.264 decoder GStreamer ranks first here (NVDEC's nvh264dec on a GPU server).
    let decoder = gst::ElementFactory::find(&reg.decoder).expect("a decoder is named");
    assert!(
        decoder
            .metadata(gst::ELEMENT_METADATA_KLASS)
            .is_some_and(|k| k.contains("Decoder"))
            && decoder
                .static_pad_templates()
                .iter()
                .any(|t| t.direction() == gst::PadDirection::Sink
                    && t.caps().to_string().contains("video/x-h264")),
        "{}",
        reg.decoder
    );
    assert_eq!(reg.info.fps, (25, 1));
    let avatar = store.get("clip").unwrap();
    assert!(avatar
        .faces
        .iter()
        .all(|f| close(f.face.x as f32, 180.0, 10.0)));
}
