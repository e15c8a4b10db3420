# shears: build, test, bench.
#
#   make            build/shears
#   make test       install what is missing, build, run every test
#   make run        install what is missing, build, start the service
#   make demo       a batch prune of the bundled model
#   make unit       unit suites only
#   make sanitize   ASan + UBSan build of the unit suites, run
#   make valgrind   unit suites under valgrind (no leaks allowed)
#   make bench      benchmarks: a table of ratios against yardsticks
#   make fuzz       libFuzzer targets, FUZZ_SECONDS (60) each
#   make format     clang-format in place; make format-check verifies
#
# Outputs go under build/ (build/san for SANITIZE builds). Objects rebuild
# when a header they include changes (-MMD -MP) or when the flags change.

CC ?= cc
SANITIZE ?=
BUILD ?= build$(if $(SANITIZE),/san)
OPT ?= -O3

# The binary needs only PKGS (scripts/deps.sh --build); the tests add
# TEST_PKGS.
PKGS := jansson libmicrohttpd libuv sqlite3 libarchive libcrypto libpcre2-8
TEST_PKGS := libcurl check
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
TEST_CFLAGS := $(shell pkg-config --cflags $(TEST_PKGS) 2>/dev/null)
TEST_LIBS := $(shell pkg-config --libs $(TEST_PKGS) 2>/dev/null)

WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wvla \
        -Wno-missing-field-initializers
CFLAGS_ALL := -std=c11 -D_GNU_SOURCE $(OPT) -g $(WARN) -I. $(PKG_CFLAGS) \
              $(if $(SANITIZE),-fsanitize=$(SANITIZE) -fno-omit-frame-pointer \
              -fno-sanitize-recover=all) $(CFLAGS)
LDFLAGS_ALL := $(if $(SANITIZE),-fsanitize=$(SANITIZE)) $(LDFLAGS)
LIBS := $(PKG_LIBS) -lopenblas -lm -lpthread

MODULES := common engine store jobs api service
LIB_SRC := $(filter-out service/main.c,$(foreach m,$(MODULES),$(wildcard $(m)/*.c $(m)/*/*.c)))
LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o)
MAIN_OBJ := $(BUILD)/service/main.o
TEST_SRC := $(wildcard tests/*.c)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)
BENCH_SRC := $(wildcard tests/bench/*.c)
BENCH_BIN := $(BENCH_SRC:tests/bench/%.c=$(BUILD)/bench/%)
HEADERS := $(foreach m,$(MODULES),$(wildcard $(m)/*.h $(m)/*/*.h))

BIN := $(BUILD)/shears
TESTS := $(BUILD)/run-tests

.PHONY: all deps test unit integration run sanitize valgrind bench format \
        format-check hdr-check lint clean demo fuzz fuzz-bins
all: $(BIN)

# --- flags: a change of compiler or flags rebuilds everything
$(BUILD)/.flags: FORCE
	@mkdir -p $(@D)
	@echo '$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) $(LIBS) $(TEST_CFLAGS) $(TEST_LIBS)' | cmp -s - $@ || \
	  echo '$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) $(LIBS) $(TEST_CFLAGS) $(TEST_LIBS)' > $@
FORCE:

$(BUILD)/%.o: %.c $(BUILD)/.flags
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -MMD -MP -c $< -o $@

$(BUILD)/tests/%.o: CFLAGS_ALL += $(TEST_CFLAGS)

$(BIN): $(LIB_OBJ) $(MAIN_OBJ)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS)

# The tests see every allocation of the project's code (tests/alloc.h).
TEST_WRAP := $(foreach f,malloc calloc realloc posix_memalign aligned_alloc \
               strdup free,-Wl,--wrap=$(f))

$(TESTS): $(LIB_OBJ) $(TEST_OBJ)
	$(CC) $(LDFLAGS_ALL) $(TEST_WRAP) -o $@ $^ $(LIBS) $(TEST_LIBS)

