# facecast: the two commands a new user needs are `make run` and `make test`.
# Both install the Debian packages the project needs first (scripts/install-deps.sh), and
# what photo avatars need at run time: ONNX Runtime and the face detector (scripts/fetch-runtime.sh).

CARGO ?= cargo
RELEASE := target/release

.PHONY: deps build run demo test bench lint clean

deps:
	./scripts/install-deps.sh

build: deps
	./scripts/fetch-runtime.sh
	$(CARGO) build --release --workspace

# Serves the default avatar: open http://127.0.0.1:8080 (FACECAST_LISTEN changes the address).
run: build
	$(RELEASE)/facecast serve

# Renders the default avatar saying hello to hello.mp4.
demo: build
	$(RELEASE)/facecast render --text "Hello! I am your assistant. How can I help you today?" -o hello.mp4

test: deps
	./scripts/fetch-test-assets.sh
	$(CARGO) test --workspace

# Benchmarks are run on purpose: per-frame cost pinned to one core, then the live server
# figures (say latency, concurrent sessions) on all cores.
bench: build
	taskset -c 0 $(RELEASE)/facecast bench
	$(RELEASE)/facecast bench --serve

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
