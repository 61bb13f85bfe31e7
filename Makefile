# terrain_odt developer entry points. `make test` is what CI runs (via .ci/run) on a fresh clone.
#
#   make demo       the demo bag through the nodes' logic with the emulated co-processor
#                   (terrain-odt evaluate: deterministic) -> accuracy before/after on-device
#                   fine-tuning on the same windows, bench/results/demo.json
#   make setup      create .venv and install the package with dev, ROS and sim extras (instant when done)
#   make test       Rust lint + tests, Python lint + tests (incl. ROS nodes), MCU cross builds
#   make lint       formatting and lint checks only (Rust and Python)
#   make fmt        apply formatting (cargo fmt, ruff format, ruff import sorting)
#   make golden     regenerate the golden vectors with the Python reference
#   make mem        print the compile-time per-buffer RAM table of the shipped models
#   make bench-mcu  MCU benchmarks in QEMU -> bench/results/mcu.json
#   make mcu-setup  install the Debian cross toolchain listed in tools/apt-packages.txt
#   make fuzz       coverage-guided fuzzing of the decoders, FUZZ_SECONDS per target (CI: 20)
#   make clean      remove the venv and build outputs
#
# Set MCU=0 to leave out the Debian cross toolchain and the MCU builds (e.g. on a non-Debian
# laptop); CI always runs with the default MCU=1.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
CARGO ?= cargo
MCU ?= 1