$(BUILD)/bench/%: tests/bench/%.c $(LIB_OBJ) $(BUILD)/.flags
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $< $(LIB_OBJ) $(LIBS)

# Embedded assets: .incbin is invisible to -MMD.
$(BUILD)/api/assets.o: openapi.yaml api/dashboard.html

-include $(LIB_OBJ:.o=.d) $(MAIN_OBJ:.o=.d) $(TEST_OBJ:.o=.d)

# --- set-up: one script installs every dependency (README, CI, Dockerfile)
deps:
	@scripts/deps.sh

# --- tests
test: deps
	@$(MAKE) --no-print-directory $(BIN) $(TESTS)
	@$(MAKE) --no-print-directory hdr-check format-check lint
	SHEARS_BIN=$(abspath $(BIN)) $(TESTS) all
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(FUZZ_SMOKE)

unit: $(TESTS)
	$(TESTS) unit

integration: $(BIN) $(TESTS)
	SHEARS_BIN=$(abspath $(BIN)) $(TESTS) integration

sanitize:
	@$(MAKE) --no-print-directory SANITIZE=address,undefined OPT=-O1 \
	  $(if $(SANITIZE),,build/san/run-tests build/san/shears)
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  SHEARS_BIN=$(abspath build/san/shears) build/san/run-tests unit

# The faults suite counts its own leaks (tests/alloc.h) and runs hundreds of
# whole prunes: under valgrind it would take most of an hour.
valgrind: $(TESTS)
	CK_FORK=no valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite,indirect \
	  --error-exitcode=3 $(TESTS) unit -faults

# --- fuzzing: libFuzzer targets (tests/fuzz/) built by clang with ASan and
# UBSan into build/fuzz; `make fuzz` runs each FUZZ_SECONDS from the
# committed seeds (tests/fuzz/corpus/), `make test` runs a short smoke.
FUZZ_SRC := $(wildcard tests/fuzz/*.c)
FUZZ_SECONDS ?= 60
FUZZ_SMOKE ?= 15
FUZZ_CFLAGS := -fsanitize=fuzzer-no-link,address,undefined \
               -fno-sanitize-recover=all -fno-omit-frame-pointer

fuzz:
	@$(MAKE) --no-print-directory CC=clang BUILD=build/fuzz OPT=-O1 \
	  CFLAGS="$(FUZZ_CFLAGS)" fuzz-bins
	@scripts/fuzz.sh build/fuzz $(FUZZ_SECONDS)

fuzz-bins: $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzzers/%)

$(BUILD)/fuzzers/%: tests/fuzz/%.c $(LIB_OBJ) $(BUILD)/.flags
	@mkdir -p $(@D)
	$(CC) $(CFLAGS_ALL) -fsanitize=fuzzer,address,undefined -o $@ $< \
	  $(LIB_OBJ) $(LIBS)

# Every header compiles on its own.
hdr-check: $(HEADERS:%.h=$(BUILD)/hdr/%.ok)
$(BUILD)/hdr/%.ok: %.h $(BUILD)/.flags
	@mkdir -p $(@D)
	@echo '#include "$<"' | $(CC) $(CFLAGS_ALL) -x c -fsyntax-only - && touch $@

format:
	clang-format -i $(foreach m,$(MODULES) $(wildcard engine/*/) tests tests/bench tests/fuzz,$(wildcard $(m)/*.[ch]))

format-check:
	@clang-format --dry-run --Werror $(foreach m,$(MODULES) $(wildcard engine/*/) tests tests/bench tests/fuzz,$(wildcard $(m)/*.[ch]))

# Static checks that need the tools the dependency script installs.
lint:
	@scripts/lint.sh

# --- running
run: deps
	@$(MAKE) --no-print-directory $(BIN)
	@scripts/run.sh

demo: $(BIN)
	@scripts/demo.sh

# --- benchmarks
bench: deps
	@$(MAKE) --no-print-directory OPT=-O2 $(BIN) $(BENCH_BIN)
	@BUILD=$(BUILD) scripts/bench.sh

clean:
	rm -rf build
