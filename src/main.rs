//! `facecast`: a talking-avatar streaming toolkit built on GStreamer.
//!
//! The binary is thin: it parses arguments, sets up logging, initialises GStreamer, registers
//! facecast's elements statically (the same code `gst-launch-1.0` loads from the plugin files),
//! and runs one subcommand.

mod avatar;
mod bench;
mod config;
mod conversation;
mod error;
mod health;
mod metrics;
mod peers;
mod plugins;
mod recordings;
mod render;
mod routes;
mod selftest;
mod serve;
mod session;
mod signalling;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "facecast",
    version,
    about = "Talking-avatar video from text or speech"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve live avatar sessions: REST API, WHEP to browsers, events, the web client.
    Serve(serve::ServeArgs),
    /// Render text (spoken by the built-in TTS) or an audio file to an MP4 of the talking avatar.
    Render(render::RenderArgs),
    /// Register photo and video avatars (their face is found once and cached), list, delete.
    Avatar(avatar::AvatarArgs),
    /// Measure the per-frame cost of the avatar and lip-sync, and the TTS real-time factor.
    Bench(bench::BenchArgs),
    /// On a GPU server: check the lip-sync kernels against their CPU references, time them,
    /// and read the GPU through NVML.
    Selftest(selftest::SelftestArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FACECAST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = gst::init()
        .map_err(anyhow::Error::from)
        .and_then(|_| plugins::register())
        .and_then(|_| match cli.command {
            Command::Serve(args) => serve::run(args),
            Command::Render(args) => render::run(args),
            Command::Avatar(args) => avatar::run(args),
            Command::Bench(args) => bench::run(args),
            Command::Selftest(args) => selftest::run(args),
        });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
