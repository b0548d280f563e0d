# reanimate: `make demo` runs the main job, `make test` runs every test. Both work on a fresh
# machine with the Rust toolchain; nothing else is needed yet.

SHELL := /bin/bash
CARGO ?= cargo
# Seeds of the fault-injection simulation run by `make test` (SIM_SEEDS=10000 for a long run).
SIM_SEEDS ?= 1000

.PHONY: test lint check-core-deps unit demo bench clean

test: lint check-core-deps unit

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# The runtime core must stay free of AWS crates: the adapters live in shared/aws.
check-core-deps:
	@if $(CARGO) tree -p reanimate-core -e normal --prefix none --locked | grep -Eiq '^aws'; then \
		echo "reanimate-core depends on an AWS crate:"; \
		$(CARGO) tree -p reanimate-core -e normal -i aws-types 2>/dev/null | head -20; exit 1; \
	fi
	@echo "reanimate-core: no AWS crate in its dependency tree"

# Ends with one "N passed, N failed" line summing every test binary's result.
unit:
	@mkdir -p target
	set -o pipefail; SIM_SEEDS=$(SIM_SEEDS) $(CARGO) test --workspace --locked 2>&1 | tee target/test-output.log
	@awk '/^test result:/ { passed += $$4; failed += $$6 } END { printf "%d passed, %d failed\n", passed, failed }' target/test-output.log

demo:
	$(CARGO) run -q -p reanimate-demo --locked

bench:
	$(CARGO) bench -p reanimate-atoms --bench engine --locked

clean:
	$(CARGO) clean
