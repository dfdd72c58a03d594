# tapegrad — build, test, sanitize, benchmark.
#   make         library, examples and tests (build/); gets Check first if it is missing
#   make test    run every Check suite; gets Check first if it is missing
#   make run     the main job: train a char-level GPT on data/the-verdict.txt
#                (builds the library and build/train only: no Check needed)
#   make debug   the same tree at -O0 -g3 (build-debug/)
#   make asan    the tests under ASan + UBSan (build-asan/)
#   make bench   speed and memory benchmarks
#   make clean

CC      ?= cc
OPT     ?= -O3
BUILD   ?= build
WARN    := -Wall -Wextra -Wshadow -Wno-unused-parameter
# -ffp-contract=off: every multiply and add rounded apart, as torch's kernels
# round them, in every target clone (gcc's -std=c11 already means it; clang
# would fuse them in the AVX2 and AVX-512 clones only, so the bits would
# depend on the CPU).
CFLAGS  += -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) -I. -pthread -ffp-contract=off
LDLIBS  += -lm -pthread

# Only the tests need Check. tests/need_check.sh makes sure it is there (as
# root it installs it) before any test is compiled, even under -j: it is an
# order-only prerequisite of everything in $(BUILD)/tests/. Its flags are
# therefore read late ('=' : when a test's recipe runs), never at parse time.
CHECK_CFLAGS = $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS   = $(shell pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt -lm -pthread)

LIB_SRC  := $(wildcard tensor/*.c autograd/*.c nn/*.c optim/*.c)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
LIB      := $(BUILD)/libtapegrad.a
EX_SRC   := $(wildcard examples/*.c)
EX_BIN   := $(EX_SRC:examples/%.c=$(BUILD)/%)
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TEST_UTIL := $(BUILD)/tests/testutil.o
BENCH_SRC := $(wildcard tests/bench/*.c)
BENCH_BIN := $(BENCH_SRC:tests/bench/%.c=$(BUILD)/bench/%) $(BUILD)/bench/bench_train_nomode
HDRS     := $(wildcard tensor/*.h autograd/*.h nn/*.h optim/*.h examples/*.h)
TEST_HDRS := $(HDRS) $(wildcard tests/*.h)

.PHONY: all test run debug debug-examples asan bench clean valgrind fuzz check-framework
.SUFFIXES:
.SECONDARY:

all: $(LIB) $(EX_BIN) $(TEST_BIN) $(BENCH_BIN)

$(BUILD)/%.o: %.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# The optimizer's loops vectorise only when sqrtf need not set errno (its
# value is the same: sqrt is correctly rounded).
$(BUILD)/optim/optim.o: CFLAGS += -fno-math-errno

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/%: examples/%.c $(LIB) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(LIB) $(LDLIBS) -o $@

# Benchmarks count every malloc the library makes, through the linker's --wrap.
$(BUILD)/bench/%: tests/bench/%.c $(LIB) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(LIB) $(LDLIBS) -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=aligned_alloc -o $@

# make bench's A/B of anomaly mode: bench_train on the mode-free build, where
# TG_NO_ANOMALY_MODE compiles the mode's branches out of autograd/tape.c (its
# object comes first, so the archive's tape.o is never pulled in).
$(BUILD)/bench/tape_nomode.o: autograd/tape.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DTG_NO_ANOMALY_MODE -c $< -o $@
$(BUILD)/bench/bench_train_nomode: tests/bench/bench_train.c $(BUILD)/bench/tape_nomode.o $(LIB) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(BUILD)/bench/tape_nomode.o $(LIB) $(LDLIBS) -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=aligned_alloc -o $@

check-framework:
	@CC="$(CC)" sh tests/need_check.sh

$(TEST_UTIL): tests/testutil.c $(TEST_HDRS) | check-framework
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -c $< -o $@

$(BUILD)/tests/%: tests/%.c $(TEST_UTIL) $(LIB) $(TEST_HDRS) | check-framework
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) $< $(TEST_UTIL) $(LIB) $(CHECK_LIBS) $(LDLIBS) $(TEST_LDFLAGS) -o $@

# The tensor suite injects faults into the file writer through the linker's --wrap.
$(BUILD)/tests/test_tensor: TEST_LDFLAGS = -Wl,--wrap=write,--wrap=fsync,--wrap=rename,--wrap=umask
# The debug suite counts the library's mallocs in warm steps, as the benchmark does.
$(BUILD)/tests/test_debug: TEST_LDFLAGS = -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=aligned_alloc
# The checkpoint suite counts the name comparisons of safetensors lookups.
$(BUILD)/tests/test_checkpoint: TEST_LDFLAGS = -Wl,--wrap=strcmp

# Every suite runs even if an earlier one fails; the exit status says if any did.
test: all
	@bash tests/run_suites.sh $(TEST_BIN)

run: $(BUILD)/train
	$(BUILD)/train --data data/the-verdict.txt --tokenizer char --seed 123

# The debug build names docs/gdb/tapegrad_gdb.py in a .debug_gdb_scripts entry (tensor/error.c).
DEBUG_OPT := -O0 -g3 -DTG_GDB_SCRIPT="\"$(CURDIR)/docs/gdb/tapegrad_gdb.py\""
debug:
	$(MAKE) BUILD=build-debug OPT='$(DEBUG_OPT)' all
# Only the example programs (the gdb replay of docs/DEBUGGING.md needs them).
debug-examples:
	$(MAKE) BUILD=build-debug OPT='$(DEBUG_OPT)' $(EX_SRC:examples/%.c=build-debug/%)

asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	        LDLIBS="-lm -pthread -fsanitize=address,undefined" test

valgrind: all
	@for t in $(TEST_BIN); do echo "== valgrind $$t"; \
	  CK_FORK=no valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite,indirect --error-exitcode=3 $$t >/dev/null || exit 1; done; echo "valgrind: no leaks"

bench: $(BENCH_BIN)
	@bash tests/bench/run

clean:
	rm -rf build build-debug build-asan build-fuzz

# ---- fuzzing: libFuzzer + ASan/UBSan over the checkpoint loader, a bounded run.
#   make fuzz [FUZZ_TIME=60]   the library sources are built straight into the fuzz binary
FUZZ_TIME ?= 60
FUZZ_CC   ?= clang
fuzz:
	@mkdir -p build-fuzz/corpus
	$(FUZZ_CC) -std=c11 -D_GNU_SOURCE -DTG_NO_CLONES -O1 -g -I. -pthread -fsanitize=fuzzer,address,undefined \
	    -fno-sanitize-recover=undefined tests/fuzz/fuzz_checkpoint.c $(LIB_SRC) -lm -o build-fuzz/fuzz_checkpoint
	build-fuzz/fuzz_checkpoint -max_total_time=$(FUZZ_TIME) -max_len=8192 -dict=tests/fuzz/safetensors.dict \
	    build-fuzz/corpus tests/fuzz/seeds
