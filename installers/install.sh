#!/usr/bin/env bash
# Installs shelfsync-hub from a release build on a systemd host.
#   cargo build --release -p shelfsync-hub && sudo installers/install.sh
# Idempotent: re-running upgrades the binary and keeps the configuration and data.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
bin="$root/target/release/shelfsync-hub"
[ -x "$bin" ] || { echo "build first: cargo build --release -p shelfsync-hub" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root (sudo)" >&2; exit 1; }

install -D -m 0755 "$bin" /usr/bin/shelfsync-hub
install -D -m 0644 "$here/shelfsync.sysusers" /usr/lib/sysusers.d/shelfsync.conf
systemd-sysusers /usr/lib/sysusers.d/shelfsync.conf
install -D -m 0644 "$here/shelfsync-hub.service" /lib/systemd/system/shelfsync-hub.service
if [ ! -e /etc/shelfsync/hub.toml ]; then
  install -d -m 0755 /etc/shelfsync
  /usr/bin/shelfsync-hub print-config | sed 's|^data_dir = .*|data_dir = "/var/lib/shelfsync-hub"|' > /etc/shelfsync/hub.toml
  chmod 0644 /etc/shelfsync/hub.toml
  echo "wrote /etc/shelfsync/hub.toml (review listen and data_dir)"
fi
systemctl daemon-reload
systemctl enable --now shelfsync-hub
echo "shelfsync-hub is running; the admin token is in /var/lib/shelfsync-hub/admin-token"
