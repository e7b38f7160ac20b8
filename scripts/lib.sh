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

# report_disk: the free space where the build and the tests write, with a
# warning when it is under what a clean run of scripts/test takes
# (DISK_NEEDED_GB, measured: target/, the tansu build, node_modules, .venv,
# the fuzz targets and the services' data folders), so that a run that runs
# out of disk says why before the first "No space left on device".
DISK_NEEDED_GB=8
report_disk() {
  local dir avail_kb
  for dir in "$ROOT" "${TMPDIR:-/tmp}"; do
    avail_kb=$(df -Pk "$dir" | awk 'NR == 2 { print $4 }')
    log "disk: $((avail_kb / 1024 / 1024)) GB free for $dir"
    if [ "$avail_kb" -lt $((DISK_NEEDED_GB * 1024 * 1024)) ]; then
      echo "warning: a clean run needs about $DISK_NEEDED_GB GB free (builds, broker and ClickHouse data); it may fail with 'No space left on device'" >&2
    fi
  done
}

# apt_install [--no-install-recommends] PKG...: installs the packages that
# are not installed yet.
apt_install() {
  local opts=() missing=()
  if [ "${1:-}" = --no-install-recommends ]; then opts+=("$1"); shift; fi
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]} (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${opts[@]}" "${missing[@]}" >/dev/null
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

# The development/CI broker (tansu, Kafka API), built once with cargo install
# (release, about 400 crates: ~15 minutes of both cores on a 2-core machine).
# Features: libsql is the SQLite storage the scripts and tests use; dynostore
# adds memory:// for the benchmarks at almost no cost (object_store is in
# tansu's tree either way).
TANSU_FEATURES="dynostore,libsql"
TANSU_BUILD_DIR="$ROOT/target/tansu-build"

# The browser tests' tools: node (with npm) for the SDK's build, unit tests
# and the Chromium driver, and Debian's chromium. The Rust build never needs
# them (the built SDK is committed).
ensure_browser_deps() {
  command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm || true
  apt_install chromium || true
  local missing=()
  command -v node >/dev/null || missing+=("node (Debian package nodejs)")
  command -v npm >/dev/null || missing+=("npm (Debian package npm)")
  command -v chromium >/dev/null || missing+=("chromium (Debian package chromium)")
  if [ ${#missing[@]} -gt 0 ]; then
    echo "error: the browser tests need: ${missing[*]}" >&2
    exit 1
  fi
}

# sdk/: installs its locked dependencies (npm ci), runs its unit tests, and
# fails if the committed dist/sdk.js is not what its sources build, or is
# over its size budget.
check_sdk() {
  (cd "$ROOT/sdk" && npm ci --no-audit --no-fund --loglevel=error && npm test && npm run check)
}

# dashboard/: the same for the analytics dashboard (its committed dist/ and
# size budget; playwright-core for tests/dashboard.rs).
check_dashboard() {
  (cd "$ROOT/dashboard" && npm ci --no-audit --no-fund --loglevel=error && npm run check)
}

have_tansu() {
  tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"
}

ensure_tansu() {
  have_tansu && return 0
  log "installing tansu $TANSU_VERSION (cargo install, ~15 minutes on 2 cores, once)"
  # A build folder of our own: an interrupted install resumes where it was.
  cargo install tansu --locked --version "$TANSU_VERSION" --features "$TANSU_FEATURES" \
    --target-dir "$TANSU_BUILD_DIR"
  # Installed: its 1.5 GB of build products are of no further use.
  rm -rf "$TANSU_BUILD_DIR"
}

# cargo-deny for the license, ban and source checks (deny.toml). Without
# default features: the advisory database cannot be fetched here anyway, and
# it builds in about half the time.
CARGO_DENY_VERSION="0.20.2"
ensure_cargo_deny() {
  command -v cargo-deny >/dev/null 2>&1 && return 0
  log "installing cargo-deny $CARGO_DENY_VERSION (cargo install, once)"
  cargo install cargo-deny --locked --version "$CARGO_DENY_VERSION" --no-default-features
}

# cargo-deb builds the Debian package (docs/production.md; tests/package.rs).
CARGO_DEB_VERSION="3.8.0"
ensure_cargo_deb() {
  cargo deb --version >/dev/null 2>&1 && return 0
  log "installing cargo-deb $CARGO_DEB_VERSION (cargo install, once)"
  cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
}

# build_package [cargo-deb args...]: target/debian/ingestion-engine_<version>_amd64.deb
# from the binary already built (the release one by default); prints the path
# of the package this call wrote. Fails when cargo deb fails or wrote none: an
# older package left in target/debian/ is never taken for it. Call it as
# `deb="$(build_package …)"` on its own line, so that set -e sees a failure.
build_package() {
  ensure_cargo_deb >&2 || return 1
  local dir="$ROOT/target/debian" marker rc=0 deb
  mkdir -p "$dir"
  # Packages written after this marker are this build's.
  marker="$(mktemp "$dir/.build.XXXXXX")"
  cargo deb --no-build --fast -o "$dir/" "$@" >"$marker.out" 2>"$marker.err" || rc=$?
  grep -v 'dev profile is not supported\|make releases\|To enable debug symbols' "$marker.err" >&2 || true
  if [ "$rc" -ne 0 ]; then
    cat "$marker.out" >&2
    echo "error: cargo deb failed (exit $rc)" >&2
    rm -f "$marker" "$marker.out" "$marker.err"
    return 1
  fi
  # cargo deb prints the path of the package it wrote.
  deb="$(grep '\.deb$' "$marker.out" | tail -1 || true)"
  case "$deb" in "" | /*) ;; *) deb="$PWD/$deb" ;; esac
  if [ -z "$deb" ]; then
    deb="$(find "$dir" -maxdepth 1 -name 'ingestion-engine_*.deb' -newer "$marker" | head -1)"
  fi
  if [ -z "$deb" ] || [ ! -f "$deb" ] || [ ! "$deb" -nt "$marker" ]; then
    cat "$marker.out" >&2
    echo "error: cargo deb succeeded but wrote no new package in $dir (got: '${deb}')" >&2
    rm -f "$marker" "$marker.out" "$marker.err"
    return 1
  fi
  rm -f "$marker" "$marker.out" "$marker.err"
  echo "$deb"
}

# start_tansu_install: builds tansu in the background, at low CPU priority, so
# the workspace build in the foreground is not slowed and tansu takes the
# cores the workspace build leaves idle. wait_tansu_install waits for it.
TANSU_INSTALL_PID=""
start_tansu_install() {
  have_tansu && return 0
  mkdir -p "$ROOT/target"
  log "building tansu $TANSU_VERSION in the background (log: target/tansu-install.log)"
  (
    renice -n 19 -p "$BASHPID" >/dev/null 2>&1 || true
    ensure_tansu >"$ROOT/target/tansu-install.log" 2>&1
  ) &
  TANSU_INSTALL_PID=$!
}
# stop_tansu_install: ends a background build (on an early exit).
stop_tansu_install() {
  [ -n "$TANSU_INSTALL_PID" ] || return 0
  kill_tree "$TANSU_INSTALL_PID"
  TANSU_INSTALL_PID=""
}
wait_tansu_install() {
  [ -n "$TANSU_INSTALL_PID" ] || { ensure_tansu; return; }
  log "waiting for the tansu build"
  if ! wait "$TANSU_INSTALL_PID"; then
    TANSU_INSTALL_PID=""
    tail -30 "$ROOT/target/tansu-install.log" >&2
    echo "error: building tansu failed (log: target/tansu-install.log)" >&2
    return 1
  fi
  TANSU_INSTALL_PID=""
}

# kill_tree PID: PID and every process below it.
kill_tree() {
  local child
  for child in $(pgrep -P "$1" || true); do kill_tree "$child"; done
  kill "$1" 2>/dev/null || true
}

# port_open PORT: something answers on 127.0.0.1:PORT.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# pid_running PID: the process runs (not gone, not a zombie).
pid_running() {
  local stat
  { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
  # The state is the field after the command name's closing parenthesis.
  stat="${stat##*) }"
  [ "${stat%% *}" != Z ]
}

# wait_port PORT SECONDS NAME [PID [LOG...]]: waits for something to answer
# on 127.0.0.1:PORT. With PID, fails at once when that process exits first;
# either failure prints the last lines of each LOG.
wait_port() {
  local port=$1 secs=$2 name=$3 pid=${4:-} i f why
  shift 3
  [ $# -gt 0 ] && shift
  for ((i = 0; i < secs * 10; i++)); do
    port_open "$port" && return 0
    if [ -n "$pid" ] && ! pid_running "$pid"; then
      why="exited (pid $pid) before it opened port $port"
      break
    fi
    sleep 0.1
  done
  echo "error: $name ${why:-did not open port $port within ${secs}s}" >&2
  for f in "$@"; do
    [ -s "$f" ] || continue
    echo "--- last lines of $f:" >&2
    tail -n 30 "$f" >&2
  done
  return 1
}

# start_tansu PORT DIR: broker with SQLite storage under DIR (survives restarts).
# Prints the pid.
start_tansu() {
  local port=$1 dir=$2
  if port_open "$port"; then
    echo "error: port $port is already taken: it is not tansu's to open" >&2
    return 1
  fi
  mkdir -p "$dir"
  (cd "$dir" && exec tansu broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "sqlite://tansu.db" >"broker.log" 2>&1) &
  local pid=$!
  echo "$pid"
  wait_port "$port" 30 "tansu" "$pid" "$dir/broker.log"
}

# start_zookeeper PORT DIR: a standalone ZooKeeper (Debian's zookeeper, on
# Java) on 127.0.0.1:PORT with its data in DIR, for a ClickHouse cluster
# (replicated tables, distributed DDL). Prints its pid; returns once it says
# `Mode: standalone` (a ClickHouse node with replicated tables started
# before then exits).
start_zookeeper() {
  local port=$1 dir i
  dir="$(mkdir -p "$2/data" && cd "$2" && pwd)"
  if port_open "$port"; then
    echo "error: port $port is already taken: it is not this zookeeper's to open" >&2
    return 1
  fi
  (cd "$dir" && exec java -Xmx256m -cp /etc/zookeeper/conf:/usr/share/java/zookeeper.jar \
    -Dzookeeper.admin.enableServer=false -Dzookeeper.4lw.commands.whitelist=srvr,ruok \
    org.apache.zookeeper.server.ZooKeeperServerMain "$port" "$dir/data" >"$dir/zookeeper.log" 2>&1) &
  local pid=$!
  echo "$pid"
  for ((i = 0; i < 600; i++)); do
    if ! pid_running "$pid"; then
      echo "error: zookeeper exited (pid $pid)" >&2
      tail -20 "$dir/zookeeper.log" >&2
      return 1
    fi
    if port_open "$port" && zookeeper_mode "$port" | grep -q standalone; then
      return 0
    fi
    sleep 0.1
  done
  echo "error: zookeeper did not say Mode: standalone on port $port within 60s" >&2
  tail -20 "$dir/zookeeper.log" >&2
  return 1
}

# zookeeper_mode PORT: the `Mode:` line of ZooKeeper's `srvr` answer.
zookeeper_mode() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1" && echo srvr >&3 && timeout 2 cat <&3) 2>/dev/null | grep '^Mode:'
}

# start_clickhouse HTTP_PORT TCP_PORT DIR [INTERSERVER_PORT [EXTRA_XML]]: a
# private clickhouse-server with its data, logs and config under DIR (its
# interserver port TCP_PORT + 9 unless given; EXTRA_XML, a cluster node's
# settings, copied into its config.d). Prints the pid; fails at once, with
# the server's last log lines, if it exits before it listens.
start_clickhouse() {
  local http=$1 tcp=$2 dir interserver=${4:-$(($2 + 9))} extra=${5:-}
  if port_open "$http"; then
    echo "error: port $http is already taken: it is not this clickhouse-server's to open" >&2
    return 1
  fi
  dir="$(mkdir -p "$3" && cd "$3" && pwd)"
  mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas" "$dir/log"
  sed -e "s#<http_port>8123</http_port>#<http_port>$http</http_port>#" \
      -e "s#<tcp_port>9000</tcp_port>#<tcp_port>$tcp</tcp_port>#" \
      -e "s#<interserver_http_port>9009</interserver_http_port>#<interserver_http_port>$interserver</interserver_http_port>#" \
      -e "s#/var/lib/clickhouse/tmp/#$dir/tmp/#" \
      -e "s#/var/lib/clickhouse/user_files/#$dir/user_files/#" \
      -e "s#/var/lib/clickhouse/format_schemas/#$dir/format_schemas/#" \
      -e "s#/var/lib/clickhouse/#$dir/data/#" \
      -e "s#/var/log/clickhouse-server/#$dir/log/#" \
      -e "s#<listen_host>::1</listen_host>##" \
      /etc/clickhouse-server/config.xml >"$dir/config.xml"
  cp /etc/clickhouse-server/users.xml "$dir/users.xml"
  # A cluster node's own settings (zookeeper, macros, remote_servers), merged
  # over config.xml from its config.d.
  if [ -n "$extra" ]; then
    mkdir -p "$dir/config.d"
    cp "$extra" "$dir/config.d/cluster.xml"
  fi
  (cd "$dir" && exec clickhouse-server --config-file="$dir/config.xml" >"$dir/log/stdout.log" 2>&1) &
  local pid=$!
  echo "$pid"
  wait_port "$http" 60 "clickhouse-server" "$pid" \
    "$dir/log/stdout.log" "$dir/log/clickhouse-server.err.log"
}

# test_totals LOG TOTALS: from cargo test output collected in LOG (each run
# after a line `=== step: NAME`), prints one line per test binary (step,
# binary, passed, failed, ignored) and each failed test, and writes
# "passed failed ignored binaries-failed" to TOTALS. A binary that printed no
# `test result:` line (it crashed, or was killed) counts as one failure.
test_totals() {
  awk -v totals="$2" '
    function flush() {
      if (open) {
        rows[++nrows] = sprintf("  %-12s %-44s  no result: crashed or killed", step, name)
        failed++; bad++
      }
      open = 0
    }
    { gsub(/\033\[[0-9;]*[mK]/, "") }
    /^=== step: / { flush(); step = substr($0, 11); next }
    /^ +Running / {
      flush()
      if ($2 == "unittests") {
        path = $NF; gsub(/[()]/, "", path); n = split(path, parts, "/")
        name = parts[n]; sub(/-[0-9a-f]+$/, "", name); name = name " (unit)"
      } else name = $2
      open = 1; next
    }
    /^ +Doc-tests / { flush(); name = $2 " (doc)"; open = 1; next }
    open && /^test .* \.\.\. FAILED$/ { sub(/^test /, ""); sub(/ \.\.\. FAILED$/, ""); fails[++nfails] = name ": " $0; next }
    open && /^test result: / {
      p = f = i = 0
      for (k = 2; k <= NF; k++) {
        if ($k ~ /^passed;?$/) p = $(k - 1)
        if ($k ~ /^failed;?$/) f = $(k - 1)
        if ($k ~ /^ignored;?$/) i = $(k - 1)
      }
      rows[++nrows] = sprintf("  %-12s %-44s %5d passed %4d failed %4d ignored%s", step, name, p, f, i, f > 0 ? "  FAILED" : "")
      passed += p; failed += f; ignored += i; if (f > 0) bad++
      open = 0; next
    }
    END {
      flush()
      for (r = 1; r <= nrows; r++) print rows[r]
      for (r = 1; r <= nfails; r++) print "  failed: " fails[r]
      printf "%d %d %d %d\n", passed, failed, ignored, bad > totals
    }
  ' "$1"
}
