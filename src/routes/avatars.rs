//! `/api/v1/avatars`: register (multipart upload), list, inspect and delete avatars.
//!
//! `POST /api/v1/avatars` takes `multipart/form-data` with `name`, `file` (a photo or a video
//! loop) and optionally `face_box` (`x,y,w,h`) and `replace` (`true`). The upload is written to
//! a temporary file next to the avatars, registered on a blocking thread (decoding and face
//! detection take a while for videos), and removed again whatever happens.

use super::{reject, with_state, State};
use crate::error::ApiError;
use bytes::Buf;
use facecast_avatars::registration::detect::YUNET_FILE;
use facecast_avatars::registration::{register, RegisterOptions};
use facecast_avatars::store::AvatarStore;
use facecast_avatars::{AvatarInfo, SourceKind};
use facecast_common::Rect;
use futures_util::StreamExt;
use serde::Serialize;
use std::io::Write;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

#[derive(Serialize)]
pub struct AvatarView {
    name: String,
    kind: &'static str,
    width: u32,
    height: u32,
    frames: Option<usize>,
    fps: Option<f64>,
    detector: String,
    created_unix: u64,
    face: Option<[u32; 4]>,
}

impl AvatarView {
    fn new(info: &AvatarInfo) -> Self {
        Self {
            name: info.name.clone(),
            kind: match info.kind {
                SourceKind::Image => "image",
                SourceKind::Video => "video",
            },
            width: info.width,
            height: info.height,
            frames: None,
            fps: (info.fps.0 > 0 && info.fps.1 > 0).then(|| info.fps.0 as f64 / info.fps.1 as f64),
            detector: info.detector.clone(),
            created_unix: info.created_unix,
            face: None,
        }
    }
}

/// Runs a store call (file reads, decoding) on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, Rejection> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| {
            reject(ApiError::internal(format!(
                "avatar store call stopped: {e}"
            )))
        })?
        .map_err(reject)
}

pub fn routes(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let list = warp::path!("api" / "v1" / "avatars")
        .and(warp::get())
        .and_then(|| async {
            let views = blocking(|| {
                let avatars = AvatarStore::global().list()?;
                Ok(avatars.iter().map(AvatarView::new).collect::<Vec<_>>())
            })
            .await?;
            Ok::<_, Rejection>(warp::reply::json(&views))
        });
    let get = warp::path!("api" / "v1" / "avatars" / String)
        .and(warp::get())
        .and_then(|name: String| async move {
            let view = blocking(move || {
                let avatar = AvatarStore::global().get(&name)?;
                let mut view = AvatarView::new(&avatar.info);
                view.frames = Some(avatar.frame_count());
                view.face = avatar
                    .faces
                    .first()
                    .map(|f| [f.face.x, f.face.y, f.face.w, f.face.h]);
                Ok(view)
            })
            .await?;
            Ok::<_, Rejection>(warp::reply::json(&view))
        });
    let delete = warp::path!("api" / "v1" / "avatars" / String)
        .and(warp::delete())
        .and_then(|name: String| async move {
            blocking(move || Ok(AvatarStore::global().remove(&name)?)).await?;
            Ok::<_, Rejection>(StatusCode::NO_CONTENT)
        });
    let limit = state.config.max_upload_bytes;
    let add = warp::path!("api" / "v1" / "avatars")
        .and(warp::post())
        .and(warp::multipart::form().max_length(limit))
        .and(with_state(state))
        .and_then(|form: warp::multipart::FormData, state: State| async move {
            add(form, state).await.map_err(reject)
        });
    list.or(get).or(delete).or(add)
}

/// The parts of an upload form.
#[derive(Default)]
struct Upload {
    name: Option<String>,
    face_box: Option<Rect>,
    replace: bool,
    file: Option<tempfile::NamedTempFile>,
}

