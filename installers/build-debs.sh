#!/usr/bin/env bash
# Builds the two Debian packages, shelfsync-hub and shelfsync-edge, into target/debian/
# (or SHELFSYNC_DEB_DIR):
#
#   installers/build-debs.sh              # release build of both binaries, then both .deb
#   installers/build-debs.sh --tool-only  # only install cargo-deb (CI, before the tests)
#
# Installs cargo-deb (pinned, without its C compression libraries) the first time: about a
# minute here. Extra arguments go to every `cargo deb` call (tests/tests/packages/ passes
# `--profile dev --no-build` to package the binaries the test build already made).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo_deb_version=3.8.0
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $cargo_deb_version" ]; then
  echo "installing cargo-deb $cargo_deb_version" >&2
  cargo install cargo-deb --version "$cargo_deb_version" --locked --no-default-features
fi
[ "${1:-}" = --tool-only ] && exit 0
for package in shelfsync-hub shelfsync-edge; do
  cargo deb --package "$package" --output "${SHELFSYNC_DEB_DIR:-target/debian}" "$@"
done
