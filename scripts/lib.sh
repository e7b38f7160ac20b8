#!/usr/bin/env bash
# Helpers shared by scripts/up, scripts/test and scripts/bench-edge.
# Everything here is idempotent: it installs only what is missing and starts
# only what does not already answer.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"
TANSU_VERSION="0.6.0"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

log() { echo "==> $*" >&2; }

# apt_install PKG...: installs the packages that are not installed yet.
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]} (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
}

# What the build needs from the system, as "probe|Debian package|what": a
# probe is a command that must be on PATH or a header that must exist.
# librdkafka (rdkafka's cmake-build) needs cmake, a C/C++ compiler, zlib and
# the curl headers: its CMake build defines WITH_OAUTHBEARER_OIDC (to 0) even
# without curl, and rdkafka_conf.c tests it with #ifdef, so it includes
# <curl/curl.h> whatever the features say.
BUILD_DEPS=(
  "cmd:cmake|cmake|cmake (builds librdkafka)"
  "cmd:cc|build-essential|a C compiler"
  "cmd:c++|build-essential|a C++ compiler"
  "cmd:make|build-essential|make"
  "cmd:pkg-config|pkg-config|pkg-config"
  "header:zlib.h|zlib1g-dev|the zlib headers"
  "header:curl/curl.h|libcurl4-openssl-dev|the curl headers (librdkafka includes <curl/curl.h>)"
)

# has_header NAME: the C compiler finds #include <NAME>.
has_header() {
  local d
  for d in /usr/include /usr/local/include "/usr/include/$(gcc -dumpmachine 2>/dev/null)"; do
    [ -f "$d/$1" ] && return 0
  done
  return 1
}

# missing_build_deps: prints "package|what" for every dependency not present.
missing_build_deps() {
  local dep probe pkg what
  for dep in "${BUILD_DEPS[@]}"; do
    IFS='|' read -r probe pkg what <<<"$dep"
    case "$probe" in
      cmd:*) command -v "${probe#cmd:}" >/dev/null 2>&1 && continue ;;
      header:*) has_header "${probe#header:}" && continue ;;
    esac
    echo "$pkg|$what"
  done
}

# Installs what the build needs (apt), then checks that it is all there, so a
# missing package is named here rather than by a C compiler error deep in the
# build log.
ensure_build_deps() {
  local missing pkgs
  missing="$(missing_build_deps)"
  if [ -n "$missing" ]; then
    pkgs="$(cut -d'|' -f1 <<<"$missing" | sort -u | tr '\n' ' ')"
    # shellcheck disable=SC2086
    apt_install $pkgs || true
  fi
  missing="$(missing_build_deps)"
  if [ -n "$missing" ]; then
    echo "error: the build needs packages that are not installed and could not be installed:" >&2
    while IFS='|' read -r pkg what; do
      echo "  - $what: Debian package $pkg" >&2
    done <<<"$missing"
    echo "install them (apt-get install $(cut -d'|' -f1 <<<"$missing" | sort -u | tr '\n' ' ')) and run again" >&2
    exit 1
  fi
}

# The development/CI broker (tansu, Kafka API), built once with cargo install.
ensure_tansu() {
  if tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    return 0
  fi
  log "installing tansu $TANSU_VERSION (cargo install, several minutes, once)"
  cargo install tansu --locked --version "$TANSU_VERSION" --features dynostore,libsql
}

# port_open PORT: something answers on 127.0.0.1:PORT.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# wait_port PORT SECONDS NAME
wait_port() {
  local port=$1 secs=$2 name=$3 i
  for ((i = 0; i < secs * 10; i++)); do
    port_open "$port" && return 0
    sleep 0.1
  done
  echo "error: $name did not open port $port within ${secs}s" >&2
  return 1
}

# start_tansu PORT DIR: broker with SQLite storage under DIR (survives restarts).
# Prints the pid.
start_tansu() {
  local port=$1 dir=$2
  mkdir -p "$dir"
  (cd "$dir" && exec tansu broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "sqlite://tansu.db" >"broker.log" 2>&1) &
  echo $!
  wait_port "$port" 30 "tansu"
}

# start_clickhouse HTTP_PORT TCP_PORT DIR: a private clickhouse-server with its
# data, logs and config under DIR. Prints the pid.
start_clickhouse() {
  local http=$1 tcp=$2 dir
  dir="$(mkdir -p "$3" && cd "$3" && pwd)"
  mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas" "$dir/log"
  sed -e "s#<http_port>8123</http_port>#<http_port>$http</http_port>#" \
      -e "s#<tcp_port>9000</tcp_port>#<tcp_port>$tcp</tcp_port>#" \
      -e "s#<interserver_http_port>9009</interserver_http_port>#<interserver_http_port>$((tcp + 9))</interserver_http_port>#" \
      -e "s#/var/lib/clickhouse/tmp/#$dir/tmp/#" \
      -e "s#/var/lib/clickhouse/user_files/#$dir/user_files/#" \
      -e "s#/var/lib/clickhouse/format_schemas/#$dir/format_schemas/#" \
      -e "s#/var/lib/clickhouse/#$dir/data/#" \
      -e "s#/var/log/clickhouse-server/#$dir/log/#" \
      -e "s#<listen_host>::1</listen_host>##" \
      /etc/clickhouse-server/config.xml >"$dir/config.xml"
  cp /etc/clickhouse-server/users.xml "$dir/users.xml"
  (cd "$dir" && exec clickhouse-server --config-file="$dir/config.xml" >"$dir/log/stdout.log" 2>&1) &
  echo $!
  wait_port "$http" 60 "clickhouse-server"
}
