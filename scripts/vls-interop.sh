#!/usr/bin/env bash
# Interoperability check against the Validating Lightning Signer (VLS) 1.0.0-rc.1, whose
# proxy (`remote_hsmd_socket`) and signer (`vlsd`) speak the same gRPC as ours. A manual
# check, not part of the test suite: it downloads and builds VLS (in target/vls, once).
#
# It replays the Core Lightning golden corpus (`node replay`, one fresh pair of processes per
# case) with a mixed pair, both ways:
#   (a) our vls-proxy        + VLS's vlsd
#   (b) VLS's remote_hsmd_socket + our signer
# and, as a control of the harness itself, (c) our vls-proxy + our signer over the same
# plaintext link. It prints, per pairing, how many cases pass and how many more differ only in
# the hsmd_init reply (VLS's never equals Core Lightning's), then for every failed case its
# first differing step (and the next one when that is the init reply) and the first error
# VLS's process logged; the full output and every process's log stay in the work directory.
#
# Usage: scripts/vls-interop.sh [--case SUBSTRING] [--only a|b|c] [--corpus FILE]
#                               [--step-timeout SECS] [--work-dir DIR]
#
# Environment:
#   OUR_BIN          directory with our vls-proxy, signer and node binaries
#                    [default: target/release, built there if missing]; they are copied to
#                    the work directory first, so a rebuild during the run changes nothing
#   VLS_CLN_VERSION  what both proxies print for --version [default: v26.06.6]
#
# How VLS's binaries are fitted to the replay (small shims written to WORK/bin):
#   - VLS's link is plaintext gRPC: our proxy runs with VLS_PLAINTEXT=1, our signer with
#     --plaintext and an http:// address;
#   - vlsd has no `init --import`: the case's 32-byte secret is written where vlsd keeps its
#     seed (DATADIR/NETWORK/node.seed, hex), and `--warn-only` becomes VLS_PERMISSIVE=1
#     (every policy error a warning, every payment approved), as Core Lightning's hsmd signs;
#   - VLS binds both binaries to one network at start (vlsd --network, remote_hsmd_socket
#     VLS_NETWORK): each case runs on the network of the chain its hsmd_init names
#     (regtest for an unknown chain), as an operator would configure them;
#   - remote_hsmd_socket has no `certs`: our proxy makes the (unused) certificate files the
#     replay hands to the signer.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

VLS_VERSION=1.0.0-rc.1
VLS_ROOT=$ROOT/target/vls
CORPUS=tests/data/conformance/cln-hsmd-golden.json
ONLY=""
CASE_FILTER=""
STEP_TIMEOUT=10
WORK=""
export VLS_CLN_VERSION=${VLS_CLN_VERSION:-v26.06.6}

usage() { sed -n '/^# Usage:/,/^#   VLS_CLN_VERSION/p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --case) CASE_FILTER=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --corpus) CORPUS=$2; shift 2 ;;
    --step-timeout) STEP_TIMEOUT=$2; shift 2 ;;
    --work-dir) WORK=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "vls-interop: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$ONLY" in ""|a|b|c) ;; *) echo "vls-interop: --only takes a, b or c" >&2; exit 2 ;; esac
command -v jq >/dev/null || { echo "vls-interop: needs jq" >&2; exit 2; }
CORPUS=$(cd "$(dirname "$CORPUS")" && pwd)/$(basename "$CORPUS")

# --- VLS's binaries -------------------------------------------------------------------------
VLSD=$VLS_ROOT/bin/vlsd
VLS_HSMD=$VLS_ROOT/bin/remote_hsmd_socket
if [ ! -x "$VLSD" ] || [ ! -x "$VLS_HSMD" ]; then
  if ! command -v protoc >/dev/null; then
    echo "Installing protobuf-compiler (VLS's build needs protoc)..."
    SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq protobuf-compiler
  fi
  echo "Building VLS $VLS_VERSION into $VLS_ROOT (takes a while)..."
  cargo install --locked --root "$VLS_ROOT" "vlsd@$VLS_VERSION" "vls-proxy@$VLS_VERSION"
fi

