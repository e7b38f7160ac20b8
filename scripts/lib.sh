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

# Build dependencies: rdkafka builds librdkafka with cmake.
ensure_build_deps() {
  apt_install cmake pkg-config build-essential zlib1g-dev
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
