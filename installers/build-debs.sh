#!/usr/bin/env bash
# Builds the two Debian packages, shelfsync-hub and shelfsync-edge, into target/debian/
# (or SHELFSYNC_DEB_DIR):
#
#   installers/build-debs.sh              # one release build of both binaries, then both .deb
#   installers/build-debs.sh --tool-only  # only install cargo-deb (CI, before the tests)
#   installers/build-debs.sh --packaging-only PROFILE [cargo-deb options]
#                                         # package binaries already built with PROFILE
#                                         # (tests/tests/packages/: dev, to spare a release build)
#
# Installs cargo-deb (pinned, without its C compression libraries) the first time: about a
# minute here. Both binaries are built in one cargo call, as the README's build line does,
# so their shared dependencies are compiled once.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo_deb_version=3.8.0
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $cargo_deb_version" ]; then
  echo "installing cargo-deb $cargo_deb_version" >&2
  cargo install cargo-deb --version "$cargo_deb_version" --locked --no-default-features
fi
profile=release
case "${1:-}" in
  --tool-only) exit 0 ;;
  --packaging-only)
    profile="${2:?--packaging-only needs the cargo profile the binaries were built with}"
    shift 2
    ;;
  *) cargo build --release --locked -p shelfsync-hub -p shelfsync-edge ;;
esac
for package in shelfsync-hub shelfsync-edge; do
  # --strip: the release profile keeps line tables (backtraces); the package need not.
  cargo deb --package "$package" --profile "$profile" --no-build --strip \
    --output "${SHELFSYNC_DEB_DIR:-target/debian}" "$@"
done