# --- Our binaries ---------------------------------------------------------------------------
OUR_BIN=${OUR_BIN:-$ROOT/target/release}
if [ ! -x "$OUR_BIN/vls-proxy" ] || [ ! -x "$OUR_BIN/signer" ] || [ ! -x "$OUR_BIN/node" ]; then
  if [ "$OUR_BIN" != "$ROOT/target/release" ]; then
    echo "vls-interop: $OUR_BIN lacks vls-proxy, signer or node" >&2; exit 2
  fi
  cargo build --release -p vls-proxy -p signer -p node
fi
[ -n "$WORK" ] || WORK=$(mktemp -d "${TMPDIR:-/tmp}/vls-interop.XXXXXX")
mkdir -p "$WORK/bin" "$WORK/ours"
for b in vls-proxy signer node; do cp "$OUR_BIN/$b" "$WORK/ours/$b"; done
OURS=$WORK/ours

# --- Shims: our replay's invocations, translated ----------------------------------------------
# The replay starts the proxy as lightningd starts hsmd (status on fd 0, requests on fd 3,
# `--version` first, VLS_PORT/VLS_BIND set) and the signer as
#   SIGNER --data-dir D init --import FILE
#   SIGNER --data-dir D run --connect https://localhost:PORT --tls-dir T --warn-only
# Every shim execs the real binary, so the replay's signals reach it.

cat >"$WORK/bin/our-proxy" <<EOF
#!/usr/bin/env bash
# Our vls-proxy on a plaintext link (VLS's signer does not do TLS).
VLS_PLAINTEXT=1 exec "$OURS/vls-proxy" "\$@"
EOF

cat >"$WORK/bin/vls-proxy" <<EOF
#!/usr/bin/env bash
# VLS's remote_hsmd_socket as the replay starts a proxy.
if [ "\${1:-}" = certs ]; then
  # No TLS on VLS's link; the replay still hands certificate files to the signer.
  exec "$OURS/vls-proxy" "\$@"
fi
export VLS_NETWORK=\${VLS_INTEROP_NETWORK:-regtest}
# Its chain follower polls bitcoind; nothing listens there.
export BITCOIND_RPC_URL=\${BITCOIND_RPC_URL:-http://user:pass@127.0.0.1:9}
if [ "\${1:-}" = --version ]; then exec "$VLS_HSMD" "\$@"; fi
# It logs on stdout, which lightningd (and the replay) discard: to stderr with it.
exec "$VLS_HSMD" "\$@" 1>&2
EOF

cat >"$WORK/bin/our-signer" <<EOF
#!/usr/bin/env bash
# Our signer on a plaintext link (VLS's proxy does not do TLS).
args=()
plaintext=
while [ \$# -gt 0 ]; do
  case "\$1" in
    run) args+=(run); plaintext=1; shift ;;
    --connect) args+=(--connect "\${2/#https:/http:}"); shift 2 ;;
    --tls-dir) shift 2 ;;
    *) args+=("\$1"); shift ;;
  esac
done
[ -z "\$plaintext" ] || args+=(--plaintext)
exec "$OURS/signer" "\${args[@]}"
EOF

cat >"$WORK/bin/vlsd" <<EOF
#!/usr/bin/env bash
# VLS's vlsd as the replay starts a signer.
set -euo pipefail
data= cmd= import= connect= warn_only=
while [ \$# -gt 0 ]; do
  case "\$1" in
    --data-dir) data=\$2; shift 2 ;;
    --import) import=\$2; shift 2 ;;
    --connect) connect=\$2; shift 2 ;;
    --tls-dir) shift 2 ;;
    --warn-only) warn_only=1; shift ;;
    --passphrase-file|--policy)
      echo "vlsd shim: \$1 has no vlsd equivalent here" >&2; exit 2 ;;
    init|run) cmd=\$1; shift ;;
    *) echo "vlsd shim: unexpected argument \$1" >&2; exit 2 ;;
  esac
