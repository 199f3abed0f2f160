# llmrec: the two commands a new user needs are `make demo` and `make test`.
# Each installs what is missing (Debian 12, as root or with sudo), builds,
# and runs. CMake does the real work; this file only sequences it.

BUILD      ?= build
BUILD_TYPE ?= Release
JOBS       ?= $(shell nproc)
DEMO_DIR   ?= runs/quickstart
# The demo runs configs/quickstart.yaml; a DEMO_DIR other than its run.dir
# moves every path with --set.
DEMO_SET   := $(if $(filter runs/quickstart,$(DEMO_DIR)),,--set run.dir=$(DEMO_DIR) \
  --set data.interactions=$(DEMO_DIR)/shop/interactions.csv --set data.catalogue=$(DEMO_DIR)/shop/catalogue.csv \
  --set data.dataset=$(DEMO_DIR)/dataset.h5 --set eval.oracle_dir=$(DEMO_DIR)/shop)

# Debian packages the build and the tests need.
APT_PACKAGES := cmake g++ make git ccache pkg-config \
  libtorch-dev libopenblas0-openmp \
  libopenmpi-dev openmpi-bin \
  libyaml-cpp-dev libhdf5-dev libspdlog-dev libcli11-dev nlohmann-json3-dev \
  libgtest-dev libgmock-dev libcpp-httplib-dev libfaiss-dev \
  curl wrk python3 procps iproute2 chromium

.PHONY: all deps build test test-unit test-mpi demo clean install

all: build

deps:
	@missing=$$(for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed$$' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing $$(echo $$missing)"; \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@blas=$$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null); \
	case "$$blas" in *openblas*) ;; \
	  *) echo "make deps: warning: libblas.so.3 is $$blas, not OpenBLAS: matrix products run ~40x slower." \
	          "Fix: update-alternatives --config libblas.so.3-x86_64-linux-gnu";; esac

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j$(JOBS)

# Every test: unit tests, multi-rank tests under mpirun, CLI end-to-end tests.
test: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

test-unit: build
	cd $(BUILD) && ctest --output-on-failure -j$(JOBS) -L unit

test-mpi: build
	cd $(BUILD) && ctest --output-on-failure -L mpi

# The main job on the built-in example: the synthetic shop, validated and
# prepared into a dataset, the 2-rank installation check, training on 2
# ranks with validation and the test-split table next to the baselines and
# the oracle, the saved model evaluated again from its file, the export
# serving reads, and recommendations for one user from that export alone;
# then the documented pre-training path beside it: the encoder pre-trained
# on the shop's text (masked LM) and LoRA adapters trained on it.
DEMO_USER ?= u000042
demo: build
	@echo "== llmrec --version"
	@$(BUILD)/llmrec --version
	@echo
	@echo "== llmrec synth -o $(DEMO_DIR)/shop"
	@$(BUILD)/llmrec synth -o $(DEMO_DIR)/shop
	@echo
	@echo "== llmrec prepare -c configs/quickstart.yaml"
	@$(BUILD)/llmrec prepare -c configs/quickstart.yaml $(DEMO_SET)
	@echo
	@echo "== launch/mpirun.sh -n 2 -- check -c configs/quickstart.yaml"
	@LLMREC_BIN=$(BUILD)/llmrec launch/mpirun.sh -n 2 -o -- check -c configs/quickstart.yaml $(DEMO_SET)
	@echo
	@echo "== launch/mpirun.sh -n 2 -- train -c configs/quickstart.yaml   (a fresh run: old checkpoints removed)"
	@rm -rf $(DEMO_DIR)/checkpoints
	@LLMREC_BIN=$(BUILD)/llmrec launch/mpirun.sh -n 2 -o -- train -c configs/quickstart.yaml $(DEMO_SET) \
	  $(if $(filter runs/quickstart,$(DEMO_DIR)),,--set eval.oracle_dir=$(DEMO_DIR)/shop)
	@echo
	@echo "== launch/mpirun.sh -n 2 -- eval --checkpoint $(DEMO_DIR)/model.h5 --split test"
	@LLMREC_BIN=$(BUILD)/llmrec launch/mpirun.sh -n 2 -o -- eval -c configs/quickstart.yaml $(DEMO_SET) \
	  --set run.dir=$(DEMO_DIR)/eval --checkpoint $(DEMO_DIR)/model.h5 --split test
	@echo
	@echo "== launch/mpirun.sh -n 2 -- export --checkpoint $(DEMO_DIR)/model.h5 --output $(DEMO_DIR)/export.h5"
	@LLMREC_BIN=$(BUILD)/llmrec launch/mpirun.sh -n 2 -o -- export -c configs/quickstart.yaml $(DEMO_SET) \
	  --set run.dir=$(DEMO_DIR)/export --checkpoint $(DEMO_DIR)/model.h5 --output $(DEMO_DIR)/export.h5
	@echo
	@echo "== llmrec recommend --export $(DEMO_DIR)/export.h5 --user $(DEMO_USER) --k 10 --explain --table"
	@$(BUILD)/llmrec recommend --export $(DEMO_DIR)/export.h5 --user $(DEMO_USER) --k 10 --explain --table
	@echo
	@echo "== launch/mpirun.sh -n 2 -- pretrain -c configs/quickstart.yaml   (the item encoder pre-trained on the shop's own text)"
	@rm -rf $(DEMO_DIR)/pretrain $(DEMO_DIR)/pretrained
	@LLMREC_BIN=$(BUILD)/llmrec launch/mpirun.sh -n 2 -o -- pretrain -c configs/quickstart.yaml $(DEMO_SET) \
	  --set pretrain.epochs=100 --set pretrain.log_every=290 --set pretrain.eval_every=580
	@echo
	@echo "== launch/mpirun.sh -n 2 -- train ... --set model.bert.pretrained=$(DEMO_DIR)/pretrained --set model.lora.r=8"
	@echo "   (LoRA adapters on the frozen pre-trained encoder, beside the model above; a fresh run in $(DEMO_DIR)/lora)"
	@rm -rf $(DEMO_DIR)/lora
	@LLMREC_BIN=$(BUILD)/llmrec launch/mpirun.sh -n 2 -o -- train -c configs/quickstart.yaml $(DEMO_SET) \
	  --set run.dir=$(DEMO_DIR)/lora --set model.bert.pretrained=$(DEMO_DIR)/pretrained --set model.lora.r=8 \
	  $(if $(filter runs/quickstart,$(DEMO_DIR)),,--set eval.oracle_dir=$(DEMO_DIR)/shop)
	@echo
	@echo "On this shop the model trained from scratch (above, exported and served) ranks better than"
	@echo "pre-training + LoRA, cold items above all: docs/results.md, 'Pre-training the item encoder'."
	@echo
	@echo "== llmrec adapter --checkpoint $(DEMO_DIR)/lora/model.h5 --out $(DEMO_DIR)/lora/hf   (PEFT's layout, and merged)"
	@$(BUILD)/llmrec adapter -c $(DEMO_DIR)/lora/config.yaml --checkpoint $(DEMO_DIR)/lora/model.h5 --out $(DEMO_DIR)/lora/hf
	@echo
	@echo "Everything is in $(DEMO_DIR)/: shop/ (raw CSV), dataset.h5 (+ .report.json), config.yaml, logs/,"
	@echo "check.json, metrics.jsonl, checkpoints/, model.h5, eval_test.json, report.html, export.h5,"
	@echo "pretrain/ and pretrained/ (the pre-trained encoder, an HF directory), lora/ (the LoRA run; lora/hf:"
	@echo "the adapter for PEFT, the base and the merged encoder for HF)."
	@echo "The run's report (open it in a browser): $(DEMO_DIR)/report.html"
	@echo "Serve it: $(BUILD)/llmrec serve --export $(DEMO_DIR)/export.h5 --port 8080"

# PREFIX (default /usr/local) and DESTDIR (staging) as usual: bin/llmrec,
# bin/llmrec-mpirun, share/llmrec/{configs,launch}, share/doc/llmrec.
PREFIX ?= /usr/local
install: build
	DESTDIR=$(DESTDIR) cmake --install $(BUILD) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD)