async fn read_form(
    mut form: warp::multipart::FormData,
    dir: &std::path::Path,
) -> Result<Upload, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_upload", m);
    let mut upload = Upload::default();
    while let Some(part) = form.next().await {
        let part = part.map_err(|e| bad(format!("malformed multipart body: {e}")))?;
        let field = part.name().to_owned();
        let mut stream = part.stream();
        if field == "file" {
            std::fs::create_dir_all(dir)
                .map_err(|e| ApiError::internal(format!("cannot create {}: {e}", dir.display())))?;
            let mut file = tempfile::Builder::new()
                .prefix(".upload-")
                .tempfile_in(dir)
                .map_err(|e| ApiError::internal(format!("cannot store the upload: {e}")))?;
            while let Some(chunk) = stream.next().await {
                let mut chunk = chunk.map_err(|e| bad(format!("upload interrupted: {e}")))?;
                while chunk.has_remaining() {
                    let bytes = chunk.chunk();
                    file.write_all(bytes)
                        .map_err(|e| ApiError::internal(format!("cannot store the upload: {e}")))?;
                    let n = bytes.len();
                    chunk.advance(n);
                }
            }
            upload.file = Some(file);
        } else {
            let mut text = Vec::new();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| bad(format!("upload interrupted: {e}")))?;
                text.extend_from_slice(chunk.chunk());
                if text.len() > 1024 {
                    return Err(bad(format!("field '{field}' is too long")));
                }
            }
            let text = String::from_utf8(text)
                .map_err(|_| bad(format!("field '{field}' is not UTF-8")))?;
            match field.as_str() {
                "name" => upload.name = Some(text.trim().to_owned()),
                "replace" => upload.replace = matches!(text.trim(), "true" | "1" | "yes"),
                "face_box" => {
                    let v: Vec<u32> = text
                        .split(',')
                        .map(|p| p.trim().parse())
                        .collect::<Result<_, _>>()
                        .map_err(|_| bad("face_box: expected x,y,w,h".into()))?;
                    let [x, y, w, h] = v[..] else {
                        return Err(bad("face_box: expected x,y,w,h".into()));
                    };
                    upload.face_box = Some(Rect::new(x, y, w, h));
                }
                other => {
                    return Err(bad(format!(
                        "unknown field '{other}' (expected name, file, face_box, replace)"
                    )))
                }
            }
        }
    }
    Ok(upload)
}

async fn add(form: warp::multipart::FormData, state: State) -> Result<impl Reply, ApiError> {
    let store = AvatarStore::global();
    let upload = read_form(form, store.dir()).await?;
    let name = upload
        .name
        .ok_or_else(|| ApiError::bad_request("invalid_upload", "the form needs a 'name' field"))?;
    let file = upload.file.ok_or_else(|| {
        ApiError::bad_request(
            "invalid_upload",
            "the form needs a 'file' field (a photo or video)",
        )
    })?;
    let detector =
        facecast_onnx::find_model(std::path::Path::new(YUNET_FILE), &state.config.models_dir);
    let mut options = RegisterOptions::new(&name, file.path(), &detector);
    options.face_box = upload.face_box;
    options.replace = upload.replace;
    let result = tokio::task::spawn_blocking(move || {
        let result = register(AvatarStore::global(), &options, &mut |_, _| {});
        drop(file); // removes the upload
        result
    })
    .await
    .map_err(|e| ApiError::internal(format!("registration stopped: {e}")))?;
    let reg = result?;
    #[derive(Serialize)]
    struct Registered {
        #[serde(flatten)]
        avatar: AvatarView,
        /// The decoder that read the upload (`nvh264dec` where NVDEC ranks first).
        decoder: String,
        warnings: Vec<String>,
    }
    let mut avatar = AvatarView::new(&reg.info);
    avatar.frames = Some(reg.frames);
    Ok(warp::reply::with_status(
        warp::reply::json(&Registered {
            avatar,
            decoder: reg.decoder,
            warnings: reg.warnings,
        }),
        StatusCode::CREATED,
    ))
}
