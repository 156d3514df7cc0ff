#!/usr/bin/env bash
# A complete Lethe mixnet on this machine's loopback addresses.
#
#   scripts/localnet.sh                 build (release), start, send a message across, show
#                                       what every relay did, run until Ctrl-C, clean up
#   scripts/localnet.sh start --dir D   start detached; writes D/localnet.json
#   scripts/localnet.sh stop --dir D    stop exactly the processes started in D
#
# Topology: 3 directory authorities (a document needs 2 of their signatures), 2 gateways,
# 2 mixes in each of 3 layers, each node on its own address PREFIX.N (default PREFIX
# 127.0.0): authorities .10 .13 .14 (HTTP :8000), gateways .11 and .12, mixes .21 .22
# (layer 1), .31 .32 (layer 2), .41 .42 (layer 3); QUIC on :9000, metrics on :9100.
# Also an exit service (a client of gateway-2 on .50, allow-list: loopback only) and a
# SOCKS5 proxy (a client of gateway-1, listening on .51:1080) whose exit it is;
# localnet.json lists them as "exit" (its address) and "socks" (the proxy's address).
#
# Environment:
#   LETHE_BIN_DIR       use the lethe-node/lethe-client binaries in this directory (no build)
#   LETHE_PREFIX        first three octets of the addresses (default 127.0.0)
#   LETHE_MEAN_DELAY_MS mean per-hop mixing delay (default 20)
#   LETHE_MAX_DELAY_MS  largest per-hop delay relays accept (default 1000)
#   LETHE_EPOCH_SECS    epoch length: Sphinx keys rotate every epoch (default 3600)
#   LETHE_VOTE_SECS     the authorities' voting round: a new relay is listed within about
#                       two rounds (default 2)
#   LETHE_COVER_PAYLOAD_MS, LETHE_COVER_LOOP_MS, LETHE_COVER_DROP_MS
#                       mean ms between a client's payload, loop and drop sends (defaults
#                       5, 200, 200: a faster payload stream than the network default of
#                       20 ms, so local SOCKS downloads are quick; 0 turns a stream off)
#   LETHE_COVER_MIX_LOOP_MS
#                       mean ms between each mix's own loops (default 1000, the network
#                       default; 0 turns them off)
#   LETHE_COVER_DOWNSTREAM_MS, LETHE_COVER_DOWNSTREAM_MODE
#                       mean ms between a gateway's downstream slots to each client, and
#                       `burst` or `strict` (defaults 20 and burst, the network defaults; 0
#                       turns downstream cover off)
#   LETHE_COVER_EXIT_MS mean ms between the exit service's payload sends (default 2: four
#                       times the payload stream above, as the network default is; 0 = off)
#   LETHE_NODE_ARGS     extra arguments for every relay's and the exit's `lethe-node run` (tests use
#                       --unsafe-logging to see everything a relay could log)
#   LETHE_EXIT_ALLOW    the exit's allow-list rules, words (default "127.0.0.0/8:* [::1]:*")
#   LETHE_EXIT_SETTINGS `key=value` words, each replacing that key's line in the exit's
#                       exit.toml (e.g. "stall_secs=3 max_streams=4")
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=${LETHE_PREFIX:-127.0.0}
MEAN=${LETHE_MEAN_DELAY_MS:-20}
MAX=${LETHE_MAX_DELAY_MS:-1000}
EPOCH=${LETHE_EPOCH_SECS:-3600}
COVER_PAYLOAD=${LETHE_COVER_PAYLOAD_MS:-5}
COVER_LOOP=${LETHE_COVER_LOOP_MS:-200}
COVER_DROP=${LETHE_COVER_DROP_MS:-200}
COVER_MIX_LOOP=${LETHE_COVER_MIX_LOOP_MS:-1000}
COVER_DOWNSTREAM=${LETHE_COVER_DOWNSTREAM_MS:-20}
COVER_DOWNSTREAM_MODE=${LETHE_COVER_DOWNSTREAM_MODE:-burst}
COVER_EXIT=${LETHE_COVER_EXIT_MS:-2}
VOTE_SECS=${LETHE_VOTE_SECS:-2}
AUTHS=(10 13 14)
THRESHOLD=2
DIRECTORY="http://$PREFIX.10:8000"
# name role layer host-octet
NODES=(
  "gateway-1 gateway 0 11"
  "gateway-2 gateway 0 12"
  "mix-1a mix 1 21"
  "mix-1b mix 1 22"
  "mix-2a mix 2 31"
  "mix-2b mix 2 32"
  "mix-3a mix 3 41"
  "mix-3b mix 3 42"
)

die() { echo "localnet: $*" >&2; exit 1; }

