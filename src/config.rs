//! Server configuration: `configs/facecast.toml` (or `--config`), then environment overrides.
//!
//! Every field has a default, so an empty or missing file works. Environment variables win over
//! the file, so containers and CI can change a setting without editing it:
//! `FACECAST_LISTEN`, `FACECAST_MAX_SESSIONS`, `FACECAST_IDLE_TIMEOUT_SECS`,
//! `FACECAST_ALLOWED_ORIGINS` (comma-separated), `FACECAST_STUN_SERVERS`,
//! `FACECAST_TURN_SERVERS` (comma-separated URLs), `FACECAST_VIDEO_CODEC` (`vp8`, `h264`),
//! `FACECAST_WEB_DIR`, `FACECAST_MODELS_DIR`, `FACECAST_DATA_DIR` (avatars, recordings),
//! `FACECAST_MAX_OUTPUTS_PER_SESSION`, `FACECAST_WAV2LIP_MODEL`,
//! `FACECAST_DEVICE` (`cpu`, `cuda:N`), `ORT_DYLIB_PATH` (the ONNX Runtime library),
//! `FACECAST_LLM_BASE_URL`, `FACECAST_LLM_MODEL` (the key: `FACECAST_LLM_API_KEY`),
//! `FACECAST_REDIS_URL` (conversation memory), `FACECAST_TTS` (`espeak`, `piper`),
//! `FACECAST_PIPER_VOICE`, `FACECAST_ASR_BASE_URL` (selects the `openai` recogniser),
//! `FACECAST_ASR_MODEL`, `FACECAST_ASR_API_KEY`.

use anyhow::Context;
use facecast_onnx::Device;
use gstfacecastlipsync::wav2lip_batcher::ModelIoKey;
use gstfacecasttts::SpeechEngine;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: SocketAddr,
    /// Folder of the browser client, served at `/`.
    pub web_dir: PathBuf,
    /// Sessions beyond this are refused with 503 and `Retry-After`.
    pub max_sessions: usize,
    /// Largest accepted request body (JSON or SDP), in bytes.
    pub max_body_bytes: u64,
    /// Longest text one `say` may carry, in characters.
    pub max_text_chars: usize,
    /// A session with no viewer for this long is ended.
    pub idle_timeout_secs: u64,
    /// A viewer whose WebRTC connection is not up this long after its offer is dropped.
    pub viewer_connect_timeout_secs: u64,
    /// Origins allowed to call WHEP and the REST API from another page (`*` for any).
    pub allowed_origins: Vec<String>,
    pub ice: IceConfig,
    pub video: VideoConfig,
    pub speech: SpeechConfig,
    pub lipsync: LipSyncConfig,
    /// Folder of ONNX models named by file name (face detector, lip-sync).
    pub models_dir: PathBuf,
    /// Folder of registered avatars (`avatars/` inside it).
    pub data_dir: PathBuf,
    /// Registered avatars kept decoded in memory (least recently used ones leave first).
    pub avatar_cache_capacity: usize,
    /// Largest avatar upload (`POST /api/v1/avatars`), in bytes.
    pub max_upload_bytes: u64,
    pub llm: LlmConfig,
    /// What the server does with a published voice (WHIP): detection and turn-taking.
    pub voice_input: VoiceInputConfig,
    /// Speech recognition of published voices.
    pub asr: AsrConfig,
    /// Restreaming (RTMP, SRT) and recordings.
    pub outputs: OutputsConfig,
}

/// Outputs: streams pushed to RTMP/SRT servers and recordings, all H.264 + AAC.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputsConfig {
    /// More outputs than this on one session get 409.
    pub max_outputs_per_session: usize,
    /// H.264 bitrate for outputs, kbit/s (when viewers use H.264 too, outputs share their
    /// encoder, and its `video.bitrate_kbps`).
    pub bitrate_kbps: u32,
    /// Seconds between keyframes (YouTube and Twitch ask for 2).
    pub keyframe_interval_secs: u32,
    /// H.264 profile: `main` or `baseline` (x264 `tune=zerolatency`, no B-frames either way).
    pub profile: H264Profile,
    /// AAC bitrate, kbit/s.
    pub audio_bitrate_kbps: u32,
    /// First wait before reconnecting an output whose server refused or dropped it; each
    /// further attempt waits twice as long, up to `reconnect_max_ms`.
    pub reconnect_initial_ms: u64,
    pub reconnect_max_ms: u64,
}

