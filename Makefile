# Thin wrapper around CMake and the test runners. The two commands a user
# needs are `make run` and `make test`; both install what is missing first.

BUILD      ?= build
BUILD_ASAN ?= build-asan
BUILD_FUZZ ?= build-fuzz
FUZZ_TIME  ?= 60
FUZZERS     = http ws conn json inflate pattern forwarded jwt request
JOBS       ?= $(shell nproc)
PYTHON     ?= /usr/bin/python3
LISTEN     ?= 127.0.0.1:8080
SCRIPT     ?=

# Debian packages: what building and running needs, and what the tests add.
BUILD_PKGS = gcc make cmake pkg-config libuv1-dev libwslay-dev libhttp-parser-dev \
             liblua5.4-dev lua5.4 lua-cjson libssl-dev zlib1g-dev libhiredis-dev \
             libjwt-dev libcurl4-openssl-dev
TEST_PKGS  = libcmocka-dev python3 python3-websockets python3-pytest lua-busted openssl \
             redis-server redis-sentinel redis-tools nginx \
             clang libclang-rt-14-dev chromium fonts-dejavu-core valgrind \
             php-cli php-redis php-curl php-sqlite3
# What the PHP example (examples/php-backend, make run-php) runs besides moonwire.
PHP_PKGS   = php-cli php-redis php-curl php-sqlite3 redis-server redis-tools

# What `make bench` adds: taskset (util-linux), perf and valgrind for profiles
# (bench/callgrind.sh); node and npm come from the nodejs package (plus npm on
# Debian's own nodejs) when missing.
BENCH_PKGS = util-linux linux-perf valgrind python3 redis-server redis-sentinel

SUDO = $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SHELL = /bin/bash
# No "Entering directory" lines from the makes below this one (CMake's too).
MAKEFLAGS += --no-print-directory

.PHONY: all deps deps-test deps-spec build build-asan build-fuzz build-sim run run-php deps-php test test-unit \
        test-spec test-spec-valgrind test-e2e test-browser test-asan test-fuzz fuzz clean

all: build