VENV := .venv
VPY := $(VENV)/bin/python
RUFF := $(VENV)/bin/ruff
SETUP_STAMP := $(VENV)/.stamp-setup
AMENT_STAMP := $(VENV)/.stamp-ament
# `ros2 launch` and the ros2 CLI: pure-Python wheels built from the ROS sources (not on PyPI;
# README there), next to the repository. Without them the `ros2 launch` tests skip (CI: fail).
LAUNCH_WHEELS := ../shared/wheels/ros2-launch
LAUNCH_PKGS := ros2launch ros2run ros2pkg ros2topic ros2node ros2param ros2service
# Files the dev install links into .venv/share/terrain_odt and .venv/lib/terrain_odt.
AMENT_FILES = $(wildcard package.xml resource/terrain_odt resource/*.pth resource/libexec/* \
	launch/*.py config/*.yaml sim/* models/*.odtm models/*.json models/*.windows.npz data/demo/*.mcap)
comma := ,
FIRMWARE := firmware
APT_LIST := tools/apt-packages.txt
# MCU-only crates with their own [workspace] (built by tools/*.sh, not by the host workspace).
# (Board crates pin Espressif toolchains in rust-toolchain.toml; tools/build_boards.sh checks them.)
STANDALONE_CRATES = $(FIRMWARE)/bench-mcu $(FIRMWARE)/nopanic-check $(FIRMWARE)/fuzz
# Python sources checked by ruff (only those that exist: empty dirs are not in git).
PY_SRC = $(wildcard setup.py terrain_odt test tools launch fuzz)

ifeq ($(MCU),1)
MCU_SETUP := mcu-setup
else
MCU_SETUP :=
endif

header = @printf '\n==> %s\n' "$(1)"

# ---------------------------------------------------------------------------------------------
# Steps, shared by several targets. Kept as canned recipes so `test` runs them in a fixed order.

define rust_lint
	$(call header,cargo fmt --check (firmware/))
	cd $(FIRMWARE) && $(CARGO) fmt --all --check
	@for d in $(STANDALONE_CRATES); do \
		echo "cargo fmt --check ($$d, outside the workspace)"; \
		(cd $$d && $(CARGO) fmt --check); \
	done
	$(call header,cargo clippy --workspace --all-targets -- -D warnings (firmware/))
	cd $(FIRMWARE) && $(CARGO) clippy --workspace --all-targets -- -D warnings
endef

define rust_test
	$(call header,cargo test --workspace (firmware/))
	cd $(FIRMWARE) && $(CARGO) test --workspace
	$(call header,power cut at every byte of a save of the shipped model (release build))
	cd $(FIRMWARE) && $(CARGO) test --release -q -p odt-app --test power_loss
endef

define py_lint
	$(call header,ruff check $(PY_SRC))
	$(RUFF) check $(PY_SRC)
	$(call header,ruff format --check $(PY_SRC))
	$(RUFF) format --check $(PY_SRC)
endef

# ROS tests talk DDS on localhost only, in a domain of their own (test/conftest.py picks one).
define py_test
	$(call header,pytest)
	ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST $(VPY) -m pytest -q --durations=10
endef

define mcu_build
	$(call header,MCU cross builds: odt-core + bench for Cortex-M4F / Cortex-M0 / RV32IMC (tools/build_mcu.sh))
	bash tools/build_mcu.sh
	$(call header,no reachable panic in the firmware, per instruction set (tools/check_no_panic.sh))
	bash tools/check_no_panic.sh
	$(call header,board crates: host tests (tools/build_boards.sh --test-only; .ci/run builds the images: make boards))
	bash tools/build_boards.sh --test-only
endef

# ---------------------------------------------------------------------------------------------

.PHONY: help setup test lint fmt golden bench-mcu mcu-setup demo clean mem models bench-ros fuzz
.PHONY: bench-link boards

# ---------------------------------------------------------------------------------------------
#   make boards     board crates: host tests and the ESP32-C3 firmware images (tools/build_boards.sh;
#                   about 90 s from scratch; CI runs it after make test)

boards: mcu-setup
	bash tools/build_boards.sh

help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))

setup: $(SETUP_STAMP) $(AMENT_STAMP)

# Re-run pip only when the build definition (or this Makefile) changes; otherwise instant.
$(SETUP_STAMP): setup.py setup.cfg package.xml Makefile
	$(call header,setup: $(VENV) with terrain_odt[dev$(comma)ros$(comma)sim] (editable))
	@if [ ! -x $(VPY) ]; then $(PYTHON) -m venv $(VENV); fi
	$(VPY) -m pip install --disable-pip-version-check -q -e '.[dev,ros,sim]'
	@if [ -d $(LAUNCH_WHEELS) ]; then \
		echo "ros2 launch and the ros2 CLI from $(LAUNCH_WHEELS)"; \
		$(VPY) -m pip install --disable-pip-version-check -q \
			--find-links $(LAUNCH_WHEELS) $(LAUNCH_PKGS); \
	else \
		echo "note: $(LAUNCH_WHEELS) not found: no ros2 launch (its tests are skipped)"; \
	fi
	@touch $@

# The editable install has no data files: link share/terrain_odt, the ament index marker and
# lib/terrain_odt into the venv (terrain_odt/ament_layout.py), so `ros2 launch terrain_odt ...`
# finds the package; again when files are added.
$(AMENT_STAMP): $(SETUP_STAMP) $(AMENT_FILES) terrain_odt/ament_layout.py
	$(call header,setup: ament layout of the editable install (python -m terrain_odt.ament_layout dev-install))
	$(VPY) -m terrain_odt.ament_layout dev-install
	@touch $@

mcu-setup:
	$(call header,mcu-setup: Debian packages from $(APT_LIST))
	@command -v dpkg-query >/dev/null || { \
		echo "dpkg-query not found: install these packages yourself, or use MCU=0:"; \
		grep -v -e '^\s*#' -e '^\s*$$' $(APT_LIST); exit 1; }
	@missing=""; \
	for pkg in $$(grep -v -e '^\s*#' -e '^\s*$$' $(APT_LIST)); do \
		st=$$(dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null || true); \
		[ "$$st" = "install ok installed" ] || missing="$$missing $$pkg"; \
	done; \
	if [ -z "$$missing" ]; then \
		echo "all present"; \
	else \
		echo "installing:$$missing"; \
		sudo=""; if [ "$$(id -u)" -ne 0 ]; then sudo="sudo"; fi; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q; \
		$$sudo env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -q --no-install-recommends $$missing; \
	fi

test: setup $(MCU_SETUP)
	$(rust_lint)
	$(rust_test)
	$(py_lint)
	$(py_test)
ifeq ($(MCU),1)
	$(mcu_build)
endif
	$(call header,make test: all steps passed)

lint: setup
	$(rust_lint)
	$(py_lint)

fmt: setup
	$(call header,cargo fmt (firmware/))
	cd $(FIRMWARE) && $(CARGO) fmt --all
	@for d in $(STANDALONE_CRATES); do (cd $$d && $(CARGO) fmt); done
	$(call header,ruff format + import sorting)
	$(RUFF) check --select I --fix $(PY_SRC)
	$(RUFF) format $(PY_SRC)

mem:
	$(call header,compile-time RAM/flash table of the shipped models)
	cd $(FIRMWARE) && $(CARGO) run -q -p odt-core --example memory

golden: setup
	$(call header,golden vectors (tools/gen_golden.py))
	$(VPY) tools/gen_golden.py

bench-mcu: setup mcu-setup
	$(call header,MCU benchmarks (tools/bench_mcu.py))
	$(VPY) tools/bench_mcu.py

# Link benchmark against the odt-emu emulator (built with cargo if missing) -> bench/results/link.json
bench-link: setup
	$(call header,link benchmark (tools/bench_link.py))
	$(VPY) tools/bench_link.py

# The README's first command: the demo bag (a 6-minute BorealTC drive) through the logic of
# imu_features, terrain_labeler and odt_bridge with the odt-emu co-processor, in bag order
# (terrain-odt evaluate: the same numbers on every machine). The model is the default shipped
# one (config/terrain_odt.yaml); the bag's truth acts as the operator for the first lap (180 s);
# accuracy is measured window by window on the second lap, with training off (before) and on
# (after). `make test` also plays the bag through the real nodes over DDS (test_replay_e2e).
DEMO_ARGS = data/demo/borealtc_demo.mcap --params-file config/terrain_odt.yaml \
	--operator-until 180 --out-dir build/demo --summary-json bench/results/demo.json

demo: setup
	$(call header,build the co-processor emulator (cargo build --release -p odt-emu))
	cd $(FIRMWARE) && $(CARGO) build --release -q -p odt-emu
	$(call header,the demo bag through the nodes' logic (terrain-odt evaluate))
	$(VPY) -m terrain_odt.cli evaluate $(DEMO_ARGS)

FUZZ_SECONDS ?= 20
PY_FUZZ_TARGETS = frames cdr blob sidecar

fuzz: setup
	$(call header,fuzz: Python decoders (atheris), $(FUZZ_SECONDS) s per target)
	$(VPY) -m pip install --disable-pip-version-check -q -e '.[fuzz]'
	@for t in $(PY_FUZZ_TARGETS); do \
		echo "fuzz target $$t"; \
		$(VPY) fuzz/py_decoders.py $$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=0 \
			2>&1 | grep -E "^(Done|==|ERROR|Traceback)" || exit 1; \
	done
	@if [ -x tools/fuzz_rust.sh ]; then bash tools/fuzz_rust.sh $(FUZZ_SECONDS); fi

clean:
	$(call header,clean)
	rm -rf $(VENV) build install log dist .pytest_cache .ruff_cache .hypothesis
	rm -rf *.egg-info $(FIRMWARE)/target $(FIRMWARE)/bench-mcu/target
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# ---------------------------------------------------------------------------------------------
#   make exp-choices  trainer design-choice experiment -> bench/results/trainer_choices.json,
#                     docs/trainer_choices.md (~8 min; QUICK=1: a 1-min smoke run into build/)

.PHONY: exp-choices

exp-choices: setup
	$(call header,trainer design choices (tools/exp_trainer_choices.py))
	$(VPY) tools/exp_trainer_choices.py $(if $(filter 1,$(QUICK)),--quick,)

# ---------------------------------------------------------------------------------------------
#   make demo-bag  regenerate data/demo/borealtc_demo.mcap from ../shared/data/borealtc
#                  (BorealTC, CC0; see data/demo/README.md)

.PHONY: demo-bag

# Two laps over the five terrains, each segment a stretch of steady straight driving (the
# labeler only labels while the robot moves steadily; turning in place is never labelled).
DEMO_BAG_SEGMENTS = ASPHALT/01:60-95 FLOORING/03:84-119 ICE/00:60-95 SANDY_LOAM/05:5-40 \
	SNOW/18:2-37 ASPHALT/04:10-45 FLOORING/00:100-135 ICE/03:5-40 SANDY_LOAM/01:5-40 \
	SNOW/10:30-65

demo-bag: setup
	$(call header,demo bag (terrain-odt bag-from-borealtc))
	$(VPY) -m terrain_odt.cli bag-from-borealtc --force -o data/demo/borealtc_demo.mcap \
		$(DEMO_BAG_SEGMENTS)

# ---------------------------------------------------------------------------------------------
#   make experiments  IMU only vs IMU + wheels on unseen BorealTC runs (tools/exp_features.py)
#                     and the integer trainer vs float32 on the standard data sets
#                     (tools/exp_standard.py) -> bench/results/features.json, learning.json,
#                     docs/RESULTS.md (a few minutes). On-robot fine-tuning: make eval-laps

.PHONY: experiments eval-laps

# ---------------------------------------------------------------------------------------------
#   make eval-laps  cross-run laps on BorealTC (tools/eval_laps.py): per arrangement a model
#                   pretrained on other runs, lap 1 labelled, lap 2 (other runs) scored, through
#                   terrain-odt evaluate -> bench/results/laps.json, and with the robot's IMU
#                   mounted otherwise: laps_mount-mild.json, laps_mount-severe.json, and the
#                   IMU-only model: laps_imu.json (~7 min); laps.json fine-tunes each
#                   arrangement with seeds 0, 1, 2 (the spread over the draws)

eval-laps: setup
	$(call header,cross-run laps (tools/eval_laps.py))
	cd $(FIRMWARE) && $(CARGO) build --release -q -p odt-emu
	$(VPY) tools/eval_laps.py --md --seeds 0 1 2
	$(VPY) tools/eval_laps.py --md --shift mount-mild
	$(VPY) tools/eval_laps.py --md --shift mount-severe
	$(VPY) tools/eval_laps.py --md --features imu

experiments: setup
	$(call header,IMU only vs IMU + wheels on unseen BorealTC runs (tools/exp_features.py))
	$(VPY) tools/exp_features.py --md
	$(call header,standard data sets (tools/exp_standard.py))
	$(VPY) tools/exp_standard.py $(if $(filter 1,$(QUICK)),--quick,)

# ---------------------------------------------------------------------------------------------
#   make experiments-standard  integer trainer vs float32 on MNIST, Fashion-MNIST, rotated and
#                              class-incremental MNIST, CIFAR-10 (JPEG) and HAPT -> key
#                              "standard" of bench/results/learning.json and docs/RESULTS.md
#                              (~10 min; QUICK=1: a 1-min smoke run into build/standard_quick/)

.PHONY: experiments-standard

experiments-standard: setup
	$(call header,standard data sets (tools/exp_standard.py))
	$(VPY) tools/exp_standard.py $(if $(filter 1,$(QUICK)),--quick,)

# ---------------------------------------------------------------------------------------------
#   make models     regenerate models/*.odtm + .json from ../shared/data/borealtc (tools/make_models.py)
#   make bench-ros  ROS graph benchmark -> bench/results/ros.json (latency, CPU per node, replay speed)

models: setup
	$(call header,pretrained models (tools/make_models.py))
	$(VPY) tools/make_models.py

bench-ros: setup
	$(call header,build the co-processor emulator)
	cd $(FIRMWARE) && $(CARGO) build --release -q -p odt-emu
	$(call header,ROS graph benchmark (tools/bench_ros.py))
	ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST $(VPY) tools/bench_ros.py

# ---------------------------------------------------------------------------------------------
#   make sim        closed loop in the MuJoCo simulation (tools/sim_closed_loop.py): a model
#                   pretrained on a drive under other settings, fine-tuned on the odt-emu
#                   co-processor from map-region labels on lap 1, scored on lap 2
#                   -> bench/results/sim.json (about a minute)

.PHONY: sim

sim: setup
	$(call header,build the co-processor emulator (cargo build --release -p odt-emu))
	cd $(FIRMWARE) && $(CARGO) build --release -q -p odt-emu
	$(call header,closed loop in simulation (tools/sim_closed_loop.py))
	$(VPY) tools/sim_closed_loop.py
