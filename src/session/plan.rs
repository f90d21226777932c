//! From a create request to what the session will be: the avatar, the lip-sync engine, the
//! speech engine and voice, the persona and the conversation. Pure (no files, no GStreamer),
//! so every rule is unit-tested here; the registry does the lookups around it (the avatar in
//! the store before, the voice after) and then builds.
//!
//! Strings from the wire become enums here and stay enums from here on.

use super::output::{Target, TargetError};
use gstfacecastlipsync::EngineKind;
use gstfacecasttts::SpeechEngine;
use serde::Deserialize;
use std::collections::HashMap;

/// `POST /api/v1/sessions` body: every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    pub avatar: Option<String>,
    /// `viseme` or `wav2lip`; default: wav2lip for registered avatars, viseme for the built-in one.
    pub engine: Option<String>,
    /// espeak-ng voice, or with `tts: piper` a Piper voice name.
    pub voice: Option<String>,
    pub lang: Option<String>,
    /// Who speaks: `espeak` or `piper`; default: the configuration's `speech.engine`.
    pub tts: Option<String>,
    /// The assistant's system prompt for this session (else the avatar's or the default).
    pub persona: Option<String>,
    /// Continue this conversation (remembered in Redis under this name); default: a new one,
    /// named after the session.
    pub conversation: Option<String>,
    /// What a published voice is: `converse` (a person talking to the assistant, the
    /// default) or `drive` (the avatar's own voice, lip-synced live).
    pub listen: Option<String>,
    /// Outputs started with the session: `{"url": "rtmp://…"}` (or the URL alone), or
    /// `{"record": true}`.
    #[serde(default)]
    pub outputs: Vec<OutputRequest>,
    /// Record the session from its start (the same as `{"record": true}` in `outputs`).
    #[serde(default)]
    pub record: bool,
}

/// One output asked for: a URL to push to, or a recording.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(from = "OutputSpec")]
pub struct OutputRequest {
    pub url: Option<String>,
    pub record: bool,
}

/// The two ways to write an output request.
#[derive(Deserialize)]
#[serde(untagged)]
enum OutputSpec {
    Url(String),
    Fields(OutputFields),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputFields {
    url: Option<String>,
    #[serde(default)]
    record: bool,
}

impl From<OutputSpec> for OutputRequest {
    fn from(spec: OutputSpec) -> Self {
        match spec {
            OutputSpec::Url(url) => OutputRequest {
                url: Some(url),
                record: false,
            },
            OutputSpec::Fields(OutputFields { url, record }) => OutputRequest { url, record },
        }
    }
}

impl OutputRequest {
    /// The checked destination: a URL, or a recording; not both, not neither.
    pub fn target(&self) -> Result<Target, PlanError> {
        match (&self.url, self.record) {
            (Some(url), false) => Target::parse(url).map_err(PlanError::Output),
            (None, true) => Ok(Target::record()),
            _ => Err(PlanError::OutputRequest),
        }
    }
}

/// What a session does with the voice published to it (WHIP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListenMode {
    /// A person talks to the assistant: voice activity, recognition, turns, barge-in.
    #[default]
    Converse,
    /// The voice is the avatar's own: it drives the lips and is what viewers hear.
    Drive,
}

impl ListenMode {
    pub fn name(self) -> &'static str {
        match self {
            ListenMode::Converse => "converse",
            ListenMode::Drive => "drive",
        }
    }
}

impl std::str::FromStr for ListenMode {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "converse" => Ok(ListenMode::Converse),
            "drive" => Ok(ListenMode::Drive),
            _ => Err(()),
        }
    }
}

/// The name of the built-in parametric face.
pub const BUILTIN_AVATAR: &str = "default";

/// Which face a session shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AvatarChoice {
    /// The parametric face, drawn at the configured size.
    Builtin,
    /// A registered photo or video avatar, shown at its own size.
    Registered {
        name: String,
        width: u32,
        height: u32,
    },
}

impl AvatarChoice {
    pub fn name(&self) -> &str {
        match self {
            AvatarChoice::Builtin => BUILTIN_AVATAR,
            AvatarChoice::Registered { name, .. } => name,
        }
    }
}

/// What a session is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionPlan {
    pub avatar: AvatarChoice,
    pub engine: EngineKind,
    pub lang: String,
    pub tts: SpeechEngine,
    /// The voice asked for (an espeak-ng voice, a Piper voice name or path); `None`: the
    /// language's (espeak) or the configured one (Piper).
    pub voice: Option<String>,
    /// This session's own persona: its request's, else its avatar's.
    pub persona: Option<String>,
    /// The conversation to continue; `None`: a new one named after the session.
    pub conversation: Option<String>,
    pub listen: ListenMode,
    /// Outputs to start with it.
    pub outputs: Vec<Target>,
}

