//! Decodes a photo or video file into RGBA frames with GStreamer (`decodebin`), so every format
//! the installed plugins read (PNG, JPEG, MP4/H.264, WebM, …) can become an avatar.

use gst::prelude::*;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("cannot read {0}: no such file")]
    NotFound(String),
    #[error("cannot decode {path}: {reason}")]
    Failed { path: String, reason: String },
    #[error("{path} has no video or image stream")]
    NoVideo { path: String },
    #[error(
        "{path} has more than {max} frames: trim the video (a short loop of a few seconds is best)"
    )]
    TooLong { path: String, max: usize },
}

/// A decoder that produces nothing for this long is stuck (e.g. a stream it cannot link).
const STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The decoded frames of a source.
pub struct Decoded {
    pub width: u32,
    pub height: u32,
    /// (numerator, denominator); (0, 1) for a still image.
    pub fps: (i32, i32),
    /// Tightly packed RGBA frames (`width · height · 4` bytes each).
    pub frames: Vec<Vec<u8>>,
    /// The decoder `decodebin` chose (its factory, e.g. `avdec_h264`, `nvh264dec` where NVDEC
    /// ranks first, `pngdec`), or "none" for raw video.
    pub decoder: String,
}

/// Decodes `path`, scaling frames down (aspect kept, even sizes) so their height is at most
/// `max_height`, and refusing sources of more than `max_frames` frames.
pub fn decode(
    path: &Path,
    max_height: u32,
    max_frames: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Decoded, DecodeError> {
    let name = path.display().to_string();
    if !path.is_file() {
        return Err(DecodeError::NotFound(name));
    }
    let failed = |reason: String| DecodeError::Failed {
        path: name.clone(),
        reason,
    };
    gst::init().map_err(|e| failed(e.to_string()))?;
    let pipeline = gst::Pipeline::new();
    let make = |factory: &str| {
        gst::ElementFactory::make(factory)
            .build()
            .map_err(|_| failed(format!("GStreamer element '{factory}' is missing")))
    };
    let src = make("filesrc")?;
    src.set_property("location", path.to_string_lossy().as_ref());
    let decodebin = make("decodebin")?;
    let convert = make("videoconvert")?;
    let scale = make("videoscale")?;
    let filter = make("capsfilter")?;
    filter.set_property(
        "caps",
        gst_video::VideoCapsBuilder::new()
            .format(gst_video::VideoFormat::Rgba)
            .pixel_aspect_ratio(gst::Fraction::new(1, 1))
            .build(),
    );
    let sink = gst_app::AppSink::builder()
        .sync(false)
        .max_buffers(4)
        .build();
    pipeline
        .add_many([
            &src,
            &decodebin,
            &convert,
            &scale,
            &filter,
            sink.upcast_ref(),
        ])
        .map_err(|e| failed(e.to_string()))?;
    src.link(&decodebin).map_err(|e| failed(e.to_string()))?;
    gst::Element::link_many([&convert, &scale, &filter, sink.upcast_ref()])
        .map_err(|e| failed(e.to_string()))?;

    // The decoder decodebin picks by rank (NVDEC's where GStreamer's nvcodec ranks it first),
    // reported to the user: which one ran is not otherwise visible.
    let decoder = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let chosen = decoder.clone();
    decodebin.connect("element-added", false, move |args| {
        let element = args[1].get::<gst::Element>().ok()?;
        let factory = element.factory()?;
        if factory
            .metadata(gst::ELEMENT_METADATA_KLASS)?
            .contains("Decoder")
        {
            chosen
                .lock()
                .unwrap()
                .get_or_insert(factory.name().to_string());
        }
        None
    });

    // Link the first video stream decodebin exposes, sized now that its caps are known.
    let convert_weak = convert.downgrade();
    let filter_weak = filter.downgrade();
    decodebin.connect_pad_added(move |_, pad| {
        let (Some(convert), Some(filter)) = (convert_weak.upgrade(), filter_weak.upgrade()) else {
            return;
        };
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let Some(s) = caps.structure(0) else { return };
        if !s.name().starts_with("video/") && !s.name().starts_with("image/") {
            return;
        }
        let sinkpad = convert.static_pad("sink").expect("videoconvert has a sink");
        if sinkpad.is_linked() {
            return;
        }
        if let (Ok(w), Ok(h)) = (s.get::<i32>("width"), s.get::<i32>("height")) {
            if h as u32 > max_height && h > 0 {
                let par = s
                    .get::<gst::Fraction>("pixel-aspect-ratio")
                    .unwrap_or(gst::Fraction::new(1, 1));
                let out_h = (max_height / 2 * 2) as i32;
                let out_w = ((w as i64 * par.numer() as i64 * out_h as i64)
                    / (h as i64 * par.denom() as i64)) as i32
                    / 2
                    * 2;
                filter.set_property(
                    "caps",
                    gst_video::VideoCapsBuilder::new()
                        .format(gst_video::VideoFormat::Rgba)
                        .width(out_w.max(2))
                        .height(out_h.max(2))
                        .pixel_aspect_ratio(gst::Fraction::new(1, 1))
                        .build(),
                );
            }
        }
        let _ = pad.link(&sinkpad);
    });

    pipeline
        .set_state(gst::State::Playing)
        .map_err(|_| failed("the file could not be opened as media".into()))?;
    let bus = pipeline.bus().expect("a pipeline has a bus");
    let mut frames = Vec::new();
    let mut info: Option<gst_video::VideoInfo> = None;
    let mut idle_since = std::time::Instant::now();
    let result = loop {
        match sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) {
            Some(sample) => {
                idle_since = std::time::Instant::now();
                if info.is_none() {
                    info = sample
                        .caps()
                        .and_then(|c| gst_video::VideoInfo::from_caps(c).ok());
                }
                let (Some(vi), Some(buffer)) = (info.as_ref(), sample.buffer()) else {
                    continue;
                };
                if frames.len() >= max_frames {
                    break Err(DecodeError::TooLong {
                        path: name.clone(),
                        max: max_frames,
                    });
                }
                let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, vi)
                    .map_err(|_| failed("cannot map a decoded frame".into()));
                let frame = match frame {
                    Ok(f) => f,
                    Err(e) => break Err(e),
                };
                let (w, h) = (vi.width() as usize, vi.height() as usize);
                let stride = vi.stride()[0] as usize;
                let data = frame.plane_data(0).unwrap_or(&[]);
                let mut packed = Vec::with_capacity(w * h * 4);
                for row in 0..h {
                    let start = row * stride;
                    match data.get(start..start + w * 4) {
                        Some(r) => packed.extend_from_slice(r),
                        None => break,
                    }
                }
                if packed.len() == w * h * 4 {
                    frames.push(packed);
                    progress(frames.len());
                }
            }
            None => {
                if sink.is_eos() {
                    break Ok(());
                }
                // No sample yet: an error on the bus ends the wait.
                while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
                    if let gst::MessageView::Error(e) = msg.view() {
                        let _ = pipeline.set_state(gst::State::Null);
                        return Err(failed(e.error().to_string()));
                    }
                }
                if idle_since.elapsed() > STALL_TIMEOUT {
                    break Err(failed(format!(
                        "no frame decoded for {} s",
                        STALL_TIMEOUT.as_secs()
                    )));
                }
            }
        }
    };
    let _ = pipeline.set_state(gst::State::Null);
    result?;
    let Some(vi) = info else {
        return Err(DecodeError::NoVideo { path: name });
    };
    let fps = vi.fps();
    let fps = if frames.len() <= 1 || fps.numer() <= 0 {
        (0, 1)
    } else {
        (fps.numer(), fps.denom())
    };
    let decoder = decoder
        .lock()
        .unwrap()
        .take()
        .unwrap_or_else(|| "none".into());
    Ok(Decoded {
        width: vi.width(),
        height: vi.height(),
        fps,
        frames,
        decoder,
    })
}