bins() {
  if [ -n "${LETHE_BIN_DIR:-}" ]; then
    BIN=$LETHE_BIN_DIR
  else
    echo "localnet: building release binaries (first time takes a few minutes)..." >&2
    (cd "$ROOT" && cargo build --release --quiet -p lethe-node -p lethe-client) || die "build failed"
    BIN=$ROOT/target/release
  fi
  [ -x "$BIN/lethe-node" ] || die "no lethe-node in $BIN"
}

# http_get HOST PORT PATH: body of a GET, with bash's /dev/tcp (no curl needed).
http_get() {
  local resp
  resp=$(timeout 3 bash -c "exec 3<>/dev/tcp/$1/$2 && printf 'GET $3 HTTP/1.1\r\nHost: $1\r\nConnection: close\r\n\r\n' >&3 && cat <&3" 2>/dev/null) || return 1
  printf '%s' "${resp#*$'\r\n\r\n'}"
}

metric() { # metric HOST NAME -> value
  http_get "$1" 9100 /metrics | awk -v n="$2" '$1 == n { print $2 }'
}

# all_running DIR: whether every process in DIR/pids runs; names those that do not.
all_running() {
  local pid name ok=0
  while read -r pid name; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "localnet: $name (pid $pid) is not running: $(grep -m1 -iE 'error|in use' "$1/$name/node.log" 2>/dev/null || true)" >&2
      ok=1
    fi
  done < "$1/pids"
  return $ok
}

