#!/usr/bin/env bash
# Installs, upgrades or uninstalls a shelfsync daemon on a machine without dpkg; on Debian
# and Ubuntu prefer the .deb (installers/build-debs.sh). Both do the same: this script puts
# the package's files in place, then runs the package's own maintainer scripts
# (installers/deb/), so the user, directories, configuration and systemd steps are shared.
#
#   cargo build --release -p shelfsync-hub -p shelfsync-edge
#   sudo installers/install.sh hub                   # install, or upgrade (restarts it if running)
#   sudo installers/install.sh edge
#   sudo installers/install.sh uninstall hub         # stop, disable, remove binary and unit
#   sudo installers/install.sh uninstall --purge hub # ... and /etc/shelfsync/hub.{toml,env}
#
# Data (/var/lib/shelfsync-ROLE) is never removed. For tests and image builds:
# SHELFSYNC_INSTALL_ROOT=DIR installs under DIR instead of / (systemd is then only told
# through files), SHELFSYNC_BIN_DIR=DIR takes the binary from DIR (target/release by default).
set -euo pipefail

usage() {
  echo "usage: $0 hub|edge | uninstall [--purge] hub|edge" >&2
  exit 2
}
action=install
purge=no
if [ "${1:-}" = uninstall ]; then
  action=uninstall
  shift
  [ "${1:-}" = --purge ] && { purge=yes; shift; }
fi
role="${1:-}"
case "$role" in
  hub|edge) ;;
  *) usage ;;
esac
[ $# -eq 1 ] || usage

here="$(cd "$(dirname "$0")" && pwd)"
root_dir="${SHELFSYNC_INSTALL_ROOT:-}"
root_dir="${root_dir%/}"
if [ -z "$root_dir" ] && [ "$(id -u)" != 0 ]; then
  echo "run as root (sudo)" >&2
  exit 1
fi
package="shelfsync-$role"
scripts="$here/deb"
# What the maintainer scripts expect from dpkg.
export DPKG_MAINTSCRIPT_PACKAGE="$package" DPKG_ROOT="$root_dir"

# The package's files: keep in step with [package.metadata.deb] assets in hub/Cargo.toml
# and edge-agent/Cargo.toml (tests/tests/packages/ compares the two).
files=(
  "usr/bin/$package"
  "usr/lib/systemd/system/$package.service"
  "usr/lib/sysusers.d/$package.conf"
  "usr/share/$package/$role.example.toml"
  "usr/share/doc/$package/README.md"
  "usr/share/doc/$package/operations.md"
)

if [ "$action" = uninstall ]; then
  if [ -e "$root_dir/usr/bin/$package" ]; then
    "$scripts/prerm" remove
    for file in "${files[@]}"; do
      rm -f "${root_dir:?}/$file"
    done
    rmdir "$root_dir/usr/share/$package" "$root_dir/usr/share/doc/$package" 2>/dev/null || true
    "$scripts/postrm" remove
    echo "$package uninstalled"
  elif [ "$purge" = no ]; then
    echo "$package is not installed here" >&2
    exit 1
  fi
  [ "$purge" = no ] || "$scripts/postrm" purge
  exit 0
fi

bin_dir="${SHELFSYNC_BIN_DIR:-$here/../target/release}"
bin="$bin_dir/$package"
[ -x "$bin" ] || { echo "build first: cargo build --release -p shelfsync-hub -p shelfsync-edge (no $bin)" >&2; exit 1; }
previous=""
if [ -x "$root_dir/usr/bin/$package" ]; then
  previous="$("$root_dir/usr/bin/$package" --version 2>/dev/null | awk '{ print $2 }')"
  previous="${previous:-unknown}"
fi
sources=(
  "$bin"
  "$here/$package.service"
  "$here/shelfsync.sysusers"
  "$here/$role.example.toml"
  "$here/../README.md"
  "$here/../docs/operations.md"
)
for i in "${!files[@]}"; do
  mode=0644
  [ "$i" = 0 ] && mode=0755
  # install(1) writes a new file: a running daemon keeps its old binary until the restart.
  install -D -m "$mode" "${sources[$i]}" "$root_dir/${files[$i]}"
done
# Installed by earlier versions of this script: the unit now lives in /usr/lib only.
legacy_unit="$root_dir/lib/systemd/system/$package.service"
if [ -f "$legacy_unit" ] && [ ! "$legacy_unit" -ef "$root_dir/usr/lib/systemd/system/$package.service" ]; then
  rm -f "$legacy_unit"
fi
"$scripts/postinst" configure "$previous"
