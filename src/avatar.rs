//! `facecast avatar`: register a photo or video as an avatar, list, inspect and delete them.
//!
//! Registration finds the face once (YuNet) and caches everything lip-sync needs, so sessions
//! and renders with `--avatar NAME` start without detecting anything.

use anyhow::{bail, Context};
use facecast_avatars::registration::detect::YUNET_FILE;
use facecast_avatars::registration::{register, RegisterOptions, Stage, DEFAULT_MAX_HEIGHT};
use facecast_avatars::store::AvatarStore;
use facecast_avatars::{AvatarInfo, SourceKind};
use facecast_common::Rect;
use facecast_onnx::{find_model, models_dir};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct AvatarArgs {
    #[command(subcommand)]
    command: AvatarCommand,
}

#[derive(clap::Subcommand, Debug)]
enum AvatarCommand {
    /// Register a photo or a video loop under a name.
    Add(AddArgs),
    /// List registered avatars.
    List,
    /// Delete a registered avatar.
    Rm { name: String },
}

#[derive(clap::Args, Debug)]
struct AddArgs {
    /// Name to register under: letters, digits, '_' and '-'.
    name: String,
    /// A photo with one frontal face (PNG, JPEG, …).
    #[arg(long, conflicts_with = "video", required_unless_present = "video")]
    image: Option<PathBuf>,
    /// A short video loop of the person (anything GStreamer decodes); it plays forwards and
    /// backwards while idle.
    #[arg(long)]
    video: Option<PathBuf>,
    /// Use this face box (x,y,w,h in pixels) instead of detecting one.
    #[arg(long, value_parser = parse_box)]
    face_box: Option<Rect>,
    /// Padding added to the face box: top,bottom,left,right (Wav2Lip's default: 0,10,0,0).
    #[arg(long, value_parser = parse_padding, default_value = "0,10,0,0")]
    padding: [i32; 4],
    /// Frames taller than this are scaled down.
    #[arg(long, default_value_t = DEFAULT_MAX_HEIGHT)]
    max_height: u32,
    /// The YuNet face detector: a path, or a file name in the models folder.
    #[arg(long, default_value = YUNET_FILE)]
    detector: PathBuf,
    /// Replace an avatar of the same name.
    #[arg(long)]
    replace: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

fn parse_numbers<const N: usize, T: std::str::FromStr>(
    s: &str,
    what: &str,
) -> Result<[T; N], String> {
    let parts: Vec<T> = s
        .split(',')
        .map(|p| p.trim().parse::<T>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{what}: expected {N} comma-separated numbers"))?;
    parts
        .try_into()
        .map_err(|_| format!("{what}: expected {N} comma-separated numbers"))
}

fn parse_box(s: &str) -> Result<Rect, String> {
    let [x, y, w, h] = parse_numbers::<4, u32>(s, "face box x,y,w,h")?;
    Ok(Rect::new(x, y, w, h))
}

fn parse_padding(s: &str) -> Result<[i32; 4], String> {
    parse_numbers::<4, i32>(s, "padding top,bottom,left,right")
}

pub fn run(args: AvatarArgs) -> anyhow::Result<()> {
    let store = AvatarStore::global();
    match args.command {
        AvatarCommand::Add(add) => add_avatar(store, add),
        AvatarCommand::List => {
            let avatars = store.list()?;
            if avatars.is_empty() {
                println!("no avatars registered in {}", store.dir().display());
            }
            for a in avatars {
                println!("{}", describe(&a));
            }
            Ok(())
        }
        AvatarCommand::Rm { name } => {
            store.remove(&name)?;
            println!("deleted avatar '{name}'");
            Ok(())
        }
    }
}

pub fn describe(a: &AvatarInfo) -> String {
    let kind = match a.kind {
        SourceKind::Image => "photo".to_owned(),
        SourceKind::Video => format!("video {}/{} fps", a.fps.0, a.fps.1),
    };
    format!(
        "{}\t{}x{}\t{}\tfaces by {}",
        a.name, a.width, a.height, kind, a.detector
    )
}

fn add_avatar(store: &AvatarStore, add: AddArgs) -> anyhow::Result<()> {
    let source = add.image.or(add.video).expect("clap requires one");
    if !source.is_file() {
        bail!("file not found: {}", source.display());
    }
    let detector = find_model(&add.detector, &models_dir());
    let mut options = RegisterOptions::new(&add.name, &source, &detector);
    options.face_box = add.face_box;
    options.padding = add.padding;
    options.max_height = add.max_height;
    options.replace = add.replace;

    let bar = if add.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len}")
            .expect("static template")
            .progress_chars("=> "),
    );
    let started = std::time::Instant::now();
    let result = register(store, &options, &mut |stage, n| match stage {
        Stage::Decoding => {
            bar.set_message("decoding");
            bar.set_position(n as u64);
        }
        Stage::Detecting { total } => {
            bar.set_message("finding the face");
            bar.set_length(total as u64);
            bar.set_position(n as u64);
        }
        Stage::Writing => bar.set_message("writing the cache"),
    })
    .with_context(|| format!("cannot register avatar '{}'", add.name));
    bar.finish_and_clear();
    let reg = result?;
    for w in &reg.warnings {
        eprintln!("warning: {w}");
    }
    let face = &store.get(&add.name)?.faces[0];
    println!(
        "registered '{}': {} frame(s) of {}x{} (decoded by {}), face at {},{} {}x{} (first frame), {} bytes in {} ({:.2} s)",
        reg.info.name,
        reg.frames,
        reg.info.width,
        reg.info.height,
        reg.decoder,
        face.face.x,
        face.face.y,
        face.face.w,
        face.face.h,
        reg.bytes,
        reg.path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
