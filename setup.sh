#!/usr/bin/env bash
# setup.sh — set up emotion-edge on Raspberry Pi OS Bookworm (64-bit) or Debian 12, in one command.
#
#   ./setup.sh [--edge]   the Pi service: code in /opt/emotion-edge (venv at /opt/emotion-edge/venv),
#                         settings in /etc/emotion-edge/config.toml, the emotion-edge systemd unit enabled
#                         and started, and mosquitto unless the config names another broker
#   ./setup.sh --train    a workstation: .venv in this checkout with the runtime, TensorFlow and plotting
#   ./setup.sh --dev      --train plus the test tools, and a local mosquitto for the demo and the tests
#
#   --mqtt-host H [--mqtt-port P] [--mqtt-user U]
#                         (the Pi) use the broker H (port P, default 1883) and install no mosquitto; with a
#                         user, the password is read from a prompt or stdin and kept only in the config
#   --broker-lan          (the Pi) a mosquitto for the whole network, with generated passwords; prints what
#                         to type into Home Assistant's MQTT integration
#   --uninstall           stop and remove the service, its files and user, and clear its retained MQTT topics
#
# Safe to run again (after a `git pull`, say): it changes only what differs, and says what it changed.
# Run as a normal user it uses sudo for the system parts. Where systemd is not running (a container, CI,
# a chroot building an image) it installs and enables the unit but does not start it.
set -euo pipefail
# A user's own umask (077, say) would pass through sudo into the venv, /opt and /etc/emotion-edge and lock the
# service user out of them.
umask 022

readonly PREFIX=/opt/emotion-edge
readonly APP=$PREFIX/app
readonly SERVICE_VENV=$PREFIX/venv
readonly CONFIG=/etc/emotion-edge/config.toml
readonly UNIT=/etc/systemd/system/emotion-edge.service
readonly SERVICE_USER=emotion-edge
# The unit's StateDirectory= (the pause state, the spool), and the service user's home.
readonly STATE_DIR=/var/lib/emotion-edge
# --broker-lan: mosquitto's listener for the network, its password file, and Home Assistant's credentials
# (root only) so a later run prints the same values.
readonly BROKER_CONF=/etc/mosquitto/conf.d/emotion-edge.conf
readonly BROKER_PASSWD=/etc/mosquitto/emotion-edge.passwd
readonly BROKER_NOTE=/etc/emotion-edge/broker-lan.txt
readonly BROKER_PORT=1883
readonly HA_MQTT_USER=homeassistant
# The files the service runs from; copied to $APP so the service does not depend on (nor can read) a
# checkout in someone's home directory.
readonly APP_FILES=(edge models pyproject.toml README.md config.example.toml)
CHECKOUT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly CHECKOUT
# Debian's interpreter, not whatever `python3` is first on PATH (a pyenv shim, say): the service user must
# be able to run it, and python3-venv is what makes its venvs work.
PYTHON=${PYTHON:-/usr/bin/python3}
INDEX_URL=${PIP_INDEX_URL:-https://pypi.org/simple/}

changes=0
apt_updated=0
SUDO=()

log() { printf 'setup: %s\n' "$*"; }
die() {
  printf 'setup: error: %s\n' "$*" >&2
  exit 1
}
changed() {
  changes=$((changes + 1))
  log "$*"
}

usage() {
  sed -n '2,19s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

as_root() { "${SUDO[@]}" "$@"; }

# --- checks that fail early, before anything is changed -------------------------------------------------

os_field() { sed -n "s/^$1=//p" /etc/os-release | tr -d '"'; }

check_os() {
  [ "$(uname -s)" = Linux ] || die "unsupported OS $(uname -s): emotion-edge installs on Raspberry Pi OS or Debian 12"
  [ -r /etc/os-release ] || die "unsupported OS: no /etc/os-release; emotion-edge installs on Raspberry Pi OS or Debian 12"
  local id like version name
  id=$(os_field ID)
  like=$(os_field ID_LIKE)
  version=$(os_field VERSION_ID)
  name=$(os_field PRETTY_NAME)
  name=${name:-$id}
  case "$id" in
    debian | raspbian)
      # testing/sid have no VERSION_ID: they are newer than 12
      if [ -n "$version" ] && [ "${version%%.*}" -lt 12 ]; then
        die "unsupported OS $name: needs Debian 12 (bookworm) or newer, or Raspberry Pi OS Bookworm"
      fi
      ;;
    *)
      case " $like " in
        *" debian "*) log "warning: $name is not Debian or Raspberry Pi OS; trying anyway" ;;
        *) die "unsupported OS $name: setup.sh needs apt (Raspberry Pi OS or Debian 12); see README.md to install by hand" ;;
      esac
      ;;
  esac
  command -v apt-get >/dev/null || die "unsupported OS $name: apt-get not found"
  case "$(uname -m)" in
    x86_64 | aarch64) ;;
    armv7l | armv6l) die "32-bit Arm is not supported (no ai-edge-litert or OpenCV wheels): use Raspberry Pi OS (64-bit)" ;;
    *) die "unsupported processor $(uname -m): emotion-edge runs on aarch64 (64-bit Pi) and x86_64" ;;
  esac
}