start() {
  local dir=$1
  [ -e "$dir/localnet.json" ] && die "$dir already holds a network; stop it first"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ -n "${BIN:-}" ] || bins
  : > "$dir/pids"
  local keys=() key_args=() mirror_args=() json_nodes="" sep="" json_keys="" json_dirs=""
  # Each authority counts only its peers' keys: every identity is made first (as a lone
  # authority), then each learns its peers and the threshold.
  local auth_keys=()
  for i in "${!AUTHS[@]}"; do
    auth_keys+=("$("$BIN/lethe-node" init --dir "$dir/authority-$((i + 1))" --role authority \
      --listen "$PREFIX.${AUTHS[$i]}:8000" --network localnet --mean-delay-ms "$MEAN" \
      --max-delay-ms "$MAX" --epoch-secs "$EPOCH" --cover-payload-mean-ms "$COVER_PAYLOAD" \
      --cover-loop-mean-ms "$COVER_LOOP" --cover-drop-mean-ms "$COVER_DROP" \
      --cover-mix-loop-mean-ms "$COVER_MIX_LOOP" --vote-interval-secs "$VOTE_SECS" \
      --cover-downstream-mean-ms "$COVER_DOWNSTREAM" \
      --cover-downstream-mode "$COVER_DOWNSTREAM_MODE" \
      --cover-exit-payload-mean-ms "$COVER_EXIT" \
      2>/dev/null)") || die "init of authority-$((i + 1)) failed"
  done
  for i in "${!AUTHS[@]}"; do
    local a=${AUTHS[$i]} name="authority-$((i + 1))" key=${auth_keys[$i]} j peers="" peer_keys=""
    for j in "${!AUTHS[@]}"; do
      [ "$j" = "$i" ] && continue
      peers+="${peers:+, }\"http://$PREFIX.${AUTHS[$j]}:8000\""
      peer_keys+="${peer_keys:+, }\"${auth_keys[$j]}\""
    done
    sed -i -e "s|^peers = \[\]|peers = [$peers]|" -e "s|^peer_keys = \[\]|peer_keys = [$peer_keys]|" \
      -e "/^\[authority\]/,/^\[/ s|^threshold = .*|threshold = $THRESHOLD|" "$dir/$name/node.toml"
    "$BIN/lethe-node" run --dir "$dir/$name" >> "$dir/$name/node.log" 2>&1 &
    echo "$! $name" >> "$dir/pids"
    keys+=("$key")
    key_args+=(--authority-key "$key")
    [ "$a" != 10 ] && mirror_args+=(--mirror "http://$PREFIX.$a:8000")
    json_nodes+="$sep    {\"name\": \"$name\", \"role\": \"authority\", \"layer\": null, \"listen\": \"$PREFIX.$a:8000\", \"metrics\": null, \"pid\": $!, \"log\": \"$dir/$name/node.log\", \"dir\": \"$dir/$name\", \"id\": \"$key\"}"
    json_keys+="${json_keys:+, }\"$key\""
    json_dirs+="${json_dirs:+, }\"http://$PREFIX.$a:8000\""
    sep=",\n"
  done
  for spec in "${NODES[@]}"; do
    read -r name role layer octet <<< "$spec"
    local host="$PREFIX.$octet" layer_arg=() id
    [ "$layer" != 0 ] && layer_arg=(--layer "$layer")
    id=$("$BIN/lethe-node" init --dir "$dir/$name" --role "$role" "${layer_arg[@]}" \
      --listen "$host:9000" --metrics "$host:9100" --directory "$DIRECTORY" "${mirror_args[@]}" \
      "${key_args[@]}" --threshold "$THRESHOLD" --refresh-secs 2 2>/dev/null) || die "init of $name failed"
    # shellcheck disable=SC2086 # LETHE_NODE_ARGS is a list of words
    "$BIN/lethe-node" run --dir "$dir/$name" ${LETHE_NODE_ARGS:-} >> "$dir/$name/node.log" 2>&1 &
    echo "$! $name" >> "$dir/pids"
    local layer_json=null
    [ "$layer" != 0 ] && layer_json=$layer
    json_nodes+="$sep    {\"name\": \"$name\", \"role\": \"$role\", \"layer\": $layer_json, \"listen\": \"$host:9000\", \"metrics\": \"$host:9100\", \"pid\": $!, \"log\": \"$dir/$name/node.log\", \"dir\": \"$dir/$name\", \"id\": \"$id\"}"
  done
  # Ready when every relay has loaded the full topology.
  local want=${#NODES[@]} ready=0
  for _ in $(seq 1 150); do
    ready=0
    for spec in "${NODES[@]}"; do
      read -r name role layer octet <<< "$spec"
      [ "$(metric "$PREFIX.$octet" lethe_topology_nodes)" = "$want" ] && ready=$((ready + 1))
    done
    [ "$ready" = "$want" ] && break
    sleep 0.2
  done
  all_running "$dir" || { stop "$dir"; die "a process exited (address already in use?); see the logs in $dir"; }
  if [ "$ready" != "$want" ]; then
    stop "$dir"
    die "only $ready of $want relays saw the full topology in 30 s; see the logs in $dir"
  fi
  # The exit service and a SOCKS proxy using it.
  local common=(--directory "$DIRECTORY" --threshold "$THRESHOLD" "${key_args[@]}") exit_addr
  common+=("${mirror_args[@]}")
  local allow_args=() rule
  set -f # the rules are words, not file patterns
  for rule in ${LETHE_EXIT_ALLOW:-127.0.0.0/8:* [::1]:*}; do allow_args+=(--allow "$rule"); done
  set +f
  exit_addr=$("$BIN/lethe-node" init --dir "$dir/exit" --role exit --listen "$PREFIX.50:0" \
    --gateway "$("$BIN/lethe-node" id --dir "$dir/gateway-2")" "${allow_args[@]}" \
    "${common[@]}" 2>/dev/null) || { stop "$dir"; die "init of the exit failed"; }
  local kv
  set -f
  for kv in ${LETHE_EXIT_SETTINGS:-}; do
    grep -q "^${kv%%=*} = " "$dir/exit/exit.toml" || { stop "$dir"; die "exit.toml has no ${kv%%=*}"; }
    sed -i "s|^${kv%%=*} = .*|${kv%%=*} = ${kv#*=}|" "$dir/exit/exit.toml"
  done
  set +f
  # shellcheck disable=SC2086 # LETHE_NODE_ARGS is a list of words
  "$BIN/lethe-node" run --dir "$dir/exit" ${LETHE_NODE_ARGS:-} >> "$dir/exit/node.log" 2>&1 &
  echo "$! exit" >> "$dir/pids"
  "$BIN/lethe-client" init --dir "$dir/socks" "${common[@]}" \
    --gateway "$("$BIN/lethe-node" id --dir "$dir/gateway-1")" > /dev/null || { stop "$dir"; die "init of the proxy failed"; }
  "$BIN/lethe-client" socks --dir "$dir/socks" --listen "$PREFIX.51:1080" --exit "$exit_addr" \
    --bind "$PREFIX.51:0" >> "$dir/socks/socks.log" 2>&1 &
  echo "$! socks" >> "$dir/pids"
  local up=0
  for _ in $(seq 1 100); do
    if timeout 1 bash -c "exec 3<>/dev/tcp/$PREFIX.51/1080" 2>/dev/null; then up=1; break; fi
    sleep 0.1
  done
  [ "$up" = 1 ] || { stop "$dir"; die "the SOCKS proxy did not come up; see $dir/socks/socks.log"; }
  # What answered above may be another network on the same addresses: every process of
  # ours must still run (a relay whose address was taken exits at once).
  all_running "$dir" || { stop "$dir"; die "a process exited (address already in use?); see the logs in $dir"; }
  printf '{\n  "directory": "%s",\n  "directories": [%s],\n  "authority_keys": [%s],\n  "threshold": %s,\n  "bin_dir": "%s",\n  "exit": "%s",\n  "exit_log": "%s",\n  "socks": "%s",\n  "socks_log": "%s",\n  "nodes": [\n%b\n  ]\n}\n' \
    "$DIRECTORY" "$json_dirs" "$json_keys" "$THRESHOLD" "$BIN" "$exit_addr" "$dir/exit/node.log" \
    "$PREFIX.51:1080" "$dir/socks/socks.log" "$json_nodes" > "$dir/localnet.json"
  echo "localnet: $want relays, ${#AUTHS[@]} directory authorities, an exit and a SOCKS proxy ($PREFIX.51:1080) up; see $dir/localnet.json" >&2
}

