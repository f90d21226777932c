use crate::changed::{changed_box, round_out, Rect};
use gst::glib;
use gst::subclass::prelude::*;
use gst_base::subclass::prelude::*;
use gst_video::prelude::*;
use gst_video::subclass::prelude::*;
use std::sync::{LazyLock, Mutex};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "deltaconvert",
        gst::DebugColorFlags::empty(),
        Some("RGBA to I420, converting only what changed"),
    )
});

/// Changed boxes are rounded out to whole blocks of this size: even edges for the 2×2 chroma
/// blocks, and a box that stays put while a mouth moves inside it keeps its converter.
const BLOCK: u32 = 16;

/// When more than half of a frame changed (or there is no frame before it), comparing frames
/// costs more than it saves: that frame and the next `WHOLE_FRAMES - 1` are converted whole,
/// straight into the output, and the one after is compared again. (The built-in face sways
/// its whole head: its box is 80 % of the frame, and comparing every frame made its encoder
/// thread 13 % slower than `videoconvert`.)
const WHOLE_SHARE: f64 = 0.5;
const WHOLE_FRAMES: u32 = 25;

struct State {
    in_info: gst_video::VideoInfo,
    out_info: gst_video::VideoInfo,
    /// The previous input frame (a reference: nothing is copied).
    previous: Option<gst::Buffer>,
    /// The I420 picture of the previous input, updated in place.
    picture: gst_video::VideoFrame<gst_video::video_frame::Writable>,
    /// The converter of the last box converted.
    boxed: Option<BoxConverter>,
    /// Frames still to convert whole, without comparing, and their converter.
    whole_left: u32,
    whole: Option<gst_video::VideoConverter>,
}

impl State {
    fn new(in_info: &gst_video::VideoInfo, out_info: &gst_video::VideoInfo) -> Option<State> {
        let buffer = gst::Buffer::with_size(out_info.size()).ok()?;
        let picture = gst_video::VideoFrame::from_buffer_writable(buffer, out_info).ok()?;
        Some(State {
            in_info: in_info.clone(),
            out_info: out_info.clone(),
            previous: None,
            picture,
            boxed: None,
            whole_left: 0,
            whole: None,
        })
    }

    /// Converts all of `frame` into `out`.
    fn convert_whole(
        &mut self,
        frame: &gst_video::VideoFrameRef<&gst::BufferRef>,
        out: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
    ) -> Result<(), glib::BoolError> {
        if self.whole.is_none() {
            let mut config = gst_video::VideoConverterConfig::new();
            config.set_threads(1);
            self.whole = Some(gst_video::VideoConverter::new(
                &self.in_info,
                &self.out_info,
                Some(config),
            )?);
        }
        self.whole
            .as_ref()
            .expect("just made")
            .frame_ref(frame, out);
        Ok(())
    }

    /// Converts box `rect` of `frame` into the same box of the picture. The box is converted
    /// into a picture of its own and copied in: a converter given a destination box packs
    /// whole lines, and would overwrite the rest of each line. Both are made once per box.
    fn convert(
        &mut self,
        frame: &gst_video::VideoFrameRef<&gst::BufferRef>,
        rect: Rect,
    ) -> Result<(), glib::BoolError> {
        if self.boxed.as_ref().map(|b| b.rect) != Some(rect) {
            self.boxed = Some(BoxConverter::new(&self.in_info, &self.out_info, rect)?);
        }
        let boxed = self.boxed.as_mut().expect("just made");
        boxed
            .converter
            .frame_ref(frame, &mut boxed.picture.as_mut_video_frame_ref());
        for plane in 0..3 {
            // I420: full-size luma, then both chroma planes at half size (rounded up).
            // The box starts on even pixels; at an odd frame edge it ends on an odd one.
            let d = if plane == 0 { 1 } else { 2 };
            let (x, y) = ((rect.x / d) as usize, (rect.y / d) as usize);
            let (w, h) = (rect.w.div_ceil(d) as usize, rect.h.div_ceil(d) as usize);
            let from_stride = boxed.picture.plane_stride()[plane as usize] as usize;
            let to_stride = self.picture.plane_stride()[plane as usize] as usize;
            let from = boxed.picture.plane_data(plane)?;
            let to = self.picture.plane_data_mut(plane)?;
            for row in 0..h {
                to[(y + row) * to_stride + x..][..w]
                    .copy_from_slice(&from[row * from_stride..][..w]);
            }
        }
        Ok(())
    }
}

/// Converts one box of the input into an I420 picture the size of the box.
struct BoxConverter {
    rect: Rect,
    converter: gst_video::VideoConverter,
    picture: gst_video::VideoFrame<gst_video::video_frame::Writable>,
}

impl BoxConverter {
    fn new(
        in_info: &gst_video::VideoInfo,
        out_info: &gst_video::VideoInfo,
        rect: Rect,
    ) -> Result<Self, glib::BoolError> {
        let info = gst_video::VideoInfo::builder(out_info.format(), rect.w, rect.h)
            .fps(out_info.fps())
            .par(out_info.par())
            .colorimetry(&out_info.colorimetry())
            .chroma_site(out_info.chroma_site())
            .build()?;
        let mut config = gst_video::VideoConverterConfig::new();
        config.set_src_x(rect.x as i32);
        config.set_src_y(rect.y as i32);
        config.set_src_width(Some(rect.w as i32));
        config.set_src_height(Some(rect.h as i32));
        config.set_threads(1);
        let converter = gst_video::VideoConverter::new(in_info, &info, Some(config))?;
        let buffer = gst::Buffer::with_size(info.size())
            .map_err(|_| glib::bool_error!("cannot allocate a {}-byte picture", info.size()))?;
        let picture = gst_video::VideoFrame::from_buffer_writable(buffer, &info)
            .map_err(|_| glib::bool_error!("cannot map the picture"))?;
        Ok(Self {
            rect,
            converter,
            picture,
        })
    }
}