/// The H.264 profile of restreamed video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum H264Profile {
    #[default]
    Main,
    Baseline,
}

impl H264Profile {
    /// The profile as H.264 caps name it (x264 follows the caps).
    pub fn caps_name(self) -> &'static str {
        match self {
            H264Profile::Main => "main",
            H264Profile::Baseline => "constrained-baseline",
        }
    }
}

impl Default for OutputsConfig {
    fn default() -> Self {
        Self {
            max_outputs_per_session: 4,
            bitrate_kbps: 2500,
            keyframe_interval_secs: 2,
            profile: H264Profile::Main,
            audio_bitrate_kbps: 128,
            reconnect_initial_ms: 1000,
            reconnect_max_ms: 30_000,
        }
    }
}

/// Voice activity detection and turn-taking for audio published to a session.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VoiceInputConfig {
    /// The Silero VAD model (a path, or a file in `models_dir`).
    pub vad_model: PathBuf,
    pub threshold: f32,
    /// Speech needed before a turn counts: it then starts listening and, if the avatar is
    /// speaking, interrupts it (barge-in).
    pub min_interrupt_ms: u32,
    /// Silence after which the person's turn has ended and the question is asked.
    pub end_of_turn_ms: u32,
    /// Audio kept from before the detected start of speech.
    pub pre_roll_ms: u32,
    /// How long a publisher may take to connect.
    pub publisher_connect_timeout_secs: u64,
    /// A publisher whose audio stops arriving for this long is gone (closed tab, crashed
    /// client), even before ICE or RTCP notice.
    pub publisher_silence_timeout_secs: u64,
    /// The publisher's jitter buffer: what network jitter is absorbed, and a delay every
    /// barge-in pays (webrtcbin's default is 200 ms).
    pub jitter_buffer_ms: u32,
}

impl Default for VoiceInputConfig {
    fn default() -> Self {
        Self {
            vad_model: PathBuf::from(gstfacecastlisten::VAD_MODEL_FILE),
            threshold: 0.5,
            min_interrupt_ms: 150,
            end_of_turn_ms: 600,
            pre_roll_ms: 300,
            publisher_connect_timeout_secs: 20,
            publisher_silence_timeout_secs: 10,
            jitter_buffer_ms: 60,
        }
    }
}

/// The speech recogniser: an OpenAI-compatible endpoint when `base_url` is set, else the
/// embedded pocketsphinx (US English).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AsrConfig {
    /// Up to `/v1`, e.g. `http://127.0.0.1:8000/v1`.
    pub base_url: Option<String>,
    pub model: String,
    /// The environment variable holding the API key.
    pub api_key_env: String,
    /// The language spoken to the avatar (unset: the session's language).
    pub language: Option<String>,
    pub timeout_secs: u64,
    pub max_utterance_secs: u32,
}

impl Default for AsrConfig {
    fn default() -> Self {
        Self {
            base_url: None,
            model: "whisper-1".into(),
            api_key_env: "FACECAST_ASR_API_KEY".into(),
            language: None,
            timeout_secs: 15,
            max_utterance_secs: 30,
        }
    }
}

impl AsrConfig {
    pub fn engine(&self) -> gstfacecastlisten::AsrEngine {
        match self.base_url {
            Some(_) => gstfacecastlisten::AsrEngine::Openai,
            None => gstfacecastlisten::AsrEngine::Pocketsphinx,
        }
    }

    pub fn api_key(&self) -> Option<String> {
        std::env::var(&self.api_key_env)
            .ok()
            .filter(|k| !k.is_empty())
    }
}