# Installs only the packages that are missing, so it is quick when nothing is.
deps:
	@missing=$$(for p in $(BUILD_PKGS); do dpkg-query -W -f='$${db:Status-Status}' $$p 2>/dev/null | grep -qx installed || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

deps-test: deps
	@missing=$$(for p in $(TEST_PKGS); do dpkg-query -W -f='$${db:Status-Status}' $$p 2>/dev/null | grep -qx installed || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# What the specs need beyond the build: busted.
deps-spec: deps
	@missing=$$(for p in lua-busted; do dpkg-query -W -f='$${db:Status-Status}' $$p 2>/dev/null | grep -qx installed || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMW_TESTS=ON >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

build-asan: deps-test
	@cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DMW_SANITIZE=ON >/dev/null
	@cmake --build $(BUILD_ASAN) -j$(JOBS)

# The server and moonwire.sim (what busted needs), quietly: the compiler's
# output goes to $(BUILD)/build.log, shown when the build fails.
build-sim: deps
	@mkdir -p $(BUILD)
	@echo "moonwire: building (output in $(BUILD)/build.log)"
	@{ cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo && \
	   cmake --build $(BUILD) -j$(JOBS) --target moonwire moonwire_sim; } >$(BUILD)/build.log 2>&1 || \
	 { tail -n 40 $(BUILD)/build.log; echo "moonwire: the build failed ($(BUILD)/build.log)"; exit 1; }

# The chat (examples/chat): scripts/chat.lua and its web page on one port.
# LISTEN=HOST:PORT listens elsewhere; SCRIPT=FILE runs another app. Ctrl-C
# stops the server, and make with it, quietly (the server's exit status is
# make's).
run: build-sim
	@echo "moonwire: serving http://$(LISTEN)/ (Ctrl-C to stop)"
	@exec ./$(BUILD)/moonwire --config examples/chat/moonwire.conf.lua \
	  --listen $(LISTEN) $(if $(SCRIPT),--script $(SCRIPT))

# The PHP example (examples/php-backend): Redis, moonwire, php -S and the
# archive worker, until Ctrl-C. PORT=N serves the pages elsewhere.
run-php: build-sim deps-php
	@exec examples/php-backend/run.sh

deps-php:
	@missing=$$(for p in $(PHP_PKGS); do dpkg-query -W -f='$${db:Status-Status}' $$p 2>/dev/null | grep -qx installed || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

test: deps-test
	$(MAKE) --no-print-directory build build-asan
	$(MAKE) --no-print-directory test-unit test-spec test-spec-valgrind test-e2e test-browser \
	  test-asan test-fuzz

test-unit:
	cd $(BUILD) && ctest --output-on-failure --timeout 60

# busted specs for the Lua apps, against build/lua/moonwire/sim.so (see .busted),
# which it builds first. Debian's busted starts with `lua`, which may not be
# 5.4: run it with lua5.4.
test-spec: build-sim deps-spec
	lua5.4 /usr/bin/busted

# Every spec again under valgrind's memcheck (about a minute): Debian's liblua
# has no ASan, and the specs drive the Lua-facing C code through the sim
# module, which is the core. Any invalid read or write, or a block lost,
# fails it.
test-spec-valgrind: build-sim deps-spec
	valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
	  lua5.4 /usr/bin/busted

test-e2e:
	MW_BIN=$(CURDIR)/$(BUILD)/moonwire $(PYTHON) -m pytest -q -p no:cacheprovider tests/e2e

# The chat page (examples/chat) in Debian's chromium, headless, driven by
# playwright-core from npm (tests/browser/package-lock.json) against the real
# binary. npm ci runs when node_modules is missing or older than the lock.
test-browser: deps-test build tests/browser/node_modules/.package-lock.json
	MW_BIN=$(CURDIR)/$(BUILD)/moonwire node --test --test-reporter=spec tests/browser/

tests/browser/node_modules/.package-lock.json: tests/browser/package-lock.json
	cd tests/browser && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The whole unit and end-to-end suite again, against the sanitizer build.
test-asan:
	cd $(BUILD_ASAN) && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure --timeout 120
	MW_BIN=$(CURDIR)/$(BUILD_ASAN)/moonwire MW_SANITIZED=1 $(PYTHON) -m pytest -q -p no:cacheprovider tests/e2e

# libFuzzer harnesses (fuzz/), built with clang, ASan and UBSan. `make fuzz`
# runs each for FUZZ_TIME seconds; `make test` runs each for 20 s. New inputs
# go to fuzz/corpus-work/ (not committed); fuzz/corpus/ holds the seeds, and
# fuzz/NAME.dict, when there is one, the tokens of that harness's input.
build-fuzz: deps-test
	@CC=clang cmake -S . -B $(BUILD_FUZZ) -DMW_FUZZ=ON -DMW_TESTS=OFF >/dev/null
	@cmake --build $(BUILD_FUZZ) -j$(JOBS)

fuzz: build-fuzz
	@for f in $(FUZZERS); do \
	  mkdir -p fuzz/corpus-work/$$f; \
	  echo "fuzz_$$f: $(FUZZ_TIME) s"; \
	  ./$(BUILD_FUZZ)/fuzz_$$f -max_total_time=$(FUZZ_TIME) -print_final_stats=1 \
	    $$(test -f fuzz/$$f.dict && echo -dict=fuzz/$$f.dict) \
	    fuzz/corpus-work/$$f fuzz/corpus/$$f 2>&1 | \
	    grep -E "^(stat::number_of_executed_units|==|SUMMARY|fuzz_$$f: | +)" ; \
	  test $${PIPESTATUS[0]} -eq 0 || exit 1; \
	done

test-fuzz:
	$(MAKE) --no-print-directory fuzz FUZZ_TIME=20

# Benchmarks (docs/performance.md): moonwire against Node's ws with the same load
# generator, the server on CPU 0 and the generator on CPU 1, several rounds.
# QUICK=1: a short smoke run. ONLY=echo,relay: some scenarios. ROUNDS=N.
# Results: a table on stdout, bench/results/latest.json (QUICK: build/bench/quick.json).
.PHONY: bench deps-bench
bench: deps deps-bench bench/peers/node_modules/.package-lock.json
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j$(JOBS) --target moonwire mw_loadgen mw_bench_lua_floor
	$(PYTHON) bench/run.py --build $(BUILD) $(if $(QUICK),--quick) \
	  $(if $(ONLY),--only $(ONLY)) $(if $(ROUNDS),--rounds $(ROUNDS))

# The capacity model of docs/scaling.md: the four scenarios it reads, moonwire
# alone, into bench/results/capacity.json, then bench/capacity.py on it.
.PHONY: bench-capacity
bench-capacity: deps deps-bench
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j$(JOBS) --target moonwire mw_loadgen
	$(PYTHON) bench/run.py --build $(BUILD) --servers moonwire \
	  --only echo,relay,cluster-envelope,connect --out bench/results/capacity.json \
	  $(if $(ROUNDS),--rounds $(ROUNDS))
	$(PYTHON) bench/capacity.py bench/results/capacity.json

# The pattern functions (core/lua_pattern.c) against Lua's own, on chat-like
# strings: CPU time (bench/pattern.c), then instructions under callgrind.
.PHONY: bench-pattern
bench-pattern: deps deps-bench
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j$(JOBS) --target mw_bench_pattern
	./$(BUILD)/mw_bench_pattern
	bench/pattern_callgrind.sh $(BUILD)/mw_bench_pattern

deps-bench:
	@missing=$$(for p in $(BENCH_PKGS); do dpkg-query -W -f='$${db:Status-Status}' $$p 2>/dev/null | grep -qx installed || echo $$p; done); \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

bench/peers/node_modules/.package-lock.json: bench/peers/package-lock.json
	cd bench/peers && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_FUZZ)
