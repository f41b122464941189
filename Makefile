# Front door of vaultgemma-server. `make test` is what CI runs (.ci/run).
#   make demo     deps + build, then the server on a random demo model and one streamed generation
#   make serve    MODEL=google/vaultgemma-1b (or a directory): the server in the foreground
#   make deps     install the Debian packages the build and tests need (idempotent, sudo when not root)
#   make build    Release build; executables in build/bin/
#   make test     deps + build + ctest, plus the unit tests under ASan+UBSan (build-asan/)
#   make bench    benchmarks (slow; not part of make test)
#   make format   clang-format every C++ file in place
#   make lint     clang-format check + clang-tidy
BUILD_DIR ?= build
ASAN_DIR ?= build-asan
JOBS ?= $(shell nproc)
CMAKE ?= cmake
CTEST_ARGS ?=

CXX_SOURCES = $(shell git ls-files '*.cc' '*.h' 2>/dev/null)

MODEL ?= google/vaultgemma-1b
LISTEN ?= 0.0.0.0:50051

.PHONY: all deps configure build asan test test-release test-asan bench demo serve format lint clean

all: build

deps:
	@tools/ci/install_deps.sh

$(BUILD_DIR)/build.ninja:
	$(CMAKE) -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_EXPORT_COMPILE_COMMANDS=ON

$(ASAN_DIR)/build.ninja:
	$(CMAKE) -S . -B $(ASAN_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVG_SANITIZE=ON -DVG_BUILD_BENCHMARKS=OFF

configure: $(BUILD_DIR)/build.ninja

build: deps $(BUILD_DIR)/build.ninja
	$(CMAKE) --build $(BUILD_DIR) -j $(JOBS)

asan: deps $(ASAN_DIR)/build.ninja
	$(CMAKE) --build $(ASAN_DIR) -j $(JOBS)

test-release: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

test-asan: asan
	cd $(ASAN_DIR) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS) -L unit $(CTEST_ARGS)

test: test-release test-asan

demo: build
	tools/demo/run_demo.sh $(BUILD_DIR)

serve: build
	$(BUILD_DIR)/bin/vaultgemma-server --model $(MODEL) --listen $(LISTEN)

bench: build
	tools/bench/run_benchmarks.sh $(BUILD_DIR)

format:
	clang-format -i $(CXX_SOURCES)

lint: configure
	clang-format --dry-run -Werror $(CXX_SOURCES)
	clang-tidy -p $(BUILD_DIR) --quiet $(filter %.cc,$(CXX_SOURCES))

clean:
	rm -rf $(BUILD_DIR) $(ASAN_DIR)
