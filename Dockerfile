# facecast on Debian 12 with the distribution's GStreamer 1.22.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY scripts/install-deps.sh scripts/
RUN ./scripts/install-deps.sh
COPY . .
RUN cargo build --release --workspace

FROM debian:12-slim
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends \
      gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
      gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools gstreamer1.0-nice libespeak-ng1 espeak-ng-data \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/facecast /usr/local/bin/facecast
COPY --from=build /src/target/release/libgstfacecast*.so /usr/local/lib/gstreamer-1.0/
COPY pipelines /usr/share/facecast/pipelines
COPY web /usr/share/facecast/web
COPY configs /etc/facecast
ENV GST_PLUGIN_PATH=/usr/local/lib/gstreamer-1.0 FACECAST_WEB_DIR=/usr/share/facecast/web
WORKDIR /work
ENTRYPOINT ["facecast"]
CMD ["serve", "--config", "/etc/facecast/facecast.toml"]
