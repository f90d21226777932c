# facecast: the two commands a new user needs are `make run` and `make test`.
# Both install the Debian packages the project needs first (scripts/install-deps.sh).

CARGO ?= cargo
RELEASE := target/release

.PHONY: deps build run demo test bench lint clean

deps:
	./scripts/install-deps.sh

build: deps
	$(CARGO) build --release --workspace

# Renders the default avatar saying hello to hello.mp4, then shows it live in a window when a
# display is available.
run: build
	$(RELEASE)/facecast render --text "Hello! I am your assistant. How can I help you today?" -o hello.mp4
	@if [ -n "$$DISPLAY$$WAYLAND_DISPLAY" ]; then ./scripts/launch.sh pipelines/text-to-window.pipeline; \
	 else echo "no display: open hello.mp4 in a video player"; fi

test: deps
	$(CARGO) test --workspace

# Benchmarks are run on purpose, pinned to one core for the per-core figures.
bench: build
	taskset -c 0 $(RELEASE)/facecast bench

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
