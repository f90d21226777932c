//! Where an output goes, from the URL a client gave: an RTMP(S) server, an SRT peer, or a
//! recording file. Pure (no GStreamer), unit-tested.
//!
//! An output URL is a secret: a stream key in an RTMP path, a `streamid` or `passphrase` in an
//! SRT query, a password in the user part. [`Target::redacted`] is the only form of it that
//! may be shown (API answers, events, logs, metrics), and [`Target::scrub`] removes the
//! secrets from any text that might quote them (a GStreamer error message).

use std::fmt;

/// What kind of output it is (the `kind` label of its metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// FLV (H.264 + AAC) to an RTMP or RTMPS server, through `rtmp2sink`.
    Rtmp,
    /// MPEG-TS (H.264 + AAC) over SRT, caller or listener, through `srtsink`.
    Srt,
    /// A fragmented MP4 (H.264 + AAC) in the data folder.
    Record,
}

impl OutputKind {
    pub fn name(self) -> &'static str {
        match self {
            OutputKind::Rtmp => "rtmp",
            OutputKind::Srt => "srt",
            OutputKind::Record => "record",
        }
    }
}

/// A checked output destination.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: OutputKind,
    /// The URL as given (a secret), for the sink element; empty for recordings.
    url: String,
    redacted: String,
    /// The parts of `url` that must never be shown.
    secrets: Vec<String>,
}

/// Never prints the secret URL, even by accident in a `{:?}`.
impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Target({:?}, {})", self.kind, self.redacted)
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("malformed output URL: {0}")]
    Malformed(String),
    #[error("unsupported output URL scheme '{0}': use rtmp://, rtmps:// or srt://")]
    Scheme(String),
    #[error("{0}")]
    Incomplete(&'static str),
}

const HIDDEN: &str = "***";

/// SRT query parameters that are settings, not secrets.
const SRT_SETTINGS: &[&str] = &["mode", "latency", "localaddress", "localport", "pbkeylen"];

