# Convenience targets. The real work is in the scripts they call.
.PHONY: demo e2e test build

## make demo   Envoy + oidc-authz + a development IdP + a sample backend; Ctrl-C stops them
demo:
	scripts/demo.sh

## make e2e    the end-to-end suite (real Envoy, oidc-provider, headless Chromium)
e2e:
	tests/e2e/run.sh

## make test   the hermetic Rust tests (the README's test command)
test:
	cargo test --release

build:
	cargo build --release
