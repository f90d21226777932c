//! facecast's avatar plugin: `avatarsrc`, the built-in parametric face and registered
//! photo/video avatars.
//!
//! - [`render`]: draws a face from ARKit blendshape weights and a head pose (tiny-skia).
//! - [`idle`]: blinks, breathing, head sway and saccades that keep a silent face alive.
//! - [`registration`]: a real person's photo or video, decoded, its face found once (YuNet).
//! - [`registered`]: the avatar cache file those registrations write, and the store that serves it.
//! - [`avatarsrc`]: the GStreamer source that plays either kind of avatar, with a face meta on
//!   every frame.
//!
//! `lipsync` links this crate to redraw frames with a speaking mouth.

pub mod avatarsrc;
pub mod idle;
pub mod registered;
pub mod registration;
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
