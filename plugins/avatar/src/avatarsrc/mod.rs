//! `avatarsrc`: video of the built-in parametric avatar, alive while silent.
//!
//! Produces RGBA frames (512 × 512 at 25 fps unless downstream caps ask otherwise) of a face that
//! blinks, breathes, sways and glances around. Each frame carries a `face` region-of-interest
//! meta ([`facecast_common::FaceInfo`]): the face box, the mouth region, and the pose it was
//! drawn with, so that `lipsync` can redraw it speaking.
//!
//! ```text
//! gst-launch-1.0 avatarsrc ! video/x-raw,width=720,height=720,framerate=30/1 ! videoconvert ! autovideosink
//! ```

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct AvatarSrc(ObjectSubclass<imp::AvatarSrc>) @extends gst_base::PushSrc, gst_base::BaseSrc, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "avatarsrc",
        gst::Rank::NONE,
        AvatarSrc::static_type(),
    )
}