done
mkdir -p "\$data"
case "\$cmd" in
  init)
    # vlsd takes a raw 32-byte seed (Core Lightning's plain hsm_secret format) only.
    size=\$(stat -c %s "\$import")
    [ "\$size" -eq 32 ] || { echo "vlsd shim: hsm_secret of \$size bytes, vlsd needs 32" >&2; exit 2; }
    cp "\$import" "\$data/hsm_secret"
    ;;
  run)
    network=\${VLS_INTEROP_NETWORK:-regtest}
    mkdir -p "\$data/vlsd/\$network"
    # FileSeedPersister's file for the key "node": the seed as hex.
    od -An -v -tx1 "\$data/hsm_secret" | tr -d ' \n' >"\$data/vlsd/\$network/node.seed"
    [ -z "\$warn_only" ] || export VLS_PERMISSIVE=1
    url=\${connect/#https:/http:}
    url=\${url/localhost/127.0.0.1}
    # It logs on stdout, which the replay discards: to stderr with it.
    exec "$VLSD" --datadir "\$data/vlsd" --network "\$network" --connect "\$url" 1>&2
    ;;
  *) echo "vlsd shim: no command" >&2; exit 2 ;;
esac
EOF
chmod +x "$WORK/bin/"*

# --- Cases and their networks -----------------------------------------------------------------
# The network of a case: the chain hash of its first hsmd_init (wire byte order).
jq -r '.cases[] | [.name, ((.steps | map(select(.request | startswith("000b")))
  | .[0].request // "") | .[20:84])] | @tsv' "$CORPUS" |
  awk -F'\t' '{
    n = "regtest"
    if ($2 == "6fe28c0ab6f1b372c1a6a246ae63f74f931e8365e15a089c68d6190000000000") n = "bitcoin"
    if ($2 == "43497fd7f826957108f4a30fd9cec3aeba79972084e90ead01ea330900000000") n = "testnet"
    if ($2 == "f61eee3b63a380a477a063af32b2bbc97c9ff9f01f2c4225e973988108000000") n = "signet"
    print $1 "\t" n
  }' >"$WORK/cases.tsv"
if [ -n "$CASE_FILTER" ]; then
  awk -F'\t' -v f="$CASE_FILTER" 'index($1, f)' "$WORK/cases.tsv" >"$WORK/cases.sel"
else
  cp "$WORK/cases.tsv" "$WORK/cases.sel"
fi
[ -s "$WORK/cases.sel" ] || { echo "vls-interop: no case matches" >&2; exit 2; }

# --- Replays ----------------------------------------------------------------------------------
# replay ID TITLE PROXY SIGNER: every selected case on its own, on its network; writes
# WORK/ID/{results.txt,verdicts.tsv} and the processes' logs to WORK/ID/logs.
replay() {
  local id=$1 title=$2 proxy=$3 signer=$4 dir=$WORK/$1 name net out err verdict
  mkdir -p "$dir/logs"
  : >"$dir/results.txt"
  : >"$dir/verdicts.tsv"
  echo "== ($id) $title: replaying $(wc -l <"$WORK/cases.sel") cases..." >&2
  while IFS=$'\t' read -r name net; do
    out=$dir/out.$name err=$dir/err.$name
    # --case is a substring match: cases whose names contain this one run too and are
    # ignored here (each has its own turn).
    VLS_INTEROP_NETWORK=$net "$OURS/node" replay --corpus "$CORPUS" --case "$name" \
      --proxy "$proxy" --signer "$signer" --step-timeout "$STEP_TIMEOUT" \
      --log-dir "$dir/logs" -v >"$out" 2>"$err" </dev/null || true
    verdict=$(awk -v n="$name" '($1 == "ok" || $1 == "FAILED") && $2 == n { print $1 }' "$err")
    [ -n "$verdict" ] || verdict=ERROR
    printf '%s\t%s\t%s\n' "$name" "$net" "$verdict" >>"$dir/verdicts.tsv"
    awk -v n="$name" 'index($0, n " ") == 1 || index($0, n ":") == 1' "$out" >>"$dir/results.txt"
    if [ "$verdict" = ERROR ]; then
      echo "$name: the replay did not run: $(tail -n 1 "$err")" >>"$dir/results.txt"
    fi
    rm -f "$out" "$err"
  done <"$WORK/cases.sel"
}

