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

# Publishes a fedora-messaging bodhi.compose.complete to amq.topic, as Bodhi does after
# a container/flatpak compose: the worker reindexes every repository.
trigger-reindex:
	REGINDEX_CONFIG=$(CURDIR)/config.example.yaml $(CARGO) run -q -p regindexctl -- trigger-reindex $(if $(REPOSITORY),--repository $(REPOSITORY))

scan:
	REGINDEX_CONFIG=$(CURDIR)/config.example.yaml $(CARGO) run -q -p regindexctl -- scan

dlq:
	REGINDEX_CONFIG=$(CURDIR)/config.example.yaml $(CARGO) run -q -p regindexctl -- dlq list

bench: ## the benchmarks of docs/benchmarks.md
	scripts/bench.sh

compose-check: ## validate docker-compose.yml without a Docker engine
	docker-compose -f docker-compose.yml config -q
