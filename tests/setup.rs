//! What `make run` installs (scripts/fetch-runtime.sh) is found with no variable set: ONNX
//! Runtime in `.cache/onnxruntime`, the face detector in `models/`. The README's photo-avatar
//! command works right after it.

use std::process::Command;

#[test]
fn photo_avatars_register_with_no_variables_after_the_set_up() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for needed in [
        "models/yunet_n_dynamic.onnx",
        ".cache/onnxruntime/libonnxruntime.so.1.31.1",
        ".cache/media/astronaut.png",
    ] {
        assert!(
            root.join(needed).is_file(),
            "{needed} missing: run scripts/fetch-runtime.sh (make run does) and scripts/fetch-test-assets.sh"
        );
    }
    let data = tempfile::tempdir().unwrap();
    let facecast = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_facecast"))
            .args(args)
            .current_dir(root)
            .env_remove("ORT_DYLIB_PATH")
            .env_remove("FACECAST_MODELS_DIR")
            .env("FACECAST_DATA_DIR", data.path())
            .output()
            .unwrap()
    };
    let o = facecast(&[
        "avatar",
        "add",
        "anna",
        "--image",
        ".cache/media/astronaut.png",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = facecast(&["avatar", "list"]);
    let listed = String::from_utf8_lossy(&o.stdout);
    assert!(listed.starts_with("anna\t512x512"), "{listed}");
}
