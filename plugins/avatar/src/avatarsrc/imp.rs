use crate::idle::IdleAnimator;
use crate::render::Renderer;
use facecast_avatars::cache::CachedAvatar;
use facecast_avatars::player::AvatarPlayer;
use facecast_avatars::store::AvatarStore;
use facecast_common::{Emotion, ExpressionBlender};
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::base_src::CreateSuccess;
use gst_base::subclass::prelude::*;
use std::sync::{Arc, LazyLock, Mutex};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "avatarsrc",
        gst::DebugColorFlags::empty(),
        Some("facecast parametric avatar source"),
    )
});

pub const DEFAULT_WIDTH: i32 = 512;
pub const DEFAULT_HEIGHT: i32 = 512;
pub const DEFAULT_FPS: i32 = 25;
const DEFAULT_SEED: u64 = 1;
const DEFAULT_IS_LIVE: bool = false;
const DEFAULT_EMOTION: &str = "neutral";
const DEFAULT_INTENSITY: f64 = 0.6;

#[derive(Debug, Clone)]
struct Settings {
    seed: u64,
    is_live: bool,
    emotion: Emotion,
    intensity: f64,
    /// A registered avatar to play instead of the parametric face.
    avatar: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            seed: DEFAULT_SEED,
            is_live: DEFAULT_IS_LIVE,
            emotion: Emotion::Neutral,
            intensity: DEFAULT_INTENSITY,
            avatar: None,
        }
    }
}

struct State {
    info: gst_video::VideoInfo,
    renderer: Renderer,
    idle: IdleAnimator,
    expression: ExpressionBlender,
    /// Frames produced since start; frame n starts at n / fps.
    n_frames: u64,
    /// Set when playing a registered avatar.
    player: Option<AvatarPlayer>,
}

#[derive(Default)]
pub struct AvatarSrc {
    settings: Mutex<Settings>,
    /// The registered avatar, opened at start (so caps can be its size).
    registered: Mutex<Option<Arc<CachedAvatar>>>,
    state: Mutex<Option<State>>,
    /// The clock wait of a live source, so `unlock` can cancel it on flush or shutdown.
    clock_wait: Mutex<(Option<gst::SingleShotClockId>, bool)>,
}

impl AvatarSrc {
    fn frame_time(n: u64, fps: gst::Fraction) -> gst::ClockTime {
        gst::ClockTime::SECOND
            .mul_div_floor(n * fps.denom() as u64, fps.numer() as u64)
            .unwrap_or(gst::ClockTime::ZERO)
    }

    /// Live mode: sleeps until the frame's start time on the pipeline clock.
    fn wait_until(&self, pts: gst::ClockTime) -> Result<(), gst::FlowError> {
        let obj = self.obj();
        let (Some(clock), Some(base_time)) = (obj.clock(), obj.base_time()) else {
            return Ok(());
        };
        let id = clock.new_single_shot_id(base_time + pts);
        {
            let mut wait = self.clock_wait.lock().unwrap();
            if wait.1 {
                return Err(gst::FlowError::Flushing);
            }
            wait.0 = Some(id.clone());
        }
        let (res, _) = id.wait();
        self.clock_wait.lock().unwrap().0 = None;
        match res {
            Err(gst::ClockError::Unscheduled) => Err(gst::FlowError::Flushing),
            _ => Ok(()),
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for AvatarSrc {
    const NAME: &'static str = "GstFacecastAvatarSrc";
    type Type = super::AvatarSrc;
    type ParentType = gst_base::PushSrc;
}

impl ObjectImpl for AvatarSrc {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecUInt64::builder("seed")
                    .nick("Seed")
                    .blurb("Seed of the idle animation (blinks, glances): equal seeds move alike")
                    .default_value(DEFAULT_SEED)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("is-live")
                    .nick("Is live")
                    .blurb("Produce frames in real time on the pipeline clock")
                    .default_value(DEFAULT_IS_LIVE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("emotion")
                    .nick("Emotion")
                    .blurb(
                        "Expression to ease into: neutral, happy, confident, thoughtful, concerned",
                    )
                    .default_value(Some(DEFAULT_EMOTION))
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("avatar")
                    .nick("Avatar")
                    .blurb("A registered photo/video avatar to play (facecast avatar add); unset: the parametric face. Looked up in FACECAST_DATA_DIR")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("emotion-intensity")
                    .nick("Emotion intensity")
                    .blurb("Strength of the expression, 0 (none) to 1 (full)")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_INTENSITY)
                    .mutable_playing()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = self.settings.lock().unwrap();
        match pspec.name() {
            "seed" => settings.seed = value.get().expect("type checked upstream"),
            "is-live" => {
                settings.is_live = value.get().expect("type checked upstream");
                self.obj().set_live(settings.is_live);
            }
            "emotion" => {
                let name: Option<String> = value.get().expect("type checked upstream");
                match name
                    .as_deref()
                    .unwrap_or(DEFAULT_EMOTION)
                    .parse::<Emotion>()
                {
                    Ok(e) => settings.emotion = e,
                    Err(err) => {
                        gst::warning!(CAT, imp = self, "{err}; keeping {}", settings.emotion);
                        return;
                    }
                }
            }
            "emotion-intensity" => settings.intensity = value.get().expect("type checked upstream"),
            "avatar" => {
                settings.avatar = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .filter(|s| !s.is_empty() && s != "default")
            }
            _ => unreachable!(),
        }
        gst::info!(CAT, imp = self, "{} set to {:?}", pspec.name(), value);
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = self.settings.lock().unwrap();
        match pspec.name() {
            "seed" => settings.seed.to_value(),
            "is-live" => settings.is_live.to_value(),
            "emotion" => settings.emotion.name().to_value(),
            "emotion-intensity" => settings.intensity.to_value(),
            "avatar" => settings.avatar.to_value(),
            _ => unreachable!(),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.set_format(gst::Format::Time);
        obj.set_live(DEFAULT_IS_LIVE);
    }
}

impl GstObjectImpl for AvatarSrc {}

impl ElementImpl for AvatarSrc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Parametric avatar source",
                "Source/Video",
                "A built-in animated face (blinks, breathes, glances) with a face meta on every frame",
                "facecast developers",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let caps = gst_video::VideoCapsBuilder::new()
                .format(gst_video::VideoFormat::Rgba)
                .width_range(64..=4096)
                .height_range(64..=4096)
                .framerate_range(gst::Fraction::new(1, 1)..=gst::Fraction::new(120, 1))
                .build();
            vec![gst::PadTemplate::new(
                "src",
                gst::PadDirection::Src,
                gst::PadPresence::Always,
                &caps,
            )
            .unwrap()]
        });
        TEMPLATES.as_ref()
    }
}

