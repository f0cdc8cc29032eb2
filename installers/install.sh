#!/usr/bin/env bash
# Installs a shelfsync daemon from a release build on a systemd host.
#   cargo build --release -p shelfsync-hub -p shelfsync-edge
#   sudo installers/install.sh hub     # the hub's machine
#   sudo installers/install.sh edge    # each store's machine
# Idempotent: re-running upgrades the binary and keeps the configuration and the data.
set -euo pipefail
role="${1:-}"
case "$role" in
  hub|edge) ;;
  *) echo "usage: $0 hub|edge" >&2; exit 2 ;;
esac
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
bin="$root/target/release/shelfsync-$role"
[ -x "$bin" ] || { echo "build first: cargo build --release -p shelfsync-hub -p shelfsync-edge" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "run as root (sudo)" >&2; exit 1; }

install -D -m 0755 "$bin" "/usr/bin/shelfsync-$role"
install -D -m 0644 "$here/shelfsync.sysusers" /usr/lib/sysusers.d/shelfsync.conf
systemd-sysusers /usr/lib/sysusers.d/shelfsync.conf
install -D -m 0644 "$here/shelfsync-$role.service" "/lib/systemd/system/shelfsync-$role.service"
install -d -m 0755 /etc/shelfsync
config="/etc/shelfsync/$role.toml"
if [ ! -e "$config" ]; then
  "/usr/bin/shelfsync-$role" print-config | sed "s|^data_dir = .*|data_dir = \"/var/lib/shelfsync-$role\"|" > "$config"
  chmod 0644 "$config"
  echo "wrote $config: review it before starting"
fi
systemctl daemon-reload
if [ "$role" = edge ] && ! grep -q '^store_id' "$config" && [ ! -e /etc/shelfsync/edge.env ]; then
  cat <<MSG
The agent needs its store. At the hub run: shelfsync-hub store add "NAME" --enroll
and run the line it prints here, as root: shelfsync-edge enroll --hub URL --code XXXX-XXXX
(it writes $config and /etc/shelfsync/edge.env and starts the agent). By hand instead: set
  store_id and hub_url in $config, and SHELFSYNC_EDGE_HUB_TOKEN=<token> in /etc/shelfsync/edge.env (mode 0600),
and start it: systemctl enable --now shelfsync-edge
MSG
  exit 0
fi
systemctl enable --now "shelfsync-$role"
echo "shelfsync-$role is running: systemctl status shelfsync-$role; journalctl -u shelfsync-$role"
