# reanimate: `make demo` runs the main job, `make test` runs every test. Both set up what they
# need on a fresh machine (the LocalStack venv included) and leave nothing running.

SHELL := /bin/bash
CARGO ?= cargo
# Seeds of the fault-injection simulation run by `make test` (SIM_SEEDS=10000 for a long run).
SIM_SEEDS ?= 1000

.PHONY: browser-install test deploy demo-live stack-figures email-figures integration integ stress soak lambdas template-lint lint check-layers unit localstack-install localstack-start localstack-stop localstack-tests demo bench clean

# cargo-lambda builds the functions for x86_64-unknown-linux-gnu. On such a host every cargo call
# here names that target and cargo-lambda compiles with plain cargo (no zig), so the tests and the
# functions share one build: a fresh `make test` compiles the dependencies once, not twice.
HOST_TRIPLE := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
ifeq ($(HOST_TRIPLE),x86_64-unknown-linux-gnu)
export CARGO_BUILD_TARGET ?= $(HOST_TRIPLE)
LAMBDA_COMPILER := --compiler cargo
endif

LOGS := target/test-logs
VENV := .venv

# Ends with one "N passed, N failed" line over every test run.
# The LocalStack venv installs (mostly downloads) while clippy compiles.
test:
	@$(MAKE) --no-print-directory -j2 lint localstack-install browser-install
	@$(MAKE) --no-print-directory check-layers unit localstack-tests integration integ
	@tools/test-summary $(LOGS)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# The layers point inward: the runtime (shared/core) has no AWS crate, the adapters
# (shared/aws, shared/llm) never know the apps, and no sample atom's Lambda carries the email app.
check-layers:
	CARGO=$(CARGO) tools/check-layers

unit:
	@mkdir -p $(LOGS)
	set -o pipefail; SIM_SEEDS=$(SIM_SEEDS) $(CARGO) test --workspace --locked 2>&1 | tee $(LOGS)/cargo.log

# The LocalStack extension's own tests, against an emulator: the one at AWS_ENDPOINT_URL if set,
# else one started here and stopped afterwards.
localstack-tests: localstack-install
	@mkdir -p $(LOGS)
	set -o pipefail; localstack/stack with $(VENV)/bin/python -m pytest -q -p no:cacheprovider localstack/extension/tests 2>&1 | tee $(LOGS)/pytest.log

# Tests through real AWS API calls (ignored by plain `cargo test`), against an emulator as above.
integration: localstack-install
	@mkdir -p $(LOGS)
	set -o pipefail; localstack/stack with $(CARGO) test -p reanimate-tests --test aws_adapters --locked -- --ignored 2>&1 | tee $(LOGS)/integration.log

# The stack deployed on an emulator (started here unless AWS_ENDPOINT_URL answers), tested
# through SQS → Lambda → DynamoDB/SQS/Scheduler.
integ: localstack-install browser-install lambdas template-lint
	@mkdir -p $(LOGS)
	set -o pipefail; localstack/stack with tools/integ 2>&1 | tee $(LOGS)/integ.log

# A parent whose 1,000 children are timed to finish at the same moment, on the deployed stack
# (make integ runs the same test with 100); figures in BENCHMARKS.md.
STRESS_CHILDREN ?= 1000
stress: localstack-install lambdas
	localstack/stack with bash -c '.venv/bin/python infra/deploy.py --max-queue-delay 2 && STRESS_CHILDREN=$(STRESS_CHILDREN) $(CARGO) test -p reanimate-tests --test deployed_stack --locked thousand -- --ignored --nocapture'

# The fault-injection simulation on 20,000 seeds (its time is in BENCHMARKS.md).
SOAK_SEEDS ?= 20000
soak:
	SIM_SEEDS=$(SOAK_SEEDS) $(CARGO) test -p reanimate-tests --test simulation --locked -- --nocapture

# Each atom's Lambda binary (`bootstrap`), x86_64 for the emulator on this machine. For AWS:
# `cargo lambda build --release --arm64` (needs the aarch64 rust target) and deploy with
# --architecture arm64.
FUNCTIONS := $(patsubst functions/%/Cargo.toml,reanimate-fn-%,$(wildcard functions/*/Cargo.toml))
lambdas: localstack-install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(CARGO) lambda build $(LAMBDA_COMPILER) --bins --locked $(addprefix -p ,$(FUNCTIONS))

# AWS requests per step and step latency on the deployed stack (see BENCHMARKS.md).
stack-figures: localstack-install lambdas
	localstack/stack with bash -c '.venv/bin/python infra/deploy.py && $(CARGO) run -q -p reanimate-tests --bin stack-figures'

# infra/template.yaml is rendered by infra/render.py (one block per atom); it must be current.
# The email pipeline on 1,000 generated emails on the deployed stack (see BENCHMARKS.md).
EMAILS ?= 1000
email-figures: localstack-install lambdas
	python3 tools/make-mail-fixture fixtures/mail/bench-$(EMAILS) --count $(EMAILS)
	localstack/stack with bash -c '.venv/bin/python infra/deploy.py && MAILBOX=bench-$(EMAILS) $(CARGO) run -q -p reanimate-demo --bin email-figures --locked'

template-lint: localstack-install
	python3 infra/render.py --check
	$(VENV)/bin/cfn-lint infra/template.yaml
	python3 infra/check_iam.py --self-test
	python3 infra/check_iam.py infra/template.yaml

localstack-install:
	localstack/stack install

# The web tests drive a real browser: Debian's chromium and its chromedriver (never a download at
# run time). Installed once, with apt-get (through sudo when not root).
browser-install:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; else \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	fi
	@chromedriver --version

localstack-start:
	localstack/stack start

localstack-stop:
	localstack/stack stop

# Deploy the stack on LocalStack and leave it running (make localstack-stop ends it).
deploy: lambdas
	localstack/stack deploy

# The main job: the email assistant hired for a demo user on LocalStack (answers from
# fixtures/demo-answers.json, or given in the web inbox with DEMO_INTERACTIVE=1; the links the
# user was emailed are printed), its digests printed; then the
# sample atoms live, and on the in-memory engine in virtual time (a simulated week).
demo:
	@$(MAKE) --no-print-directory demo-live
	$(CARGO) run -q -p reanimate-demo --bin reanimate-demo --locked

demo-live: localstack-install lambdas
	localstack/stack with bash -c '.venv/bin/python infra/deploy.py --max-queue-delay 2 && REANIMATE_LOCALSTACK_LOG=.localstack/localstack.log $(CARGO) run -q -p reanimate-demo --bin reanimate-demo-live --locked'

bench:
	$(CARGO) bench -p reanimate-atoms --bench engine --locked

clean:
	$(CARGO) clean
