//! The installers, checked where they can run without touching this machine:
//!
//! - [`debs`]: `installers/build-debs.sh` builds both `.deb`; their control fields, files,
//!   modes and maintainer scripts are read with `dpkg-deb`; then the packages are
//!   installed, installed again (an upgrade), removed and purged with
//!   `dpkg --root=<throwaway dir> --force-script-chrootless`, which runs the real
//!   maintainer scripts against that root, and what each step leaves is checked.
//! - [`install_script`]: `installers/install.sh` does the same under
//!   `SHELFSYNC_INSTALL_ROOT`, with the same files as the package, and uninstalls.
//! - [`units`]: `systemd-analyze security --offline=yes` scores both systemd units.
//!
//! Systemd is not running in the throwaway root, so starting, restarting and stopping are
//! not exercised here: the scripts take their "systemd is not running" branch, and the
//! tests check that they say so and that the unit's enable link is made or removed.
//! Each test skips (with how to get the tool) when dpkg, cargo-deb, systemd-sysusers or
//! systemd-analyze is missing, and fails instead under `SHELFSYNC_REQUIRE_SERVICES=1`.

mod debs;
mod install_script;
mod root;
mod units;