#[derive(Default)]
pub struct DeltaConvert {
    state: Mutex<Option<State>>,
}

#[glib::object_subclass]
impl ObjectSubclass for DeltaConvert {
    const NAME: &'static str = "FacecastDeltaConvert";
    type Type = super::DeltaConvert;
    type ParentType = gst_video::VideoFilter;
}

impl ObjectImpl for DeltaConvert {}
impl GstObjectImpl for DeltaConvert {}

impl ElementImpl for DeltaConvert {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Delta colour converter",
                "Filter/Converter/Video",
                "RGBA to I420, converting only the pixels that changed since the previous frame",
                "facecast developers",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = |format| gst_video::VideoCapsBuilder::new().format(format).build();
            vec![
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &caps(gst_video::VideoFormat::I420),
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &caps(gst_video::VideoFormat::Rgba),
                )
                .unwrap(),
            ]
        });
        TEMPLATES.as_ref()
    }
}

impl BaseTransformImpl for DeltaConvert {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::NeverInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn transform_caps(
        &self,
        direction: gst::PadDirection,
        caps: &gst::Caps,
        filter: Option<&gst::Caps>,
    ) -> Option<gst::Caps> {
        // Same size and rate; the other side's format, and its own colour description.
        let format = match direction {
            gst::PadDirection::Sink => gst_video::VideoFormat::I420,
            _ => gst_video::VideoFormat::Rgba,
        };
        let mut other = caps.clone();
        for s in other.make_mut().iter_mut() {
            s.set("format", format.to_str());
            s.remove_fields(["colorimetry", "chroma-site"]);
        }
        gst::debug!(CAT, imp = self, "{direction:?} {caps} → {other}");
        Some(match filter {
            Some(f) => f.intersect_with_mode(&other, gst::CapsIntersectMode::First),
            None => other,
        })
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *self.state.lock().unwrap() = None;
        Ok(())
    }
}

impl VideoFilterImpl for DeltaConvert {
    fn set_info(
        &self,
        incaps: &gst::Caps,
        in_info: &gst_video::VideoInfo,
        outcaps: &gst::Caps,
        out_info: &gst_video::VideoInfo,
    ) -> Result<(), gst::LoggableError> {
        gst::info!(CAT, imp = self, "converting {incaps} to {outcaps}");
        let state = State::new(in_info, out_info)
            .ok_or_else(|| gst::loggable_error!(CAT, "cannot allocate the I420 picture"))?;
        *self.state.lock().unwrap() = Some(state);
        Ok(())
    }

    fn transform_frame(
        &self,
        inframe: &gst_video::VideoFrameRef<&gst::BufferRef>,
        outframe: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut guard = self.state.lock().unwrap();
        let state = guard.as_mut().ok_or(gst::FlowError::NotNegotiated)?;
        let failed = |e: glib::BoolError| {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ("cannot convert RGBA to I420: {e}")
            );
            gst::FlowError::Error
        };
        let (w, h) = (inframe.width(), inframe.height());
        if state.whole_left == 0 {
            let changed = match &state.previous {
                None => Some(Rect { x: 0, y: 0, w, h }),
                Some(previous) if previous.as_ptr() == inframe.buffer().as_ptr() => None,
                Some(previous) => {
                    let before = gst_video::VideoFrameRef::from_buffer_ref_readable(
                        previous,
                        &state.in_info,
                    )
                    .map_err(|_| gst::FlowError::Error)?;
                    let (a, b) = (plane(&before)?, plane(inframe)?);
                    let (sa, sb) = (before.plane_stride()[0], inframe.plane_stride()[0]);
                    changed_box(a, sa as usize, b, sb as usize, w as usize, h as usize)
                        .map(|r| round_out(r, BLOCK, w, h))
                }
            };
            let share = changed.map_or(0.0, |r| f64::from(r.w * r.h) / f64::from(w * h));
            if share <= WHOLE_SHARE {
                if let Some(rect) = changed {
                    gst::log!(CAT, imp = self, "converting {rect:?}");
                    state.convert(inframe, rect).map_err(failed)?;
                }
                state.previous = Some(inframe.buffer().to_owned());
                state
                    .picture
                    .as_video_frame_ref()
                    .copy(outframe)
                    .map_err(|_| gst::FlowError::Error)?;
                return Ok(gst::FlowSuccess::Ok);
            }
            gst::log!(
                CAT,
                imp = self,
                "{share:.2} of the frame changed: converting whole frames"
            );
            state.whole_left = WHOLE_FRAMES;
        }
        // Whole frames, straight into the output, without comparing.
        state.whole_left -= 1;
        state.convert_whole(inframe, outframe).map_err(failed)?;
        state.previous = None;
        if state.whole_left == 0 {
            // The next frame is compared with this one.
            outframe
                .copy(&mut state.picture.as_mut_video_frame_ref())
                .map_err(|_| gst::FlowError::Error)?;
            state.previous = Some(inframe.buffer().to_owned());
        }
        Ok(gst::FlowSuccess::Ok)
    }
}

fn plane<'a>(
    frame: &'a gst_video::VideoFrameRef<&gst::BufferRef>,
) -> Result<&'a [u8], gst::FlowError> {
    frame.plane_data(0).map_err(|_| gst::FlowError::Error)
}
