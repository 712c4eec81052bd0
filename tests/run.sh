#!/usr/bin/env bash
# The README's test command: Rust unit tests, the lint gate, then pytest.
# Run from the repository root inside an environment where `pip install -e ".[test]"` was done.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== cargo test"
cargo test --quiet
echo "== lint: cargo fmt, clippy, ruff, mypy"
cargo fmt --check
cargo clippy --quiet --all-targets -- -D warnings
cargo clippy --quiet --all-targets --features python -- -D warnings
ruff check python tests bench
ruff format --check python tests bench
mypy
echo "== pytest"
python -m pytest -q -p no:cacheprovider "$@"