/// The language model sessions chat with (any OpenAI-compatible `/v1/chat/completions`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    /// E.g. `http://127.0.0.1:30000/v1` (SGLang), `http://127.0.0.1:11434/v1` (Ollama). Unset:
    /// `chat` is refused with 409.
    pub base_url: Option<String>,
    pub model: String,
    /// The environment variable holding the API key (never the key itself in the file).
    pub api_key_env: String,
    pub temperature: f32,
    pub max_tokens: u32,
    pub connect_timeout_secs: u64,
    /// Longest wait for the first or the next piece of the answer.
    pub idle_timeout_secs: u64,
    /// The system prompt (a file), e.g. `configs/persona-financial-advisor.txt`.
    pub persona: Option<PathBuf>,
    /// Personas of particular avatars (avatar name → file), instead of `persona`.
    pub avatar_personas: BTreeMap<String, PathBuf>,
    /// Longest persona a session may bring (`POST /api/v1/sessions {persona}`), in characters.
    pub max_persona_chars: usize,
    /// Turns (a question and its answer) of history sent with each question.
    pub history_turns: usize,
    /// At most this many (estimated) tokens of history are sent with each question.
    pub history_tokens: usize,
    /// Longest question `chat` accepts, in characters.
    pub max_question_chars: usize,
    /// Where conversations are remembered across restarts and servers (`redis://host:6379/0`).
    /// Unset: each session remembers its own conversation in memory.
    pub redis_url: Option<String>,
    /// How long Redis keeps a conversation nobody continues.
    pub history_ttl_secs: u64,
    /// Conversations the server keeps in memory (the least recently used leave first).
    pub memory_conversations: usize,
    /// Said aloud when the model fails before saying anything, per language (`en`, `fa`, …);
    /// languages without one use `en`. Empty: nothing is said.
    pub apology: BTreeMap<String, String>,
}

impl LlmConfig {
    /// The apology for a session speaking `lang` (`fa`, `en-us`, …), if any.
    pub fn apology_for(&self, lang: &str) -> Option<&str> {
        let base = lang.split(['-', '_', '+']).next().unwrap_or(lang);
        [lang, base, "en"]
            .iter()
            .find_map(|l| self.apology.get(*l))
            .map(String::as_str)
            .filter(|a| !a.trim().is_empty())
    }
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            base_url: None,
            model: "default".into(),
            api_key_env: "FACECAST_LLM_API_KEY".into(),
            temperature: 0.7,
            max_tokens: 400,
            connect_timeout_secs: 5,
            idle_timeout_secs: 30,
            persona: None,
            avatar_personas: BTreeMap::new(),
            max_persona_chars: 4000,
            history_turns: 12,
            history_tokens: 3000,
            max_question_chars: 1000,
            redis_url: None,
            history_ttl_secs: 7 * 24 * 3600,
            memory_conversations: 1000,
            apology: [
                ("en", "Sorry, I cannot answer that right now."),
                ("fa", "متأسفم، الان نمی‌توانم پاسخ بدهم."),
            ]
            .into_iter()
            .map(|(l, a)| (l.to_owned(), a.to_owned()))
            .collect(),
        }
    }
}

/// The neural lip-sync model photo and video avatars talk with.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LipSyncConfig {
    /// A Wav2Lip-class ONNX model (path, or file name in `models_dir`). Without one, registered
    /// avatars cannot talk and sessions asking for `wav2lip` are refused.
    pub model: Option<PathBuf>,
    /// `cpu`, `cuda:N`, or `auto` (the first GPU NVML sees, else the CPU; decided at start
    /// and logged).
    #[serde(deserialize_with = "device_setting")]
    pub device: Device,
    /// Several devices (`["cuda:0", "cuda:1"]`, or `["all"]`: every GPU NVML sees): one model
    /// is loaded on each, and each new photo-avatar session goes to the least-loaded one with
    /// room. Empty: `device` alone.
    #[serde(deserialize_with = "devices_setting")]
    pub devices: Vec<Device>,
    /// Most frames per inference, shared by all sessions.
    pub batch_size: u32,
    /// Longest wait for more frames to fill a batch, in ms.
    pub batch_wait_ms: u32,
    /// How long past its due time (its end plus the pipeline latency) a live frame may wait for
    /// its batch, in ms, before the previous frame is shown instead (counted in
    /// `facecast_frames_repeated_total`); 0: wait. The default, 100, keeps an overloaded
    /// server's streams live rather than falling ever further behind, and its repeated frames
    /// tell admission to refuse new sessions.
    pub frame_budget_ms: u32,
    /// Frames a second the device holds live with none repeated (`facecast bench --serve
    /// --avatar …`). Photo-avatar sessions beyond `max_load` of it are refused (503
    /// `gpu_busy`/`cpu_busy`); unset: only live lateness refuses them.
    pub capacity_fps: Option<f64>,
    /// Share of `capacity_fps` handed out to sessions.
    pub max_load: f64,
    /// GPU memory kept free for the sessions running, in MB: below it, new photo-avatar
    /// sessions get 503 `gpu_full` (0: not checked).
    pub gpu_memory_reserve_mb: u64,
    /// CPU inference threads (0: one per core).
    pub threads: u32,
    /// Batch workers per device, each with its own copy of the model's sessions (1 or 2). With
    /// two on a GPU, one's host work and transfers overlap the other's run.
    pub workers: u32,
    /// On a GPU, MB of registered avatars' frames each batch worker keeps there, so that
    /// output frames are made on the GPU (the model's output blended in where it is, one
    /// download a frame) instead of on each session's thread; 0: on the CPU.
    pub gpu_frames_mb: u32,
    /// The ONNX Runtime library (`libonnxruntime.so`); else `ORT_DYLIB_PATH`, else the copy
    /// `scripts/fetch-runtime.sh` installs in `.cache/onnxruntime`.
    pub onnxruntime: Option<PathBuf>,
    /// The model's input and output names, for exports that name them otherwise (default
    /// `mel`, `face`, `output`; a model with two inputs and one output that its shapes tell
    /// apart needs none of these).
    pub mel_input: Option<String>,
    pub face_input: Option<String>,
    pub output_name: Option<String>,
}