stop() {
  local dir=$1
  [ -f "$dir/pids" ] || die "no network in $dir"
  local pids=()
  while read -r pid _; do pids+=("$pid"); done < "$dir/pids"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 1 100); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
  rm -f "$dir/pids" "$dir/localnet.json"
  echo "localnet: stopped; its keys and logs stay in $dir (rm -rf it to remove them)" >&2
}

demo() {
  local dir
  dir=$(mktemp -d "${TMPDIR:-/tmp}/lethe-localnet.XXXXXX")
  [ -n "${BIN:-}" ] || bins
  trap 'stop "$dir"; rm -rf "$dir"; exit 0' INT TERM
  start "$dir"
  local common=(--directory "$DIRECTORY" --threshold "$THRESHOLD")
  for i in "${!AUTHS[@]}"; do
    common+=(--authority-key "$("$BIN/lethe-node" id --dir "$dir/authority-$((i + 1))")")
  done
  local alice bob
  alice=$("$BIN/lethe-client" init --dir "$dir/alice" "${common[@]}" --gateway "$("$BIN/lethe-node" id --dir "$dir/gateway-1")")
  bob=$("$BIN/lethe-client" init --dir "$dir/bob" "${common[@]}" --gateway "$("$BIN/lethe-node" id --dir "$dir/gateway-2")")
  echo
  echo "alice: $alice"
  echo "bob:   $bob"
  "$BIN/lethe-client" receive --dir "$dir/bob" --out-dir "$dir/bob/inbox" --count 1 --timeout 30 \
    --bind "$PREFIX.2:0" > /dev/null &
  local receiver=$!
  sleep 0.5
  echo "hello bob, from alice, across five hops" |
    "$BIN/lethe-client" send --dir "$dir/alice" --to "$bob" --bind "$PREFIX.1:0"
  if wait "$receiver"; then
    echo "bob received: $(cat "$dir/bob/inbox/message-000001")"
  else
    echo "bob received nothing (see logs in $dir)"
  fi
  echo
  printf '%-10s %-8s %6s %12s %12s %10s\n' node role layer packets_in packets_out delivered
  for spec in "${NODES[@]}"; do
    read -r name role layer octet <<< "$spec"
    local h="$PREFIX.$octet"
    printf '%-10s %-8s %6s %12s %12s %10s\n' "$name" "$role" "${layer/0/-}" \
      "$(metric "$h" lethe_packets_in_total)" "$(metric "$h" lethe_packets_out_total)" \
      "$(metric "$h" lethe_messages_delivered_total)"
  done
  if command -v curl > /dev/null; then
    mkdir -p "$dir/www" && echo "hello from behind the mixnet" > "$dir/www/hello.txt"
    if command -v python3 > /dev/null; then
      (cd "$dir/www" && exec python3 -m http.server --bind "$PREFIX.60" 8080 > /dev/null 2>&1) &
      echo "$! www" >> "$dir/pids"
      sleep 0.5
      echo
      echo "curl --socks5-hostname $PREFIX.51:1080 http://$PREFIX.60:8080/hello.txt"
      curl -sS --max-time 30 --socks5-hostname "$PREFIX.51:1080" "http://$PREFIX.60:8080/hello.txt" ||
        echo "(fetch through the proxy failed; see $dir/exit/node.log and $dir/socks/socks.log)"
    fi
  fi
  echo
  echo "The network keeps running: directory $DIRECTORY, data and logs in $dir."
  echo "Try: echo hi | $BIN/lethe-client send --dir $dir/alice --to $bob"
  echo "     curl --socks5-hostname $PREFIX.51:1080 http://127.0.0.1:PORT/  (any local HTTP server)"
  echo "Ctrl-C stops every node and removes $dir."
  while true; do sleep 1; done
}

case "${1:-}" in
  "") demo ;;
  start|stop)
    cmd=$1; shift
    [ "${1:-}" = "--dir" ] && [ -n "${2:-}" ] || die "usage: $0 $cmd --dir D"
    "$cmd" "$2"
    ;;
  *) die "usage: $0 [start --dir D | stop --dir D]" ;;
esac