# A mismatch line that is the hsmd_init reply differing from Core Lightning's (VLS's always
# does: other capabilities, no TLVs) while still being an init reply.
INIT_REPLY_DIFF='^[^ ]+ step 0 \(client 0 hsmd_init\): expected reply hsmd_init_reply_v4 .*, got hsmd_init_reply_v4 '
# A mismatch line without its case name, long hex shortened.
short() { cut -d' ' -f2- | sed -E 's/([0-9a-f]{16})[0-9a-f]{8,}(\.\.)?/\1../g' | cut -c 1-240; }
# The first error a process of the case logged (a panic with its message), one line. (awk
# reads to the end: under pipefail, a reader that stops early would fail the pipeline.)
first_error() {
  [ -f "$1" ] || return 0
  sed -e 's/\x1b\[[0-9;]*m//g' -e 's|[^ ]*/registry/src/[^/]*/||g' -E -e 's/^[0-9T:.-]+Z +//' "$1" |
    awk 'done { next }
         /panicked at/ { p = $0; sub(/.*panicked at /, "", p); getline m; print "panic at " p " " m; done = 1 }
         /^ERROR |^\[[^]]* ERROR |^vls-proxy ERROR: / { print; done = 1 }' | cut -c 1-240
}

# report ID TITLE VLS_SIDE: the summary of a pairing; VLS_SIDE (proxy or signer) names the log
# whose first error is shown as the likely cause.
report() {
  local id=$1 title=$2 vls=${3:-} dir=$WORK/$1 total passed init_only=0 name net verdict lines first err
  total=$(wc -l <"$dir/verdicts.tsv")
  passed=$(awk -F'\t' '$3 == "ok"' "$dir/verdicts.tsv" | wc -l)
  while IFS=$'\t' read -r name net verdict; do
    [ "$verdict" = ok ] && continue
    lines=$(grep -e "^$name " -e "^$name:" "$dir/results.txt" || true)
    if [ "$(printf '%s\n' "$lines" | wc -l)" -eq 1 ] && [[ $lines =~ $INIT_REPLY_DIFF ]]; then
      init_only=$((init_only + 1))
    fi
  done <"$dir/verdicts.tsv"
  echo "== ($id) $title: $passed/$total cases pass;" \
    "$init_only more differ only in the hsmd_init reply"
  while IFS=$'\t' read -r name net verdict; do
    [ "$verdict" = ok ] && continue
    lines=$(grep -e "^$name " -e "^$name:" "$dir/results.txt" || true)
    first=${lines%%$'\n'*}
    printf '  %s [%s]: %s\n' "$name" "$net" "$(printf '%s\n' "$first" | short)"
    # The init reply differs in nearly every case: the next difference says more.
    if [[ $first =~ $INIT_REPLY_DIFF ]]; then
      printf '%s\n' "$lines" | sed -n 2p | short | sed 's/^/      then: /'
    fi
    if [ -n "$vls" ]; then
      err=$(first_error "$dir/logs/$name.$vls.log")
      [ -z "$err" ] || echo "      first error in VLS's $vls log: $err"
    fi
  done <"$dir/verdicts.tsv"
}

declare -A titles=([a]="our vls-proxy + VLS vlsd" [b]="VLS remote_hsmd_socket + our signer"
                   [c]="control: our vls-proxy + our signer, plaintext")
declare -A proxies=([a]="$WORK/bin/our-proxy" [b]="$WORK/bin/vls-proxy" [c]="$WORK/bin/our-proxy")
declare -A signers=([a]="$WORK/bin/vlsd" [b]="$WORK/bin/our-signer" [c]="$WORK/bin/our-signer")
declare -A vls_side=([a]=signer [b]=proxy [c]="")
ids=(a b c)
[ -z "$ONLY" ] || ids=("$ONLY")
for id in "${ids[@]}"; do replay "$id" "${titles[$id]}" "${proxies[$id]}" "${signers[$id]}"; done
{
  echo "VLS $VLS_VERSION interop, corpus $(basename "$CORPUS"), work directory $WORK"
  for id in "${ids[@]}"; do report "$id" "${titles[$id]}" "${vls_side[$id]}"; done
} | tee "$WORK/report.txt"
echo "(full mismatch lines: $WORK/{a,b,c}/results.txt; logs: $WORK/{a,b,c}/logs)"
