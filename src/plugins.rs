//! Static registration of facecast's elements, so the binary needs no `GST_PLUGIN_PATH`.

use anyhow::Context;

pub fn register() -> anyhow::Result<()> {
    gstfacecasttts::plugin_register_static().context("registering speechsynth")?;
    gstfacecastavatar::plugin_register_static().context("registering avatarsrc")?;
    gstfacecastlipsync::plugin_register_static().context("registering lipsync")?;
    gstfacecastlisten::plugin_register_static().context("registering vad and asr")?;
    Ok(())
}