impl BaseSrcImpl for AvatarSrc {
    fn caps(&self, filter: Option<&gst::Caps>) -> Option<gst::Caps> {
        let template = self.obj().src_pad().pad_template_caps();
        // A registered avatar has one size: its frames are not rescaled here.
        let caps = match self.registered.lock().unwrap().as_ref() {
            Some(a) => {
                let mut caps = template;
                caps.make_mut().set("width", a.info.width as i32);
                caps.make_mut().set("height", a.info.height as i32);
                caps
            }
            None => template,
        };
        Some(match filter {
            Some(f) => f.intersect_with_mode(&caps, gst::CapsIntersectMode::First),
            None => caps,
        })
    }

    fn fixate(&self, mut caps: gst::Caps) -> gst::Caps {
        caps.truncate();
        let fps = self
            .registered
            .lock()
            .unwrap()
            .as_ref()
            .map(|a| a.info.fps)
            .filter(|f| f.0 > 0 && f.1 > 0)
            .map_or(gst::Fraction::new(DEFAULT_FPS, 1), |(n, d)| {
                gst::Fraction::new(n, d)
            });
        {
            let caps = caps.make_mut();
            let s = caps.structure_mut(0).unwrap();
            s.fixate_field_nearest_int("width", DEFAULT_WIDTH);
            s.fixate_field_nearest_int("height", DEFAULT_HEIGHT);
            s.fixate_field_nearest_fraction("framerate", fps);
            if s.has_field("pixel-aspect-ratio") {
                s.fixate_field_nearest_fraction("pixel-aspect-ratio", gst::Fraction::new(1, 1));
            }
        }
        self.parent_fixate(caps)
    }