# EMOTION_EDGE_PI=yes|no overrides the detection: for building a Pi's SD-card image in a chroot on a PC, say.
is_pi() {
  case "${EMOTION_EDGE_PI:-auto}" in
    yes) return 0 ;;
    no) return 1 ;;
    *) grep -qa 'Raspberry Pi' /proc/device-tree/model 2>/dev/null ;;
  esac
}
systemd_running() { [ -d /run/systemd/system ]; }

check_python() {
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 9))' ||
    die "$PYTHON is Python $("$PYTHON" -c 'import platform; print(platform.python_version())'): emotion-edge needs Python 3.9 or newer"
}

# Reachability only: any answer, even an HTTP error or a certificate pip's own settings may accept, will do.
check_index() {
  local reason
  reason=$("$PYTHON" - "$INDEX_URL" 2>&1 <<'EOF'
import ssl
import sys
import urllib.error
import urllib.request

try:
    urllib.request.urlopen(sys.argv[1].rstrip("/") + "/pip/", timeout=20)
except urllib.error.HTTPError:
    pass
except urllib.error.URLError as exc:
    if not isinstance(exc.reason, ssl.SSLError):
        sys.exit(str(exc.reason))
except OSError as exc:
    sys.exit(str(exc))
EOF
  ) || die "cannot reach the Python package index $INDEX_URL ($reason): check the network, or the proxy (https_proxy, PIP_INDEX_URL)"
}

# --- Debian packages --------------------------------------------------------------------------------------

installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]; }

apt_install() {
  local missing=() p
  for p in "$@"; do installed "$p" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$apt_updated" -eq 0 ]; then
    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null ||
      die "apt-get update failed: check the network connection to the Debian/Raspberry Pi OS mirror"
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
    die "apt-get could not install ${missing[*]} (is the mirror reachable? see the apt-get output above)"
  changed "installed Debian packages: ${missing[*]}"
}

has_candidate() { apt-cache policy "$1" 2>/dev/null | grep -q 'Candidate: [0-9]'; }

# --- Python environment -------------------------------------------------------------------------------------

# venv DIR SYSTEM_SITE(yes|no) [sudo]: (re)create DIR unless it is a working venv of the right kind.
make_venv() {
  local dir=$1 system_site=$2 run=()
  [ "${3:-}" = sudo ] && run=("${SUDO[@]}")
  if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c '' 2>/dev/null &&
    grep -qx "include-system-site-packages = $( [ "$system_site" = yes ] && echo true || echo false)" "$dir/pyvenv.cfg"; then
    return 0
  fi
  local flags=()
  [ "$system_site" = yes ] && flags+=(--system-site-packages)
  "${run[@]}" rm -rf "$dir"
  "${run[@]}" "$PYTHON" -m venv "${flags[@]}" "$dir" || die "could not create a venv in $dir with $PYTHON (is python3-venv installed?)"
  echo '*' | "${run[@]}" tee "$dir/.gitignore" >/dev/null # as Python 3.13's venv does: git ignores it whole
  changed "created venv $dir$( [ "$system_site" = yes ] && echo ' (with system site packages, for picamera2)')"
}

# What a successful `pip install -e SPEC` into VENV leaves behind, to skip it when nothing changed.
pip_stamp() { echo "$2 $(sha256sum "$CHECKOUT/pyproject.toml" | cut -d' ' -f1) $("$PYTHON" -V 2>&1)"; }
pip_needed() {
  ! [ -x "$1/bin/emotion-edge" ] || [ "$(cat "$1/.setup-stamp" 2>/dev/null)" != "$(pip_stamp "$@")" ]
}