# Robustness (docs/reliability.md, "Fuzzing and sanitizers"); each in a build
# directory of its own, the default build is not touched.
.PHONY: fuzz test-asan lint lint-fix
FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 60
ASAN_BUILD   ?= build-asan

# libFuzzer targets (clang) of every parser, FUZZ_SECONDS each from the seeds
# in fuzz/corpus/; prints executions and coverage; fails on any finding.
fuzz:
	@$(MAKE) --no-print-directory deps APT_PACKAGES="$(APT_PACKAGES) clang libclang-rt-14-dev"
	FUZZ_JOBS=$(JOBS) tools/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

# Formatting and static checks (docs/building.md, "Style and lint"):
# clang-format over every C++ file, clang-tidy (.clang-tidy: bugprone,
# performance, naming) over every unit of the build; verdicts are cached, so
# a second run re-checks only what changed. Fails on any finding.
# `make lint-fix` reformats the tree in place.
LINT_PACKAGES := clang clang-format clang-tidy
lint:
	@$(MAKE) --no-print-directory deps APT_PACKAGES="$(APT_PACKAGES) $(LINT_PACKAGES)"
	@$(MAKE) --no-print-directory build
	python3 tools/lint.py --build $(BUILD) --jobs $(JOBS)

lint-fix:
	@$(MAKE) --no-print-directory deps APT_PACKAGES="$(APT_PACKAGES) $(LINT_PACKAGES)"
	python3 tools/lint.py --fix

# The tests labelled `asan` under AddressSanitizer, UndefinedBehaviorSanitizer
# and LeakSanitizer (suppressions: tools/lsan.supp, tools/ubsan.supp).
test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLLMREC_SANITIZE=address,undefined \
	  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1" "-DCMAKE_C_FLAGS_RELWITHDEBINFO=-O1 -g1"
	cmake --build $(ASAN_BUILD) -j$(JOBS) --target llmrec_asan_tests
	cd $(ASAN_BUILD) && ctest --output-on-failure -j$(JOBS) -L asan