/// What the plan needs to know of the server.
pub struct PlanContext<'a> {
    pub default_lang: &'a str,
    pub default_tts: SpeechEngine,
    /// Whether a Wav2Lip model is configured.
    pub has_lipsync_model: bool,
    pub max_persona_chars: usize,
    /// Avatars' own personas (avatar name → text).
    pub avatar_personas: Option<&'a HashMap<String, String>>,
    pub max_outputs: usize,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    #[error("unknown engine '{0}' (expected viseme or wav2lip)")]
    UnknownEngine(String),
    #[error("engine wav2lip needs a Wav2Lip ONNX model: set lipsync.model in the configuration or FACECAST_WAV2LIP_MODEL (see README, 'Photo and video avatars')")]
    NoLipsyncModel,
    #[error("the viseme engine draws only the built-in face; photo and video avatars talk with engine wav2lip")]
    EngineMismatch,
    #[error("unknown tts '{0}' (expected espeak or piper)")]
    UnknownTts(String),
    #[error("persona is longer than {0} characters")]
    PersonaTooLong(usize),
    #[error("conversation must be 1 to 128 characters of letters, digits, '-', '_', '.' or ':'")]
    BadConversation,
    #[error("unknown listen '{0}' (expected converse or drive)")]
    UnknownListen(String),
    #[error(transparent)]
    Output(TargetError),
    #[error("an output is either {{\"url\": \"rtmp://…\" | \"srt://…\"}} or {{\"record\": true}}")]
    OutputRequest,
    #[error("a session has at most {0} outputs (outputs.max_outputs_per_session)")]
    TooManyOutputs(usize),
}