# pip_install VENV SPEC [sudo]: `pip install -e SPEC` unless the same request already succeeded there.
pip_install() {
  local venv=$1 spec=$2 run=()
  [ "${3:-}" = sudo ] && run=("${SUDO[@]}")
  pip_needed "$venv" "$spec" || return 0
  log "pip install -e '$spec' into $venv"
  # sudo resets the environment: the index and proxy settings the preflight check used go along explicitly
  local name passed=()
  for name in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST http_proxy https_proxy no_proxy HTTP_PROXY \
    HTTPS_PROXY NO_PROXY; do
    if [ -n "${!name:-}" ]; then passed+=("$name=${!name}"); fi
  done
  "${run[@]}" env "${passed[@]}" PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_ROOT_USER_ACTION=ignore \
    "$venv/bin/python" -m pip install -q -e "$spec" || die "pip could not install $spec into $venv (see above)"
  pip_stamp "$venv" "$spec" | "${run[@]}" tee "$venv/.setup-stamp" >/dev/null
  changed "installed $spec into $venv"
}

# --- the service --------------------------------------------------------------------------------------------

# Copy the runtime files to $APP when they differ (compiled bytecode, build metadata and the float
# training weights excepted).
sync_app() {
  local item differ=0
  for item in "${APP_FILES[@]}"; do
    [ -e "$CHECKOUT/$item" ] || die "$CHECKOUT/$item is missing: run setup.sh from a complete checkout"
    diff -rq --exclude=__pycache__ --exclude='*.keras' "$CHECKOUT/$item" "$APP/$item" >/dev/null 2>&1 || differ=1
  done
  [ "$differ" -eq 0 ] && return 0
  as_root mkdir -p "$APP"
  for item in "${APP_FILES[@]}"; do
    as_root rm -rf "$APP/$item"
    as_root cp -R --no-preserve=ownership "$CHECKOUT/$item" "$APP/$item"
  done
  # *.keras: the float weights are for fine-tuning on a workstation; the Pi runs the .tflite only
  as_root find "$APP" \( -name __pycache__ -o -name '*.keras' \) -prune -exec rm -rf {} +
  as_root chmod -R u=rwX,go=rX "$APP"
  changed "copied the runtime to $APP"
}

ensure_user() {
  if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
    as_root useradd --system --user-group --groups video --home-dir "$STATE_DIR" --no-create-home \
      --shell /usr/sbin/nologin --comment "emotion-edge service" "$SERVICE_USER"
    changed "created system user $SERVICE_USER (in group video, for the cameras)"
  elif ! id -nG "$SERVICE_USER" | grep -qw video; then
    as_root usermod -a -G video "$SERVICE_USER"
    changed "added $SERVICE_USER to group video"
  fi
}

ensure_config() {
  as_root test -e "$CONFIG" && return 0 # as root: /etc/emotion-edge is not the user's to look into
  # 0640 root:emotion-edge: it may hold the broker password; the service reads it, only root edits it.
  as_root install -D -m 0640 -o root -g "$SERVICE_USER" "$CHECKOUT/config.example.toml" "$CONFIG"
  changed "wrote the default $CONFIG (edit it, then: sudo systemctl restart emotion-edge)"
}

# Prints "HOST PORT" of the broker the TOML on stdin names (defaults: localhost 1883). PYTHON is the venv's:
# it has tomli where Python < 3.11 lacks tomllib.
broker_of() {
  "$1" -c '
import sys

try:
    import tomllib
except ImportError:
    import tomli as tomllib

mqtt = tomllib.loads(sys.stdin.read()).get("mqtt", {})
print(mqtt.get("host", "localhost"), mqtt.get("port", 1883))
'
}

