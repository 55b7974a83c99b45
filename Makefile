# binance-ingest: build, test, run and install.
#
#   make test     full test suite (what .ci/run calls)
#   make check    formatting, lints and the full test suite
#   make run      ingest from the live Binance endpoints into ./data
#   make demo     offline: mock exchange plus the service, on loopback
#   make bench    benchmarks against the mock exchange
#   make install  binary, config and systemd units (PREFIX, DESTDIR)

CARGO      ?= cargo
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
UNITDIR    ?= $(PREFIX)/lib/systemd/system
DESTDIR    ?=

RUN_STREAMS ?= btcusdt@trade,btcusdt@aggTrade,btcusdt@depth@100ms,btcusdt@bookTicker,ethusdt@trade
RUN_DATA    ?= ./data
DEMO_DIR    ?= ./demo

.PHONY: all build test check fmt lint run demo bench install uninstall clean deps

all: build

build:
	$(CARGO) build --release --locked

# Tools the test suite needs besides cargo: promtool checks /metrics.
deps:
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "installing promtool (Debian package prometheus)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends prometheus; \
	}

# Benches must build, but only `make bench` runs them: `cargo test
# --all-targets` would run them unoptimized, for minutes.
test: deps
	$(CARGO) build --locked --all-targets
	$(CARGO) test --locked

fmt:
	$(CARGO) fmt --all --check

lint:
	$(CARGO) clippy --locked --all-targets -- -D warnings

check: fmt lint test

run: build
	BINANCE_INGEST_STREAMS=$${BINANCE_INGEST_STREAMS:-$(RUN_STREAMS)} \
	BINANCE_INGEST_DATA_DIR=$${BINANCE_INGEST_DATA_DIR:-$(RUN_DATA)} \
	  ./target/release/binance-ingest run

demo: build
	./etc/demo.sh $(DEMO_DIR)

bench: build
	$(CARGO) bench --locked

install: build
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SYSCONFDIR)/binance-ingest $(DESTDIR)$(UNITDIR)
	install -m 0755 target/release/binance-ingest $(DESTDIR)$(BINDIR)/binance-ingest
	install -m 0755 target/release/mock-exchange $(DESTDIR)$(BINDIR)/binance-ingest-mock-exchange
	test -e $(DESTDIR)$(SYSCONFDIR)/binance-ingest/binance-ingest.conf || \
	  install -m 0644 etc/binance-ingest.conf $(DESTDIR)$(SYSCONFDIR)/binance-ingest/binance-ingest.conf
	sed 's|@BINDIR@|$(BINDIR)|g; s|@SYSCONFDIR@|$(SYSCONFDIR)|g' etc/systemd/binance-ingest@.service \
	  > $(DESTDIR)$(UNITDIR)/binance-ingest@.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/binance-ingest@.service

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/binance-ingest $(DESTDIR)$(BINDIR)/binance-ingest-mock-exchange
	rm -f $(DESTDIR)$(UNITDIR)/binance-ingest@.service

clean:
	$(CARGO) clean
	rm -rf $(DEMO_DIR)
