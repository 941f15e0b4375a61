# regindex developer entry points. `make up` and `make test` are the two commands a fresh
# machine needs (see README.md).

CARGO ?= cargo

.PHONY: up down test build lint fmt trigger-reindex scan dlq bench compose-check

up: ## bring up PostgreSQL, RabbitMQ, docker-registry, api and worker with sample images
	scripts/dev-up.sh

down: ## stop what `make up` started
	scripts/dev-down.sh

test: ## the whole test suite against real services
	scripts/test.sh

build:
	$(CARGO) build --workspace --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# regindexctl: the release binary `make up` built, when there is one (no debug build of
# several minutes on a fresh machine); otherwise built and run by cargo.
CTL_RELEASE := $(or $(CARGO_TARGET_DIR),target)/release/regindexctl
CTL = REGINDEX_CONFIG=$(CURDIR)/config.example.yaml $(if $(wildcard $(CTL_RELEASE)),$(CTL_RELEASE),$(CARGO) run -q -p regindexctl --)

# Publishes, on amq.topic as Bodhi does: a bodhi.compose.complete (container/flatpak), or
# with NVR="name-version-release ..." a bodhi.update.complete.stable for those builds;
# REPOSITORY=name refetches one repository.
trigger-reindex:
	$(CTL) trigger-reindex $(if $(REPOSITORY),--repository $(REPOSITORY)) $(if $(NVR),--update-nvr $(NVR))

scan:
	$(CTL) scan

dlq:
	$(CTL) dlq list

bench: ## the benchmarks of docs/benchmarks.md
	scripts/bench.sh

compose-check: ## validate docker-compose.yml without a Docker engine
	docker-compose -f docker-compose.yml config -q