is_local_host() {
  case "$1" in
    localhost | 127.* | ::1 | "$(hostname)" | "$(hostname -f 2>/dev/null || hostname)") return 0 ;;
    *) return 1 ;;
  esac
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Mosquitto from Debian, running: by systemd where it runs, else started here as a daemon.
ensure_mosquitto() {
  local port=$1
  apt_install mosquitto
  if systemd_running; then
    systemctl is-enabled --quiet mosquitto || {
      as_root systemctl enable --quiet mosquitto
      changed "enabled mosquitto"
    }
    systemctl is-active --quiet mosquitto || {
      as_root systemctl start mosquitto ||
        die "mosquitto did not start (another broker on port $port?): journalctl -u mosquitto"
      changed "started mosquitto"
    }
  elif ! port_open "$port"; then
    log "systemd is not running here (container/CI?): starting mosquitto directly"
    as_root install -d -o mosquitto -m 0750 /run/mosquitto /var/log/mosquitto
    as_root /usr/sbin/mosquitto -d -c /etc/mosquitto/mosquitto.conf </dev/null >/dev/null 2>&1 ||
      die "mosquitto did not start: see /var/log/mosquitto/mosquitto.log"
    for _ in $(seq 50); do
      port_open "$port" && break
      sleep 0.1
    done
    port_open "$port" || die "mosquitto started but nothing listens on port $port (see /etc/mosquitto/conf.d)"
    changed "started mosquitto (port $port)"
  fi
}

# Install the unit when it differs; enable it; (re)start it where systemd runs and anything changed.
ensure_service() {
  local unit_changed=0
  if ! cmp -s "$CHECKOUT/systemd/emotion-edge.service" "$UNIT"; then
    as_root install -D -m 0644 "$CHECKOUT/systemd/emotion-edge.service" "$UNIT"
    unit_changed=1
    changed "installed $UNIT"
  fi
  if ! systemd_running; then
    if command -v systemctl >/dev/null && ! systemctl is-enabled --quiet emotion-edge 2>/dev/null; then
      as_root systemctl enable --quiet emotion-edge 2>/dev/null && changed "enabled emotion-edge (starts at boot)"
    fi
    log "systemd is not running here (container/CI?): not starting the service; by hand:"
    log "  sudo -u $SERVICE_USER $SERVICE_VENV/bin/emotion-edge run --config $CONFIG"
    return 0
  fi
  [ "$unit_changed" -eq 1 ] && as_root systemctl daemon-reload
  systemctl is-enabled --quiet emotion-edge || {
    as_root systemctl enable --quiet emotion-edge
    changed "enabled emotion-edge (starts at boot)"
  }
  # A crash loop (no camera, a wrong broker) trips the unit's start limit, which refuses even this start
  # once the cause is fixed: the count starts again.
  as_root systemctl reset-failed emotion-edge 2>/dev/null || true
  if ! systemctl is-active --quiet emotion-edge; then
    if as_root systemctl start emotion-edge; then changed "started emotion-edge"; fi
  elif [ "$changes" -gt 0 ]; then
    if as_root systemctl restart emotion-edge; then changed "restarted emotion-edge"; fi
  fi
  if ! systemctl is-active --quiet emotion-edge; then
    as_root journalctl -u emotion-edge -n 20 --no-pager >&2 || true
    die "emotion-edge did not start (log above; more: journalctl -u emotion-edge)"
  fi
}

# --- the broker: a remote one (--mqtt-host), or mosquitto for the network (--broker-lan) ------------------

# set_mqtt HOST PORT USER: writes [mqtt] host, port, username and the password read from stdin into
# $CONFIG, keeping its comments; changes the file only when a value differs. The password never appears on
# a command line (where `ps` shows it), only on stdin and in the 0640 root:$SERVICE_USER config.
set_mqtt() {
  local result
  result=$( { printf '%s\0%s\0%s\0' "$1" "$2" "$3"; cat; } | as_root "$PYTHON" -c '
import grp
import json
import os
import re
import sys
import tempfile

path, group = sys.argv[1], sys.argv[2]
host, port, user, password = sys.stdin.read().split("\0", 3)
password = password.rstrip("\n")  # the line read from a prompt or a pipe
values = {"host": json.dumps(host), "port": str(int(port)), "username": json.dumps(user),
          "password": json.dumps(password, ensure_ascii=False)}
with open(path) as f:
    lines = f.read().splitlines(keepends=True)
start = next((i for i, line in enumerate(lines) if line.strip() == "[mqtt]"), None)
if start is None:
    lines += ["\n", "[mqtt]\n"]
    start = len(lines) - 1
end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
for key, value in values.items():
    pattern = re.compile(rf"^#?\s*{key}\s*=")
    at = next((i for i in range(start + 1, end) if pattern.match(lines[i])), None)
    if at is None:
        lines.insert(start + 1, f"{key} = {value}\n")
        end += 1
    else:
        lines[at] = f"{key} = {value}\n"
new = "".join(lines)
with open(path) as f:
    if f.read() == new:
        print("same")
        sys.exit(0)
fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".config.")
with os.fdopen(fd, "w") as f:
    f.write(new)
os.chmod(tmp, 0o640)
if os.geteuid() == 0:
    os.chown(tmp, 0, grp.getgrnam(group).gr_gid)
os.replace(tmp, path)
print("changed")
' "$CONFIG" "$SERVICE_USER") || die "could not write the broker settings into $CONFIG"
  [ "$result" = changed ] && changed "wrote the broker $1:$2${3:+ (user $3)} into $CONFIG"
  return 0
}

