# The two commands of README.md: `make run` and `make test`. Both install what is missing
# (tools/deps.sh, apt-get), configure and build first.
BUILD ?= build
BUILD_TYPE ?= RelWithDebInfo
CMAKE_FLAGS ?=

.PHONY: all build deps test run reload restart asan fuzz clean

all: build

deps:
	@tools/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j2

test: build
	@tools/test.sh $(ARGS)

# `make run TLS=1`: the TLS proxy (tools/tls_proxy.sh) in front of every client-facing port too
run: build
	@CHATHOST_RUN_TLS=$(TLS) tools/run.sh

# For a running `make run`: every role reloads its scripts; one role (ROLE=chat2) restarts.
reload:
	@tools/run.sh reload

restart:
	@tools/run.sh restart $(ROLE)

# AddressSanitizer + UBSan build in build-asan/, with the whole suite run against it.
asan:
	@$(MAKE) --no-print-directory BUILD=build-asan BUILD_TYPE=Debug CMAKE_FLAGS=-DCHATHOST_ASAN=ON build
	@CHATHOST_BIN=$(CURDIR)/build-asan/chathost tools/test.sh $(ARGS)

# libFuzzer on the pure parsers (frame.c, http_parse.c) and the WebSocket path (the upgrade
# request, then wslay frames as the chat server reads them), FUZZ_SECONDS each (default 60).
FUZZ_SECONDS ?= 60
fuzz: deps
	@cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCHATHOST_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
	@cmake --build build-fuzz -j2 --target frame_fuzz http_fuzz ws_fuzz
	@mkdir -p build-fuzz/corpus/frame build-fuzz/corpus/http build-fuzz/corpus/ws
	build-fuzz/frame_fuzz -max_total_time=$(FUZZ_SECONDS) build-fuzz/corpus/frame
	build-fuzz/http_fuzz -max_total_time=$(FUZZ_SECONDS) build-fuzz/corpus/http
	build-fuzz/ws_fuzz -max_total_time=$(FUZZ_SECONDS) build-fuzz/corpus/ws

clean:
	rm -rf build build-asan build-fuzz
