//! facecast's avatar plugin: `avatarsrc`, the built-in parametric face.
//!
//! - [`render`]: draws a face from ARKit blendshape weights and a head pose (tiny-skia).
//! - [`idle`]: blinks, breathing, head sway and saccades that keep a silent face alive.
//! - [`avatarsrc`]: the GStreamer source that plays them, with a face meta on every frame.
//!
//! `lipsync` links this crate to redraw frames with a speaking mouth.

pub mod avatarsrc;
pub mod idle;
pub mod render;

gst::plugin_define!(
    facecastavatar,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MIT/X11",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);

fn plugin_init(plugin: &gst::Plugin) -> Result<(), gst::glib::BoolError> {
    avatarsrc::register(plugin)
}