# The password for --mqtt-user: typed at a prompt (not echoed), or the first line of stdin (a pipe, a file).
read_password() {
  local password=""
  if [ -t 0 ]; then
    read -rsp "MQTT password for $1: " password </dev/tty || true
    echo >&2
  else
    IFS= read -r password || true
  fi
  printf '%s' "$password"
}

new_password() {
  "$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(18))'
}

# mosquitto listening on the network on $BROKER_PORT, anonymous access off, two users: $SERVICE_USER for
# the service (its password goes into $CONFIG) and $HA_MQTT_USER for Home Assistant (kept in $BROKER_NOTE,
# root only). Passwords are made once; later runs keep them and print the same values.
setup_broker_lan() {
  local service_password ha_password conf_changed=0 address
  apt_install mosquitto
  if as_root test -s "$BROKER_NOTE" && as_root test -s "$BROKER_PASSWD"; then
    # a note without one of the lines (edited by hand) makes new passwords below, not an exit here
    read -r ha_password < <(as_root sed -n "s/^$HA_MQTT_USER //p" "$BROKER_NOTE") || true
    read -r service_password < <(as_root sed -n "s/^$SERVICE_USER //p" "$BROKER_NOTE") || true
  fi
  if [ -z "${ha_password:-}" ] || [ -z "${service_password:-}" ]; then
    ha_password=$(new_password)
    service_password=$(new_password)
    printf '%s %s\n%s %s\n' "$HA_MQTT_USER" "$ha_password" "$SERVICE_USER" "$service_password" |
      as_root install -D -m 0600 -o root -g root /dev/stdin "$BROKER_NOTE"
    # mosquitto_passwd -U hashes a file of user:password lines in place: no password on a command line.
    printf '%s:%s\n%s:%s\n' "$HA_MQTT_USER" "$ha_password" "$SERVICE_USER" "$service_password" |
      as_root install -D -m 0640 -o root -g mosquitto /dev/stdin "$BROKER_PASSWD"
    as_root mosquitto_passwd -U "$BROKER_PASSWD" || die "mosquitto_passwd could not hash $BROKER_PASSWD"
    conf_changed=1
    changed "made passwords for $HA_MQTT_USER and $SERVICE_USER ($BROKER_PASSWD)"
  fi
  local conf
  conf=$(printf '%s\n' "# Written by emotion-edge's setup.sh --broker-lan: mosquitto for the whole network, passwords required." \
    "listener $BROKER_PORT" "allow_anonymous false" "password_file $BROKER_PASSWD")
  if [ "$(as_root cat "$BROKER_CONF" 2>/dev/null)" != "$conf" ]; then
    printf '%s\n' "$conf" | as_root install -D -m 0644 /dev/stdin "$BROKER_CONF"
    conf_changed=1
    changed "wrote $BROKER_CONF (mosquitto listens on the network, port $BROKER_PORT)"
  fi
  set_mqtt localhost "$BROKER_PORT" "$SERVICE_USER" <<<"$service_password" # not a pipe: its count of changes stays here
  [ "$conf_changed" -eq 1 ] && restart_mosquitto
  ensure_mosquitto "$BROKER_PORT"
  address=$(hostname -I 2>/dev/null | awk '{print $1}')
  log "Home Assistant: Settings > Devices & services > Add integration > MQTT, then enter:"
  log "  Broker:   ${address:-$(hostname).local}   (or $(hostname).local)"
  log "  Port:     $BROKER_PORT"
  log "  Username: $HA_MQTT_USER"
  log "  Password: $ha_password"
}