/// Decides what `req` builds. `registered` is the size of the requested avatar when it is a
/// registered one (the registry looked it up); `None` for the built-in face.
pub fn plan(
    req: CreateSession,
    registered: Option<(u32, u32)>,
    ctx: &PlanContext,
) -> Result<SessionPlan, PlanError> {
    let name = req.avatar.unwrap_or_else(|| BUILTIN_AVATAR.into());
    let avatar = match registered {
        Some((width, height)) => AvatarChoice::Registered {
            name,
            width,
            height,
        },
        None => AvatarChoice::Builtin,
    };
    let is_registered = matches!(avatar, AvatarChoice::Registered { .. });
    let engine = match req.engine.as_deref() {
        None if is_registered => EngineKind::Wav2lip,
        None => EngineKind::Viseme,
        Some(e) => e
            .parse()
            .map_err(|_| PlanError::UnknownEngine(e.to_owned()))?,
    };
    if engine == EngineKind::Wav2lip && !ctx.has_lipsync_model {
        return Err(PlanError::NoLipsyncModel);
    }
    if engine == EngineKind::Viseme && is_registered {
        return Err(PlanError::EngineMismatch);
    }
    let tts = match req.tts.as_deref() {
        None => ctx.default_tts,
        Some(t) => t.parse().map_err(|_| PlanError::UnknownTts(t.to_owned()))?,
    };
    if req
        .persona
        .as_ref()
        .is_some_and(|p| p.chars().count() > ctx.max_persona_chars)
    {
        return Err(PlanError::PersonaTooLong(ctx.max_persona_chars));
    }
    let persona = req
        .persona
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .or_else(|| ctx.avatar_personas?.get(avatar.name()).cloned());
    if let Some(name) = &req.conversation {
        let fits = (1..=128).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
        if !fits {
            return Err(PlanError::BadConversation);
        }
    }
    let listen = match req.listen.as_deref() {
        None => ListenMode::default(),
        Some(l) => l
            .parse()
            .map_err(|_| PlanError::UnknownListen(l.to_owned()))?,
    };
    let mut outputs = req
        .outputs
        .iter()
        .map(OutputRequest::target)
        .collect::<Result<Vec<_>, _>>()?;
    if req.record {
        outputs.push(Target::record());
    }
    if outputs.len() > ctx.max_outputs {
        return Err(PlanError::TooManyOutputs(ctx.max_outputs));
    }
    Ok(SessionPlan {
        avatar,
        engine,
        lang: req.lang.unwrap_or_else(|| ctx.default_lang.to_owned()),
        tts,
        voice: req.voice,
        persona,
        conversation: req.conversation,
        listen,
        outputs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(has_model: bool) -> PlanContext<'static> {
        static PERSONAS: std::sync::LazyLock<HashMap<String, String>> =
            std::sync::LazyLock::new(|| {
                [("anna".to_owned(), "You are Anna.".to_owned())]
                    .into_iter()
                    .collect()
            });
        PlanContext {
            default_lang: "en",
            default_tts: SpeechEngine::Espeak,
            has_lipsync_model: has_model,
            max_persona_chars: 20,
            avatar_personas: Some(&PERSONAS),
            max_outputs: 2,
        }
    }

    #[test]
    fn defaults_give_the_builtin_face_with_visemes_and_espeak() {
        let p = plan(CreateSession::default(), None, &ctx(false)).unwrap();
        assert_eq!(
            p,
            SessionPlan {
                avatar: AvatarChoice::Builtin,
                engine: EngineKind::Viseme,
                lang: "en".into(),
                tts: SpeechEngine::Espeak,
                voice: None,
                persona: None,
                conversation: None,
                listen: ListenMode::Converse,
                outputs: vec![],
            }
        );
    }

    #[test]
    fn outputs_are_checked_before_anything_is_built() {
        let req: CreateSession = serde_json::from_str(
            r#"{"outputs": ["rtmp://h/live/key", {"url": "srt://h:9000?mode=listener"}], "record": false}"#,
        )
        .unwrap();
        let p = plan(req, None, &ctx(false)).unwrap();
        assert_eq!(p.outputs.len(), 2);
        let too_many: CreateSession = serde_json::from_str(
            r#"{"outputs": ["rtmp://h/live/a", "rtmp://h/live/b"], "record": true}"#,
        )
        .unwrap();
        assert_eq!(
            plan(too_many, None, &ctx(false)),
            Err(PlanError::TooManyOutputs(2))
        );
        let bad: CreateSession =
            serde_json::from_str(r#"{"outputs": ["http://h/live/key"]}"#).unwrap();
        assert!(matches!(
            plan(bad, None, &ctx(false)),
            Err(PlanError::Output(_))
        ));
        for neither in [
            r#"{"outputs": [{}]}"#,
            r#"{"outputs": [{"url": "rtmp://h/a/b", "record": true}]}"#,
        ] {
            let req: CreateSession = serde_json::from_str(neither).unwrap();
            assert_eq!(
                plan(req, None, &ctx(false)),
                Err(PlanError::OutputRequest),
                "{neither}"
            );
        }
        assert!(serde_json::from_str::<CreateSession>(r#"{"outputs": [{"uri": "x"}]}"#).is_err());
    }

    #[test]
    fn registered_avatars_talk_with_wav2lip_and_bring_their_persona() {
        let req = CreateSession {
            avatar: Some("anna".into()),
            ..Default::default()
        };
        let p = plan(req.clone(), Some((640, 480)), &ctx(true)).unwrap();
        assert_eq!(p.engine, EngineKind::Wav2lip);
        assert_eq!(
            p.avatar,
            AvatarChoice::Registered {
                name: "anna".into(),
                width: 640,
                height: 480
            }
        );
        assert_eq!(p.persona.as_deref(), Some("You are Anna."));
        // The request's own persona wins over the avatar's.
        let own = CreateSession {
            persona: Some("  Be brief. ".into()),
            ..req.clone()
        };
        let p = plan(own, Some((640, 480)), &ctx(true)).unwrap();
        assert_eq!(p.persona.as_deref(), Some("Be brief."));
        assert_eq!(
            plan(req.clone(), Some((640, 480)), &ctx(false)),
            Err(PlanError::NoLipsyncModel)
        );
        let viseme = CreateSession {
            engine: Some("viseme".into()),
            ..req
        };
        assert_eq!(
            plan(viseme, Some((640, 480)), &ctx(true)),
            Err(PlanError::EngineMismatch)
        );
    }

    #[test]
    fn strings_become_enums_or_clear_errors() {
        let with = |engine: Option<&str>, tts: Option<&str>| CreateSession {
            engine: engine.map(Into::into),
            tts: tts.map(Into::into),
            ..Default::default()
        };
        let p = plan(with(None, Some("piper")), None, &ctx(false)).unwrap();
        assert_eq!(p.tts, SpeechEngine::Piper);
        assert_eq!(
            plan(with(Some("magic"), None), None, &ctx(false)),
            Err(PlanError::UnknownEngine("magic".into()))
        );
        assert_eq!(
            plan(with(None, Some("festival")), None, &ctx(false)),
            Err(PlanError::UnknownTts("festival".into()))
        );
        let listen = |l: &str| CreateSession {
            listen: Some(l.into()),
            ..Default::default()
        };
        assert_eq!(
            plan(listen("drive"), None, &ctx(false)).unwrap().listen,
            ListenMode::Drive
        );
        assert_eq!(
            plan(listen("karaoke"), None, &ctx(false)),
            Err(PlanError::UnknownListen("karaoke".into()))
        );
        // wav2lip on the built-in face is allowed (it repaints it), given a model.
        let p = plan(with(Some("wav2lip"), None), None, &ctx(true)).unwrap();
        assert_eq!(p.engine, EngineKind::Wav2lip);
    }

    #[test]
    fn personas_and_conversation_names_are_checked() {
        let long = CreateSession {
            persona: Some("x".repeat(21)),
            ..Default::default()
        };
        assert_eq!(
            plan(long, None, &ctx(false)),
            Err(PlanError::PersonaTooLong(20))
        );
        for bad in ["", "../../etc", "a b", &"x".repeat(129)] {
            let req = CreateSession {
                conversation: Some(bad.into()),
                ..Default::default()
            };
            assert_eq!(
                plan(req, None, &ctx(false)),
                Err(PlanError::BadConversation),
                "{bad:?}"
            );
        }
        let ok = CreateSession {
            conversation: Some("tab-1:ada.2_x".into()),
            ..Default::default()
        };
        assert_eq!(
            plan(ok, None, &ctx(false)).unwrap().conversation.as_deref(),
            Some("tab-1:ada.2_x")
        );
    }
}