    fn set_caps(&self, caps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let info = gst_video::VideoInfo::from_caps(caps)
            .map_err(|_| gst::loggable_error!(CAT, "invalid caps {caps}"))?;
        if info.fps().numer() <= 0 {
            return Err(gst::loggable_error!(
                CAT,
                "a fixed, non-zero framerate is required"
            ));
        }
        let renderer = Renderer::new(info.width(), info.height()).ok_or_else(|| {
            gst::loggable_error!(CAT, "cannot draw at {}x{}", info.width(), info.height())
        })?;
        let settings = self.settings.lock().unwrap().clone();
        gst::info!(
            CAT,
            imp = self,
            "drawing {}x{} at {} fps",
            info.width(),
            info.height(),
            info.fps()
        );
        let mut expression = ExpressionBlender::default();
        expression.set_target(settings.emotion, settings.intensity as f32);
        let player = self
            .registered
            .lock()
            .unwrap()
            .clone()
            .map(AvatarPlayer::new);
        if let Some(p) = &player {
            let a = &p.avatar().info;
            if (a.width, a.height) != (info.width(), info.height()) {
                return Err(gst::loggable_error!(
                    CAT,
                    "avatar '{}' is {}x{}, caps ask for {}x{}",
                    a.name,
                    a.width,
                    a.height,
                    info.width(),
                    info.height()
                ));
            }
        }
        *self.state.lock().unwrap() = Some(State {
            info,
            renderer,
            idle: IdleAnimator::new(settings.seed),
            expression,
            n_frames: 0,
            player,
        });
        Ok(())
    }

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        self.clock_wait.lock().unwrap().1 = false;
        let name = self.settings.lock().unwrap().avatar.clone();
        let registered = match name {
            Some(name) => {
                let avatar = AvatarStore::global().get(&name).map_err(|e| {
                    gst::error_msg!(gst::ResourceError::NotFound, ("cannot play avatar: {e}"))
                })?;
                gst::info!(
                    CAT,
                    imp = self,
                    "playing avatar '{name}': {} frames of {}x{}",
                    avatar.frame_count(),
                    avatar.info.width,
                    avatar.info.height
                );
                Some(avatar)
            }
            None => None,
        };
        *self.registered.lock().unwrap() = registered;
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *self.state.lock().unwrap() = None;
        *self.registered.lock().unwrap() = None;
        Ok(())
    }

    fn is_seekable(&self) -> bool {
        false
    }

    fn query(&self, query: &mut gst::QueryRef) -> bool {
        if let gst::QueryViewMut::Latency(q) = query.view_mut() {
            let settings = self.settings.lock().unwrap();
            let state = self.state.lock().unwrap();
            if let Some(state) = state.as_ref() {
                // A live source's frame is late by its duration when pushed.
                let latency = if settings.is_live {
                    Self::frame_time(1, state.info.fps())
                } else {
                    gst::ClockTime::ZERO
                };
                q.set(settings.is_live, latency, gst::ClockTime::NONE);
                return true;
            }
            // Not negotiated yet: the base class answers (live or not, no latency yet).
        }
        BaseSrcImplExt::parent_query(self, query)
    }

    fn unlock(&self) -> Result<(), gst::ErrorMessage> {
        let mut wait = self.clock_wait.lock().unwrap();
        if let Some(id) = wait.0.take() {
            id.unschedule();
        }
        wait.1 = true;
        Ok(())
    }

    fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
        self.clock_wait.lock().unwrap().1 = false;
        Ok(())
    }
}

impl PushSrcImpl for AvatarSrc {
    fn create(
        &self,
        _buffer: Option<&mut gst::BufferRef>,
    ) -> Result<CreateSuccess, gst::FlowError> {
        let settings = self.settings.lock().unwrap().clone();
        let mut state_guard = self.state.lock().unwrap();
        let Some(state) = state_guard.as_mut() else {
            gst::element_imp_error!(self, gst::CoreError::Negotiation, ("no caps negotiated"));
            return Err(gst::FlowError::NotNegotiated);
        };
        let fps = state.info.fps();
        let pts = Self::frame_time(state.n_frames, fps);
        let end = Self::frame_time(state.n_frames + 1, fps);
        state.n_frames += 1;

        if let Some(player) = state.player.as_mut() {
            let frame = player.frame_at(pts).map_err(|e| {
                gst::element_imp_error!(self, gst::ResourceError::Read, ("avatar frame: {e}"));
                gst::FlowError::Error
            })?;
            drop(state_guard);
            let mut buffer = frame;
            {
                let b = buffer.make_mut();
                b.set_pts(pts);
                b.set_duration(end - pts);
            }
            if settings.is_live {
                self.wait_until(end)?;
            }
            return Ok(CreateSuccess::NewBuffer(buffer));
        }

        let dt = (end - pts).seconds_f32();
        let mut pose = state.idle.pose_at(pts.seconds_f32());
        state
            .expression
            .set_target(settings.emotion, settings.intensity as f32);
        pose.weights.add_scaled(state.expression.advance(dt), 1.0);

        let mut buffer =
            gst::Buffer::with_size(state.info.size()).map_err(|_| gst::FlowError::Error)?;
        {
            let buffer = buffer.get_mut().unwrap();
            buffer.set_pts(pts);
            buffer.set_duration(end - pts);
            let stride = state.info.stride()[0] as usize;
            let mut map = buffer.map_writable().map_err(|_| gst::FlowError::Error)?;
            if !state
                .renderer
                .render_into(&pose, map.as_mut_slice(), stride)
            {
                drop(map);
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Failed,
                    ("frame buffer smaller than its caps say")
                );
                return Err(gst::FlowError::Error);
            }
            drop(map);
            state.renderer.face_info(&pose).attach(buffer);
        }
        gst::log!(CAT, imp = self, "frame at {pts}");
        drop(state_guard);

        if settings.is_live {
            // A live source hands over each frame once its time has been reached.
            self.wait_until(end)?;
        }
        Ok(CreateSuccess::NewBuffer(buffer))
    }
}