impl Default for LipSyncConfig {
    fn default() -> Self {
        Self {
            model: None,
            device: Device::Cpu,
            devices: Vec::new(),
            batch_size: 8,
            batch_wait_ms: 8,
            frame_budget_ms: 100,
            capacity_fps: None,
            max_load: 0.9,
            gpu_memory_reserve_mb: 1024,
            threads: 0,
            workers: 1,
            gpu_frames_mb: gstfacecastlipsync::wav2lip_batcher::DEFAULT_GPU_FRAMES_MB as u32,
            onnxruntime: None,
            mel_input: None,
            face_input: None,
            output_name: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IceConfig {
    /// STUN servers (`stun://host:port`). None by default: nothing leaves the machine unless
    /// a deployment asks for it.
    pub stun_servers: Vec<String>,
    /// TURN servers (`turn://user:password@host:port`).
    pub turn_servers: Vec<String>,
    /// Offer loopback ICE candidates (127.0.0.1). Default: when listening on loopback.
    pub loopback: Option<bool>,
}

/// The video codec sessions send to viewers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodec {
    /// VP8 (libvpx): every browser and WHEP player decodes it.
    #[default]
    Vp8,
    /// H.264 constrained baseline: NVENC (`nvh264enc`) where the GPU has it, x264 otherwise.
    H264,
}

impl std::str::FromStr for VideoCodec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "vp8" => Ok(VideoCodec::Vp8),
            "h264" => Ok(VideoCodec::H264),
            other => anyhow::bail!("unknown video codec '{other}' (expected vp8 or h264)"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VideoConfig {
    pub codec: VideoCodec,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// Target video bitrate, kbit/s.
    pub bitrate_kbps: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpeechConfig {
    /// Language of sessions that do not choose one.
    pub language: String,
    /// Who speaks in sessions that do not choose: `espeak` or `piper`.
    pub engine: SpeechEngine,
    /// The Piper voice sessions speak with when they ask for `piper` without naming one: a
    /// name in `models_dir` (or its `piper/` folder) or a path to the `.onnx`.
    pub piper_voice: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().unwrap(),
            web_dir: PathBuf::from("web"),
            max_sessions: 8,
            max_body_bytes: 64 * 1024,
            max_text_chars: 2000,
            idle_timeout_secs: 120,
            viewer_connect_timeout_secs: 20,
            allowed_origins: vec!["*".into()],
            ice: IceConfig::default(),
            video: VideoConfig::default(),
            speech: SpeechConfig::default(),
            lipsync: LipSyncConfig::default(),
            models_dir: PathBuf::from("models"),
            data_dir: PathBuf::from("data"),
            avatar_cache_capacity: 8,
            max_upload_bytes: 64 * 1024 * 1024,
            llm: LlmConfig::default(),
            voice_input: VoiceInputConfig::default(),
            asr: AsrConfig::default(),
            outputs: OutputsConfig::default(),
        }
    }
}

impl Default for VideoConfig {
    fn default() -> Self {
        Self {
            codec: VideoCodec::default(),
            width: 512,
            height: 512,
            fps: 25,
            bitrate_kbps: 1200,
        }
    }
}

impl Default for SpeechConfig {
    fn default() -> Self {
        Self {
            language: "en".into(),
            engine: SpeechEngine::Espeak,
            piper_voice: "en_US-joe-medium".into(),
        }
    }
}

/// A device setting: `cpu`, `cuda:N`, or `auto`, which asks `gpus` how many GPUs there are and
/// takes the first, else the CPU, saying which and why.
pub(crate) fn parse_device(
    value: &str,
    gpus: impl FnOnce() -> Result<u32, String>,
) -> Result<Device, String> {
    if value.trim() != "auto" {
        return value.trim().parse();
    }
    match gpus() {
        Ok(n) if n > 0 => {
            tracing::info!("device auto: cuda:0 (the first of {n} GPUs)");
            Ok(Device::Cuda(0))
        }
        Ok(_) => {
            tracing::info!("device auto: cpu (NVML sees no GPU)");
            Ok(Device::Cpu)
        }
        Err(why) => {
            tracing::info!("device auto: cpu ({why})");
            Ok(Device::Cpu)
        }
    }
}

fn device_setting<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Device, D::Error> {
    let value = String::deserialize(d)?;
    parse_device(&value, facecast_gpu::nvml::gpu_count).map_err(serde::de::Error::custom)
}

/// A list of devices: `cpu`, `cuda:N`, or `all` (every GPU `gpus` counts; none is an error),
/// each device once, in the order given.
pub(crate) fn parse_devices(
    values: &[String],
    gpus: impl Fn() -> Result<u32, String>,
) -> Result<Vec<Device>, String> {
    let mut devices = Vec::new();
    for value in values {
        let found = if value.trim() == "all" {
            let n = gpus().map_err(|why| format!("devices \"all\": {why}"))?;
            if n == 0 {
                return Err("devices \"all\": NVML sees no GPU".into());
            }
            (0..n as i32).map(Device::Cuda).collect()
        } else {
            vec![value.trim().parse::<Device>()?]
        };
        for d in found {
            if !devices.contains(&d) {
                devices.push(d);
            }
        }
    }
    Ok(devices)
}

fn devices_setting<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Device>, D::Error> {
    let values = Vec::<String>::deserialize(d)?;
    parse_devices(&values, facecast_gpu::nvml::gpu_count).map_err(serde::de::Error::custom)
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

impl Config {
    /// Loads `path` (if it exists; a path given explicitly must exist), then the environment.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let default_path = Path::new("configs/facecast.toml");
        let (path, required) = match path {
            Some(p) => (p, true),
            None => (default_path, false),
        };
        let mut config = match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .with_context(|| format!("invalid configuration in {}", path.display()))?,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// Applies `FACECAST_*` overrides read through `var`.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        if let Some(v) = var("FACECAST_LISTEN") {
            self.listen = v.parse().with_context(|| {
                format!("FACECAST_LISTEN={v} is not an address like 127.0.0.1:8080")
            })?;
        }
        if let Some(v) = var("FACECAST_MAX_SESSIONS") {
            self.max_sessions = v
                .parse()
                .with_context(|| format!("FACECAST_MAX_SESSIONS={v} is not a number"))?;
        }
        if let Some(v) = var("FACECAST_IDLE_TIMEOUT_SECS") {
            self.idle_timeout_secs = v
                .parse()
                .with_context(|| format!("FACECAST_IDLE_TIMEOUT_SECS={v} is not a number"))?;
        }
        if let Some(v) = var("FACECAST_ALLOWED_ORIGINS") {
            self.allowed_origins = list(&v);
        }
        if let Some(v) = var("FACECAST_STUN_SERVERS") {
            self.ice.stun_servers = list(&v);
        }
        if let Some(v) = var("FACECAST_TURN_SERVERS") {
            self.ice.turn_servers = list(&v);
        }
        if let Some(v) = var("FACECAST_VIDEO_CODEC") {
            self.video.codec = v.parse().context("FACECAST_VIDEO_CODEC")?;
        }
        if let Some(v) = var("FACECAST_WEB_DIR") {
            self.web_dir = PathBuf::from(v);
        }
        if let Some(v) = var("FACECAST_MODELS_DIR") {
            self.models_dir = PathBuf::from(v);
        }
        if let Some(v) = var("FACECAST_MAX_OUTPUTS_PER_SESSION") {
            self.outputs.max_outputs_per_session = v
                .parse()
                .with_context(|| format!("FACECAST_MAX_OUTPUTS_PER_SESSION={v} is not a number"))?;
        }
        if let Some(v) = var("FACECAST_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = var("FACECAST_WAV2LIP_MODEL") {
            self.lipsync.model = Some(PathBuf::from(v)).filter(|p| !p.as_os_str().is_empty());
        }
        if let Some(v) = var("FACECAST_DEVICE") {
            self.lipsync.device = parse_device(&v, facecast_gpu::nvml::gpu_count)
                .map_err(anyhow::Error::msg)
                .context("FACECAST_DEVICE")?;
        }
        if let Some(v) = var("FACECAST_DEVICES") {
            self.lipsync.devices = parse_devices(&list(&v), facecast_gpu::nvml::gpu_count)
                .map_err(anyhow::Error::msg)
                .context("FACECAST_DEVICES")?;
        }
        if let Some(v) = var("FACECAST_LLM_BASE_URL") {
            self.llm.base_url = Some(v).filter(|v| !v.is_empty());
        }
        if let Some(v) = var("FACECAST_LLM_MODEL") {
            self.llm.model = v;
        }
        if let Some(v) = var("FACECAST_TTS") {
            self.speech.engine = v.parse().context("FACECAST_TTS")?;
        }
        if let Some(v) = var("FACECAST_PIPER_VOICE") {
            self.speech.piper_voice = v;
        }
        if let Some(v) = var("FACECAST_REDIS_URL") {
            self.llm.redis_url = Some(v).filter(|v| !v.is_empty());
        }
        if let Some(v) = var("FACECAST_ASR_BASE_URL") {
            self.asr.base_url = Some(v).filter(|v| !v.is_empty());
        }
        if let Some(v) = var("FACECAST_ASR_MODEL") {
            self.asr.model = v;
        }
        if let Some(v) = var("ORT_DYLIB_PATH") {
            self.lipsync.onnxruntime.get_or_insert(PathBuf::from(v));
        }
        Ok(())
    }

    fn validate(&self) -> anyhow::Result<()> {
        let v = &self.video;
        anyhow::ensure!(
            (64..=4096).contains(&v.width) && (64..=4096).contains(&v.height),
            "video size {}x{} is outside 64..4096",
            v.width,
            v.height
        );
        anyhow::ensure!(
            (1..=60).contains(&v.fps),
            "video fps {} is outside 1..60",
            v.fps
        );
        anyhow::ensure!(self.max_sessions > 0, "max_sessions must be at least 1");
        let l = &self.lipsync;
        anyhow::ensure!(
            l.max_load > 0.0 && l.max_load <= 1.0,
            "lipsync.max_load {} is outside (0, 1]",
            l.max_load
        );
        anyhow::ensure!(
            l.capacity_fps.is_none_or(|c| c > 0.0),
            "lipsync.capacity_fps must be above 0 (or left out)"
        );
        let o = &self.outputs;
        anyhow::ensure!(
            (1..=60).contains(&o.keyframe_interval_secs),
            "outputs.keyframe_interval_secs {} is outside 1..60",
            o.keyframe_interval_secs
        );
        anyhow::ensure!(
            o.reconnect_initial_ms > 0 && o.reconnect_initial_ms <= o.reconnect_max_ms,
            "outputs.reconnect_initial_ms must be above 0 and at most reconnect_max_ms"
        );
        anyhow::ensure!(
            (1..=256).contains(&self.lipsync.batch_size),
            "lipsync.batch_size {} is outside 1..256",
            self.lipsync.batch_size
        );
        anyhow::ensure!(
            (1..=2).contains(&self.lipsync.workers),
            "lipsync.workers {} is outside 1..2",
            self.lipsync.workers
        );
        Ok(())
    }

    /// Where recordings are written (`recordings/` in the data folder).
    pub fn recordings_dir(&self) -> PathBuf {
        self.data_dir.join("recordings")
    }

    /// The voice activity model's full path.
    pub fn vad_model(&self) -> PathBuf {
        facecast_onnx::find_model(&self.voice_input.vad_model, &self.models_dir)
    }

    /// The lip-sync model's full path, when one is configured.
    pub fn wav2lip_model(&self) -> Option<PathBuf> {
        self.lipsync
            .model
            .as_deref()
            .map(|m| facecast_onnx::find_model(m, &self.models_dir))
    }

    /// The devices photo-avatar sessions are placed on: `devices`, else `device` alone.
    pub fn lipsync_devices(&self) -> Vec<Device> {
        if self.lipsync.devices.is_empty() {
            vec![self.lipsync.device]
        } else {
            self.lipsync.devices.clone()
        }
    }

    /// The lip-sync model's input and output names (defaults where not configured).
    pub fn wav2lip_io(&self) -> ModelIoKey {
        let l = &self.lipsync;
        let d = ModelIoKey::default();
        ModelIoKey {
            mel: l.mel_input.clone().unwrap_or(d.mel),
            face: l.face_input.clone().unwrap_or(d.face),
            output: l.output_name.clone().unwrap_or(d.output),
        }
    }

    /// Whether to gather loopback ICE candidates.
    pub fn ice_loopback(&self) -> bool {
        self.ice
            .loopback
            .unwrap_or_else(|| self.listen.ip().is_loopback())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_environment() {
        let mut c: Config = toml::from_str("max_sessions = 3\n[video]\nwidth = 256\n").unwrap();
        assert_eq!(
            (c.max_sessions, c.video.width, c.video.height),
            (3, 256, 512)
        );
        c.apply_env(|k| match k {
            "FACECAST_LISTEN" => Some("127.0.0.1:9000".into()),
            "FACECAST_STUN_SERVERS" => Some("stun://a:3478, stun://b:3478".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.ice.stun_servers.len(), 2);
        assert!(c.ice_loopback());
        assert!(c
            .apply_env(|k| (k == "FACECAST_MAX_SESSIONS").then(|| "many".into()))
            .is_err());
        assert!(toml::from_str::<Config>("listen_port = 1").is_err());
    }

    #[test]
    fn several_devices_are_listed_once_each_and_all_means_every_gpu() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_devices(&s(&["cuda:1", "cuda:0", "cuda:1"]), || unreachable!()),
            Ok(vec![Device::Cuda(1), Device::Cuda(0)])
        );
        assert_eq!(
            parse_devices(&s(&["all"]), || Ok(3)),
            Ok(vec![Device::Cuda(0), Device::Cuda(1), Device::Cuda(2)])
        );
        assert!(parse_devices(&s(&["all"]), || Ok(0)).is_err());
        assert!(parse_devices(&s(&["cuda:x"]), || Ok(1)).is_err());
        let c: Config = toml::from_str("[lipsync]\ndevices = [\"cpu\"]\n").unwrap();
        assert_eq!(c.lipsync_devices(), [Device::Cpu]);
        assert_eq!(Config::default().lipsync_devices(), [Device::Cpu]);
        let mut c = Config::default();
        c.apply_env(|k| (k == "FACECAST_DEVICES").then(|| "cuda:0, cuda:2".to_string()))
            .unwrap();
        assert_eq!(c.lipsync_devices(), [Device::Cuda(0), Device::Cuda(2)]);
    }

    #[test]
    fn device_auto_takes_the_first_gpu_else_the_cpu() {
        assert_eq!(parse_device("auto", || Ok(2)), Ok(Device::Cuda(0)));
        assert_eq!(parse_device("auto", || Ok(0)), Ok(Device::Cpu));
        assert_eq!(
            parse_device("auto", || Err("NVML is not usable".into())),
            Ok(Device::Cpu)
        );
        assert_eq!(
            parse_device("cuda:3", || unreachable!()),
            Ok(Device::Cuda(3))
        );
        assert!(parse_device("tpu", || Ok(1)).is_err());
        // This machine's own answer, through the configuration file.
        let c: Config = toml::from_str("[lipsync]\ndevice = \"auto\"\n").unwrap();
        let gpus = facecast_gpu::nvml::gpu_count().unwrap_or(0);
        let want = if gpus > 0 {
            Device::Cuda(0)
        } else {
            Device::Cpu
        };
        assert_eq!(c.lipsync.device, want);
    }
}