impl Target {
    /// Checks an output URL: `rtmp://host[:port]/app/key`, `rtmps://…`, or
    /// `srt://host:port[?mode=caller|listener|rendezvous&streamid=…&passphrase=…&latency=…]`.
    pub fn parse(raw: &str) -> Result<Target, TargetError> {
        let raw = raw.trim();
        let url = url::Url::parse(raw).map_err(|e| {
            // The parser's message never quotes the input.
            TargetError::Malformed(e.to_string())
        })?;
        let host = url.host_str().filter(|h| !h.is_empty());
        let mut secrets = Vec::new();
        if !url.username().is_empty() {
            secrets.push(url.username().to_owned());
        }
        if let Some(p) = url.password() {
            secrets.push(p.to_owned());
        }
        // A fragment is not sent anywhere, but may hold a pasted secret: never shown.
        let fragment = match url.fragment() {
            Some(f) if !f.is_empty() => {
                secrets.push(f.to_owned());
                format!("#{HIDDEN}")
            }
            _ => String::new(),
        };
        let kind = match url.scheme() {
            "rtmp" | "rtmps" => OutputKind::Rtmp,
            "srt" => OutputKind::Srt,
            other => return Err(TargetError::Scheme(other.to_owned())),
        };
        let host = host.ok_or(TargetError::Incomplete("the output URL has no host"))?;
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        let userinfo = if secrets.is_empty() {
            String::new()
        } else {
            format!("{HIDDEN}@")
        };
        let redacted = match kind {
            OutputKind::Rtmp => {
                let segments: Vec<&str> = url
                    .path_segments()
                    .map(|s| s.filter(|s| !s.is_empty()).collect())
                    .unwrap_or_default();
                if segments.len() < 2 {
                    return Err(TargetError::Incomplete(
                        "an RTMP URL needs an application and a stream key: rtmp://host/app/key",
                    ));
                }
                // The last segment is the stream key; everything after the path too.
                let (key, app) = segments.split_last().expect("two segments or more");
                secrets.push((*key).to_owned());
                if let Some(q) = url.query().filter(|q| !q.is_empty()) {
                    secrets.push(q.to_owned());
                }
                format!(
                    "{}://{userinfo}{host}{port}/{}/{HIDDEN}{fragment}",
                    url.scheme(),
                    app.join("/")
                )
            }
            OutputKind::Srt => {
                if url.port().is_none() {
                    return Err(TargetError::Incomplete(
                        "an SRT URL needs a port: srt://host:port",
                    ));
                }
                let mut shown = Vec::new();
                for (k, v) in url.query_pairs() {
                    if k == "mode" && !["caller", "listener", "rendezvous"].contains(&v.as_ref()) {
                        return Err(TargetError::Incomplete(
                            "SRT mode must be caller, listener or rendezvous",
                        ));
                    }
                    if SRT_SETTINGS.contains(&k.as_ref()) {
                        shown.push(format!("{k}={v}"));
                    } else {
                        if !v.is_empty() {
                            secrets.push(v.to_string());
                        }
                        shown.push(format!("{k}={HIDDEN}"));
                    }
                }
                let query = if shown.is_empty() {
                    String::new()
                } else {
                    format!("?{}", shown.join("&"))
                };
                format!("srt://{userinfo}{host}{port}{query}{fragment}")
            }
            OutputKind::Record => unreachable!("recordings have no URL"),
        };
        // Longest first, so that a secret containing another is removed whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Ok(Target {
            kind,
            url: raw.to_owned(),
            redacted,
            secrets,
        })
    }

    /// A recording in the data folder.
    pub fn record() -> Target {
        Target {
            kind: OutputKind::Record,
            url: String::new(),
            redacted: String::new(),
            secrets: Vec::new(),
        }
    }

    /// The URL with its secrets replaced by `***` (empty for recordings).
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The URL itself, for the sink element only.
    pub(super) fn secret_url(&self) -> &str {
        &self.url
    }

    /// `text` with the URL and each of its secrets replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = if self.url.is_empty() {
            text.to_owned()
        } else {
            text.replace(&self.url, &self.redacted)
        };
        for s in &self.secrets {
            out = out.replace(s.as_str(), HIDDEN);
            // Elements may quote a secret percent-encoded or decoded.
            let decoded = url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            if !decoded.is_empty() && decoded != *s {
                out = out.replace(decoded.as_str(), HIDDEN);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtmp_keys_are_hidden() {
        let t = Target::parse("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl").unwrap();
        assert_eq!(t.kind, OutputKind::Rtmp);
        assert_eq!(t.redacted(), "rtmp://a.rtmp.youtube.com/live2/***");
        let t =
            Target::parse("rtmps://user:pw@live.example.com:443/app/sub/KEY123?token=x9z").unwrap();
        assert_eq!(t.redacted(), "rtmps://***@live.example.com:443/app/sub/***");
        let message = "Failed to connect to rtmps://user:pw@live.example.com:443/app/sub/KEY123?token=x9z: refused; stream KEY123";
        let scrubbed = t.scrub(message);
        for secret in ["KEY123", "pw@", "x9z", "user:"] {
            assert!(!scrubbed.contains(secret), "{scrubbed}");
        }
        assert!(scrubbed.contains("live.example.com"), "{scrubbed}");
    }

    #[test]
    fn srt_settings_stay_and_secrets_go() {
        let t = Target::parse("srt://127.0.0.1:9000?mode=listener&latency=120&streamid=%23!::r=live/key,m=publish&passphrase=longsecret123").unwrap();
        assert_eq!(t.kind, OutputKind::Srt);
        assert_eq!(
            t.redacted(),
            "srt://127.0.0.1:9000?mode=listener&latency=120&streamid=***&passphrase=***"
        );
        assert_eq!(
            t.scrub("bad passphrase longsecret123"),
            "bad passphrase ***"
        );
        assert!(Target::parse("srt://127.0.0.1:9000?mode=sideways").is_err());
        assert!(matches!(
            Target::parse("srt://127.0.0.1"),
            Err(TargetError::Incomplete(_))
        ));
    }

    #[test]
    fn bad_urls_are_refused_without_quoting_them() {
        assert!(matches!(
            Target::parse("http://example.com/live/key"),
            Err(TargetError::Scheme(s)) if s == "http"
        ));
        assert!(matches!(
            Target::parse("rtmp://example.com/onlyapp"),
            Err(TargetError::Incomplete(_))
        ));
        let e = Target::parse("not a url with secretkey").unwrap_err();
        assert!(!e.to_string().contains("secretkey"), "{e}");
        assert!(Target::parse("rtmp:///live/key").is_err());
    }

    #[test]
    fn debug_never_shows_the_key() {
        let t = Target::parse("rtmp://h/live/topsecret").unwrap();
        assert!(!format!("{t:?}").contains("topsecret"));
    }
}
