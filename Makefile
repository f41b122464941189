# Front door of vaultgemma-server. `make test` is what CI runs (.ci/run).
#   make demo     deps + build, then the server on a random demo model and one streamed generation
#   make serve    MODEL=google/vaultgemma-1b (or a directory): the server in the foreground
#   make deps     install the Debian packages the build and tests need (idempotent, sudo when not root)
#   make build    Release build; executables in build/bin/
#   make test     deps + build + ctest, plus the unit tests under ASan+UBSan (build-asan/), plus
#                 make test-tsan and make fuzz-short
#   make fuzz     libFuzzer harnesses (clang, build-fuzz/): replay the committed corpora, then fuzz
#                 each harness for FUZZ_SECONDS (default 60) on a scratch copy; fails on any crash
#   make fuzz-short  the same, 15 s per harness (part of make test)
#   make test-tsan  the engine's and the server's threaded tests under ThreadSanitizer
#                 (build-tsan/; part of make test)
#   make soak     ten minutes (SOAK_SECONDS) of mixed load against the Release server, its RSS
#                 sampled every second (tests/soak/; not part of make test)
#   make bench    benchmarks (slow; not part of make test)
#   make format   clang-format every C++ file in place
#   make lint     clang-format check + clang-tidy
BUILD_DIR ?= build
ASAN_DIR ?= build-asan
FUZZ_DIR ?= build-fuzz
TSAN_DIR ?= build-tsan
# What make test-tsan builds and runs: the engine's threaded parts (the loop thread, intake and
# cancel queues, the compute pool) and the server's tests (reactors, engine sinks, metrics, access
# log, drain, faults; the binary they start is built with TSan too). Debian's abseil and gRPC are
# not TSan-instrumented: the server therefore locks with std::mutex, states gRPC's reactor
# hand-offs in server/grpc_handoff.h, and tests/tsan.supp names only those libraries' code, each
# entry justified there.
TSAN_TARGETS = engine_test engine_fixture_test scheduler_test kv_block_pool_test \
	kv_cache_manager_test backend_cpu_thread_pool_test text_generation_service_test metrics_test \
	access_log_test request_conversion_test vaultgemma_server_test operations_test faults_test
FUZZ_SECONDS ?= 60
FUZZ_SHORT_SECONDS ?= 15
JOBS ?= $(shell nproc)
CMAKE ?= cmake
CTEST_ARGS ?=

CXX_SOURCES = $(shell git ls-files '*.cc' '*.h' 2>/dev/null)

MODEL ?= google/vaultgemma-1b
LISTEN ?= 0.0.0.0:50051

.PHONY: all deps configure build asan test test-release test-asan test-tsan fuzz-build fuzz fuzz-short soak bench demo \
	serve format lint clean

all: build

deps:
	@tools/ci/install_deps.sh

$(BUILD_DIR)/build.ninja:
	$(CMAKE) -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_EXPORT_COMPILE_COMMANDS=ON

$(ASAN_DIR)/build.ninja:
	$(CMAKE) -S . -B $(ASAN_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVG_SANITIZE=ON -DVG_BUILD_BENCHMARKS=OFF

# Coverage instrumentation, ASan and UBSan on every target; only the harnesses are built here.
$(FUZZ_DIR)/build.ninja:
	$(CMAKE) -S . -B $(FUZZ_DIR) -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DVG_FUZZ=ON \
	  -DVG_BUILD_BENCHMARKS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g"

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

# Configured every time (cheap), so that an older build-tsan/ gets VG_TSAN=ON too.
test-tsan: deps
	$(CMAKE) -S . -B $(TSAN_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVG_TSAN=ON \
	  -DVG_BUILD_BENCHMARKS=OFF -DCMAKE_CXX_FLAGS= -DCMAKE_EXE_LINKER_FLAGS= \
	  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g"
	$(CMAKE) --build $(TSAN_DIR) -j $(JOBS) --target $(TSAN_TARGETS) vaultgemma-server
	cd $(TSAN_DIR) && \
	  TSAN_OPTIONS="halt_on_error=1 history_size=7 second_deadlock_stack=1 suppressions=$(CURDIR)/tests/tsan.supp" \
	  ctest --output-on-failure -j $(JOBS) -R '^($(subst $(eval) ,|,$(strip $(TSAN_TARGETS))))\.' \
	  $(CTEST_ARGS)

fuzz-build: deps $(FUZZ_DIR)/build.ninja
	$(CMAKE) --build $(FUZZ_DIR) -j $(JOBS) --target vg_fuzzers

# The committed corpora first (each crash ever found is kept there), then new inputs.
fuzz: fuzz-build
	cd $(FUZZ_DIR) && ctest --output-on-failure -L fuzz
	tests/fuzz/run_fuzzers.sh $(FUZZ_DIR) $(FUZZ_SECONDS)

fuzz-short: fuzz-build
	cd $(FUZZ_DIR) && ctest --output-on-failure -L fuzz
	tests/fuzz/run_fuzzers.sh $(FUZZ_DIR) $(FUZZ_SHORT_SECONDS)

test: test-release test-asan test-tsan fuzz-short

# Passes when the only failed calls are the refusals it provokes, repeated greedy and seeded
# requests agree, RSS after the warm-up grows less than 5% and the server ends at rest and exits
# 0. SOAK_OUT=DIR keeps the per-second samples in DIR/soak_rss.csv.
SOAK_SECONDS ?= 600
SOAK_OUT ?=
soak: build
	VG_SOAK_SECONDS=$(SOAK_SECONDS) VG_SOAK_OUT=$(SOAK_OUT) $(BUILD_DIR)/tests/soak_test

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
	clang-tidy -p $(BUILD_DIR) --quiet $(filter-out tests/fuzz/%,$(filter %.cc,$(CXX_SOURCES)))
	@# The fuzz harnesses are only in build-fuzz's compile database (make fuzz configures it).
	if [ -f $(FUZZ_DIR)/compile_commands.json ]; then \
	  clang-tidy -p $(FUZZ_DIR) --quiet $(filter tests/fuzz/%.cc,$(CXX_SOURCES)); fi

clean:
	rm -rf $(BUILD_DIR) $(ASAN_DIR) $(FUZZ_DIR)