# A running mosquitto reads a new listener only at start.
restart_mosquitto() {
  if systemd_running; then
    if systemctl is-active --quiet mosquitto; then as_root systemctl restart mosquitto && changed "restarted mosquitto"; fi
  elif [ -s /run/mosquitto/mosquitto.pid ]; then
    as_root kill "$(as_root cat /run/mosquitto/mosquitto.pid)" 2>/dev/null || true
    for _ in $(seq 50); do
      port_open "$BROKER_PORT" || break
      sleep 0.1
    done
  fi
}

# --- removal ----------------------------------------------------------------------------------------------

# Stop the service first (it would republish), clear what it left on the broker while its venv and config
# are still there, then remove everything setup.sh made for it. mosquitto itself stays installed.
uninstall() {
  if [ -e "$UNIT" ]; then
    if systemd_running; then
      as_root systemctl disable --now --quiet emotion-edge || true
      changed "stopped and disabled emotion-edge"
    elif command -v systemctl >/dev/null && systemctl is-enabled --quiet emotion-edge 2>/dev/null; then
      as_root systemctl disable --quiet emotion-edge 2>/dev/null || true # works offline: removes the links
      changed "disabled emotion-edge"
    fi
  fi
  if [ -x "$SERVICE_VENV/bin/emotion-edge" ] && as_root test -e "$CONFIG"; then
    if as_root "$SERVICE_VENV/bin/emotion-edge" forget --config "$CONFIG"; then
      changed "cleared the device's retained topics and Home Assistant discovery on the broker"
    else
      log "warning: could not clear the device's retained MQTT topics (broker away?); later: mosquitto_pub -r -n -t TOPIC"
    fi
  fi
  local path lan=0
  if as_root test -e "$BROKER_CONF"; then lan=1; fi
  for path in "$UNIT" "$UNIT.d" "$PREFIX" "$(dirname "$CONFIG")" "$STATE_DIR" "$BROKER_CONF" "$BROKER_PASSWD"; do
    if as_root test -e "$path"; then
      as_root rm -rf "$path"
      changed "removed $path"
    fi
  done
  if systemd_running; then
    as_root systemctl daemon-reload
    as_root systemctl reset-failed emotion-edge 2>/dev/null || true
  fi
  if [ "$lan" -eq 1 ]; then restart_mosquitto; fi  # back to listening on this machine only
  if id -u "$SERVICE_USER" >/dev/null 2>&1; then
    if as_root userdel "$SERVICE_USER"; then
      changed "removed the system user $SERVICE_USER"
    else
      log "warning: could not remove the user $SERVICE_USER (a process still runs as it?): sudo userdel $SERVICE_USER"
    fi
  fi
}

# --- modes ----------------------------------------------------------------------------------------------------

# Python and the package index, before any long step: apt installs python3 itself when it is missing.
preflight() {
  local venv=$1 spec=$2
  apt_install python3 python3-venv
  check_python
  if pip_needed "$venv" "$spec"; then check_index; fi
}

setup_edge() {
  local pi=no spec=$APP host port
  if is_pi; then
    pi=yes
    spec="${APP}[pi]"
    log "Raspberry Pi: $(tr -d '\0' 2>/dev/null </proc/device-tree/model || echo "EMOTION_EDGE_PI=$EMOTION_EDGE_PI")"
  fi
  preflight "$SERVICE_VENV" "$spec"
  if [ "$pi" = yes ]; then
    if installed python3-picamera2 || has_candidate python3-picamera2; then
      apt_install python3-picamera2
    else
      log "warning: python3-picamera2 is not in this system's apt sources (not Raspberry Pi OS?): USB webcams only"
    fi
  fi
  sync_app
  # On a Pi the venv sees Debian's packages so picamera2 (and libcamera) import; pip then keeps Debian's
  # numpy 1.24, which picamera2's compiled helpers are built against (the [pi] extra pins numpy<2).
  make_venv "$SERVICE_VENV" "$pi" sudo
  pip_install "$SERVICE_VENV" "$spec" sudo
  if [ "$changes" -gt 0 ]; then as_root "$SERVICE_VENV/bin/python" -m compileall -q "$APP/edge" >/dev/null; fi
  ensure_user
  ensure_config
  if [ -n "$MQTT_HOST" ]; then
    set_mqtt "$MQTT_HOST" "$MQTT_PORT" "$MQTT_USER" <<<"$MQTT_PASSWORD" # not a pipe: its count of changes stays here
  elif [ "$BROKER_LAN" -eq 1 ]; then
    setup_broker_lan
  fi
  as_root "$SERVICE_VENV/bin/emotion-edge" check-config "$CONFIG" >/dev/null ||
    die "$CONFIG is not valid (see above): fix it, then run setup.sh again"
  read -r host port < <(as_root cat "$CONFIG" | broker_of "$SERVICE_VENV/bin/python") ||
    die "cannot read [mqtt] host and port from $CONFIG"
  if is_local_host "$host"; then
    ensure_mosquitto "$port"
  else
    log "the config names the broker $host:$port: not installing mosquitto"
  fi
  ensure_service
}

