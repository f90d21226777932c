//! facecast's avatar plugin: `avatarsrc`, the built-in parametric face and registered
//! photo/video avatars.
//!
//! - [`render`]: draws a face from ARKit blendshape weights and a head pose (tiny-skia).
//! - [`idle`]: blinks, breathing, head sway and saccades that keep a silent face alive.
//! - [`AvatarSrc`] (`avatarsrc`): the GStreamer source that plays either kind of avatar, with a
//!   face meta on every frame. Registered photo/video avatars (registration, cache, store) live
//!   in the plain library `facecast-avatars`, which the server uses too.
//! - [`DeltaConvert`] (`deltaconvert`): the talking frames to I420 for an encoder, converting
//!   only the pixels that changed (with [`changed`], where two frames differ).
//!
//! `lipsync` links this crate to redraw frames with a speaking mouth.

mod avatarsrc;
pub mod changed;
mod deltaconvert;
pub mod idle;
pub mod render;

pub use avatarsrc::AvatarSrc;
pub use deltaconvert::DeltaConvert;

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
    avatarsrc::register(plugin)?;
    deltaconvert::register(plugin)
}
