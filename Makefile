# The two commands of README.md: `make run` and `make test`. Both install what is missing
# (tools/deps.sh, apt-get), configure and build first.
BUILD ?= build
BUILD_TYPE ?= RelWithDebInfo
CMAKE_FLAGS ?=

.PHONY: all build deps test run asan clean

all: build

deps:
	@tools/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j2

test: build
	@tools/test.sh $(ARGS)

run: build
	@tools/run.sh

# AddressSanitizer + UBSan build in build-asan/, with the whole suite run against it.
asan:
	@$(MAKE) --no-print-directory BUILD=build-asan BUILD_TYPE=Debug CMAKE_FLAGS=-DCHATHOST_ASAN=ON build
	@CHATHOST_BIN=$(CURDIR)/build-asan/chathost tools/test.sh $(ARGS)

clean:
	rm -rf build build-asan