setup_workstation() {
  local extra=$1 venv=$CHECKOUT/.venv
  preflight "$venv" "${CHECKOUT}[$extra]"
  # dev: the broker the demo and the tests use, and the tools tests/test_deploy.py runs
  # chromium: the browser tests of the live view (tests/test_preview.py) and of the report pages
  # (tests/test_report.py); iproute2: the live view's list of local addresses
  if [ "$extra" = dev ]; then apt_install mosquitto shellcheck systemd python3-seccomp chromium chromium-driver iproute2; fi
  make_venv "$venv" no
  pip_install "$venv" "${CHECKOUT}[$extra]"
  if [ "$extra" = dev ]; then ensure_mosquitto 1883; fi
}

MQTT_HOST=""
MQTT_PORT=""
MQTT_USER=""
MQTT_PASSWORD=""
BROKER_LAN=0

# value OPTION VALUE: the option's argument, or a stop naming the option.
value() {
  if [ $# -lt 2 ] || [ -z "$2" ] || [ "${2#--}" != "$2" ]; then die "$1 needs a value"; fi
  printf '%s' "$2"
}

main() {
  local mode=edge broker_flags=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --edge) mode=edge ;;
      --train) mode=train ;;
      --dev) mode=dev ;;
      --uninstall) mode=uninstall ;;
      --mqtt-host | --mqtt-port | --mqtt-user)
        local given
        given=$(value "$@") || exit 1
        case "$1" in
          --mqtt-host) MQTT_HOST=$given ;;
          --mqtt-port) MQTT_PORT=$given ;;
          --mqtt-user) MQTT_USER=$given ;;
        esac
        broker_flags=1
        shift
        ;;
      --broker-lan)
        BROKER_LAN=1
        broker_flags=1
        ;;
      -h | --help)
        usage
        exit 0
        ;;
      *)
        usage >&2
        die "unknown option: $1"
        ;;
    esac
    shift
  done
  if [ "$broker_flags" -eq 1 ]; then
    [ "$mode" = edge ] || die "--mqtt-host, --mqtt-port, --mqtt-user and --broker-lan are for the Pi (--edge), not --$mode"
    [ -z "$MQTT_HOST" ] || [ "$BROKER_LAN" -eq 0 ] || die "choose one: --mqtt-host (a broker elsewhere) or --broker-lan (this Pi's)"
    [ -n "$MQTT_HOST" ] || [ -z "$MQTT_PORT$MQTT_USER" ] || die "--mqtt-port and --mqtt-user need --mqtt-host"
    case "$MQTT_PORT" in
      "") MQTT_PORT=1883 ;;
      *[!0-9]*) die "--mqtt-port: expected a port number 1..65535, got '$MQTT_PORT'" ;;
      *) if [ "$MQTT_PORT" -lt 1 ] || [ "$MQTT_PORT" -gt 65535 ]; then die "--mqtt-port: expected a port number 1..65535, got '$MQTT_PORT'"; fi ;;
    esac
    # Asked first, before the long steps, so nobody waits at a prompt they cannot see coming.
    if [ -n "$MQTT_USER" ]; then MQTT_PASSWORD=$(read_password "$MQTT_USER@$MQTT_HOST"); fi
  fi

  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "run this as root, or install sudo: it needs root for apt-get and /etc"
    SUDO=(sudo)
  fi
  check_os
  log "mode: --$mode ($(os_field PRETTY_NAME), $(uname -m))"
  case "$mode" in
    edge) setup_edge ;;
    train | dev) setup_workstation "$mode" ;;
    uninstall) uninstall ;;
  esac
  if [ "$changes" -eq 0 ]; then log "done: everything was already set up, nothing changed"; else log "done: $changes change(s)"; fi
}

# Sourced (by tests/test_deploy.py) it only defines the functions.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi
