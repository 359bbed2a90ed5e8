#!/usr/bin/env bash
# `make compose-test`: the container stack built offline from a local Debian base, brought up, one verified
# inference through it from this host, then torn down. Not part of `make test` (infra/README.md).
#
#   1. the base image fedai-base:bookworm (infra/base-image.sh: debootstrap + docker import), once
#   2. the images: fedai (multi-stage, non-root), PostgreSQL and Prometheus from Debian's packages, llama-server
#      (the portable binary and model from `fedai llama build` / `fedai llama model tiny`)
#   3. `compose up` with fresh keys and passwords in a temporary .env; the router's port published on 127.0.0.1
#   4. both nodes registered, `fedai infer --json` through the router: the chain must verify, signed by the
#      router's pinned key and one of the two nodes; Prometheus ready
#   5. PostgreSQL stopped, the router restarted without it: it must wait (ROUTER_DB_WAIT_S, not the engine's
#      restart policy) and serve a verified inference once PostgreSQL is started again
#   6. `compose down -v` (also on failure or Ctrl-C)
#
# `compose-test.sh --paid` (`make compose-test-paid`) runs the stack paid instead (docker-compose.paid.yml over
# docker-compose.yml: LNbits with FakeWallet, a wallet per party): steps 1-4 with the LNbits image too, an unpaid
# request must be refused 402 `payment_required`, then one paid verified inference (`fedai quote`, `fedai pay`
# from the client's wallet file, copied out of the stack, `fedai infer --quote --proof`): both invoices paid, the
# chain verified, the router's earnings and the consumed proofs in its /metrics; then step 6 (step 5 is the
# unpaid mode's).
#
# Exits 1 with one clear line when Docker is not running or Debian's archive cannot be reached.
set -euo pipefail

paid=false
case "${1:-}" in
  "") ;;
  --paid) paid=true ;;
  *) printf 'usage: %s [--paid]\n' "$0" >&2; exit 2 ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
fedai=${FEDAI:-$repo/.venv/bin/fedai}
python=${PYTHON:-$repo/.venv/bin/python}
project=fedai-compose-test
compose_files=(-f "$here/docker-compose.yml")
if $paid; then
  project=fedai-compose-test-paid
  compose_files+=(-f "$here/docker-compose.paid.yml")
fi
started=$(date +%s)

say() { printf 'compose-test: %s\n' "$*"; }
die() { printf 'compose-test: %s\n' "$*" >&2; exit 1; }

docker info >/dev/null 2>&1 || die "the Docker engine is not running (or not installed): run infra/install-compose-tools as root"
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
else
  die "no docker compose: run infra/install-compose-tools as root"
fi

if ! docker image inspect fedai-base:bookworm >/dev/null 2>&1; then
  say "building the base image with debootstrap (once)"
  "$here/base-image.sh" || die "could not build the base image (above)"
fi
based=$(date +%s)
logs=$(mktemp -d /tmp/fedai-compose-test-logs.XXXXXX)

say "building the images (pip reaches PyPI, apt Debian's archive)"
build() {
  docker build --network host -f "$1" -t "$2" "$repo" >"$logs/build-$2.log" 2>&1 \
    || { tail -30 "$logs/build-$2.log" >&2; die "docker build $2 failed (log: $logs/build-$2.log)"; }
}
build "$here/Dockerfile" fedai:local
build "$here/images/postgres.Dockerfile" fedai-postgres:local
build "$here/images/prometheus.Dockerfile" fedai-prometheus:local
if $paid; then build "$here/images/lnbits.Dockerfile" fedai-lnbits:local; fi
# llama-server and the model: from the project's own tooling (cached after the first `fedai llama build`)
stage=$logs/llama-context
mkdir -p "$stage"
llama_json=$("$fedai" llama build --portable --json) || die "fedai llama build failed"
model_json=$("$fedai" llama model "${FEDAI_COMPOSE_MODEL:-tiny}" --json) || die "fedai llama model failed"
field() { "$python" -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
cp "$(field "$llama_json" path)" "$stage/llama-server"
cp "$(field "$model_json" path)" "$stage/model.gguf"
cp "$here/images/llama.Dockerfile" "$stage/Dockerfile"
docker build --network host -t fedai-llama:local "$stage" >"$logs/build-fedai-llama.log" 2>&1 \
  || { tail -30 "$logs/build-fedai-llama.log" >&2; die "docker build fedai-llama failed"; }
rm -f "$stage/llama-server" "$stage/model.gguf"
built=$(date +%s)

work=$(mktemp -d /tmp/fedai-compose-test.XXXXXX)
env_file=$work/.env
run_compose() { "${compose[@]}" -p "$project" "${compose_files[@]}" --env-file "$env_file" "$@"; }
quiet_compose() { run_compose "$@" >>"$logs/compose.log" 2>&1 || { tail -20 "$logs/compose.log" >&2; return 1; }; }
cleanup() {
  status=$?
  if [ $status -ne 0 ] && [ -s "$env_file" ]; then
    run_compose ps >&2 || true
    run_compose logs --no-color --tail 40 >&2 || true
  fi
  [ -s "$env_file" ] && run_compose down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$work"
  [ $status -ne 0 ] || rm -rf "$logs"
  exit $status
}
trap cleanup EXIT INT TERM

key() { "$fedai" keys gen --json --show-secret | "$python" -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
free_port() { "$python" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
router_secret_and_npub=$("$fedai" keys gen --json --show-secret)
router_secret=$(printf '%s' "$router_secret_and_npub" | "$python" -c "import json,sys; print(json.load(sys.stdin)['secret_hex'])")
router_npub=$(printf '%s' "$router_secret_and_npub" | "$python" -c "import json,sys; print(json.load(sys.stdin)['npub'])")
token_json=$("$fedai" admin-token new --json)
printf '%s' "$token_json" | "$python" -c "import json,sys; print(json.load(sys.stdin)['admin_token'])" >"$work/router-admin.token"
chmod 644 "$work/router-admin.token"
router_port=$(free_port)
lnbits_port=$(free_port)
cat >"$env_file" <<ENV
ROUTER_PRIVATE_KEY=$router_secret
ROUTER_PUBLIC_KEY=$router_npub
NODE1_PRIVATE_KEY=$(key secret_hex)
NODE2_PRIVATE_KEY=$(key secret_hex)
POSTGRES_PASSWORD=$("$python" -c "import secrets; print(secrets.token_hex(16))")
ROUTER_ADMIN_TOKEN_SHA256=$(printf '%s' "$token_json" | "$python" -c "import json,sys; print(json.load(sys.stdin)['router_admin_token_sha256'])")
ROUTER_ADMIN_TOKEN_FILE=$work/router-admin.token
ROUTER_HOST_PORT=$router_port
ROUTER_PUBLIC_URL=http://127.0.0.1:$router_port
PROMETHEUS_HOST_PORT=$(free_port)
LLAMA_MODEL_ID=$(field "$model_json" model_id)
LNBITS_HOST_PORT=$lnbits_port
LNBITS_PUBLIC_URL=http://127.0.0.1:$lnbits_port
ENV

say "starting the stack (router on 127.0.0.1:$router_port)"
quiet_compose up -d --no-build
router=http://127.0.0.1:$router_port

fresh_nodes() {
  "$fedai" status --router "$router" --router-pubkey "$router_npub" --json 2>/dev/null \
    | "$python" -c "import json,sys; print(json.load(sys.stdin)['nodes']['fresh'])" 2>/dev/null || echo 0
}
for _ in $(seq 120); do [ "$(fresh_nodes)" = 2 ] && break; sleep 1; done
[ "$(fresh_nodes)" = 2 ] || die "the two nodes did not register within 120 s"
up=$(date +%s)
client_key=$work/client.key
"$fedai" keys gen --out "$client_key" >/dev/null

if $paid; then
  say "an unpaid request must be refused; then one paid inference from the client's wallet"
  refused=$("$fedai" infer --router "$router" --router-pubkey "$router_npub" --key "$client_key" --max-tokens 16 --json \
    --prompt "information" 2>/dev/null || true)
  printf '%s' "$refused" | "$python" -c '
import json, sys
code = json.load(sys.stdin)["error"]["code"]
assert code == "payment_required", code
' || die "an unpaid request was not refused payment_required: $refused"
  docker cp "$(run_compose ps -q lnbits-wallets)":/wallets/client.uri "$work/client.uri" >/dev/null \
    || die "could not copy the client's wallet file out of lnbits-wallets"
  # The quote declares its input tokens, a ceiling above what the model will count (the router would estimate
  # an untokenized prompt at 4 bytes a token, and the tiny model's tokenizer counts about one a byte: the node
  # would then meter above the agreed price and the answer be refused). Quote, pay, then infer with the proof.
  prompt="hello from the paid stack"
  target=(--router "$router" --router-pubkey "$router_npub" --key "$client_key")
  quote_id=$("$fedai" quote "${target[@]}" --max-tokens 16 --input-tokens $((${#prompt} + 64)) --json \
    | "$python" -c "import json,sys; print(json.load(sys.stdin)['quote_id'])") || die "no quote"
  "$fedai" pay "$quote_id" "${target[@]}" --wallet "$work/client.uri" --network bitcoin --yes >"$work/proof.json" \
    || die "the payment failed"
  answer=$("$fedai" infer "${target[@]}" --max-tokens 16 --json --quote "$quote_id" --proof "$work/proof.json" \
    --prompt "$prompt")
  printf '%s' "$answer" | "$python" -c '
import json, sys
chain = json.load(sys.stdin)
assert chain["verified"] is True, chain
assert chain["model"] == sys.argv[1], chain
payment = chain["payment"]
roles = sorted(p["role"] for p in payment["payees"])
assert roles == ["node", "router_fee"] and all(p["paid"] for p in payment["payees"]), payment
print("compose-test: paid", payment["total_msat"], "msat to", " and ".join(roles) + ", chain verified, model", chain["model"])
' "$(field "$model_json" model_id)"
  metrics=$("$python" -c '
import sys, urllib.request
asked = urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer " + open(sys.argv[2]).read().strip()})
print(urllib.request.urlopen(asked, timeout=10).read().decode())
' "$router/metrics" "$work/router-admin.token")
  grep -q '^fedai_router_earned_msat_total{role="router_fee"} 2000.0$' <<<"$metrics" \
    || die "the router's /metrics does not show its 2000 msat fee earned"
  grep -q '^fedai_router_payment_proofs_total{outcome="consumed",role="node"} 1.0$' <<<"$metrics" \
    || die "the router's /metrics does not show the node's proof consumed"
  say "the router's /metrics counts the fee earned and the proof consumed"
  quiet_compose down -v --remove-orphans
  : >"$env_file"
  ended=$(date +%s)
  say "paid stack passed in $((ended - started)) s (base image $((based - started)) s, images $((built - based)) s, stack up and nodes registered $((up - built)) s)"
  exit 0
fi

say "sending a verified inference through the router"
answer=$("$fedai" infer --router "$router" --router-pubkey "$router_npub" --key "$client_key" --max-tokens 16 --json "hello from compose")
printf '%s' "$answer" | "$python" -c '
import json, sys
chain = json.load(sys.stdin)
assert chain["verified"] is True, chain
assert chain["model"] == sys.argv[1], chain  # served by llama-server, not a mock
print("compose-test: chain verified, model", chain["model"], "on llama.cpp, node", chain["node"][:16] + "…")
' "$(field "$model_json" model_id)"
"$python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=10)" \
  "http://127.0.0.1:$(grep PROMETHEUS_HOST_PORT "$env_file" | cut -d= -f2)/-/ready" || die "Prometheus is not ready"

say "restarting the router while PostgreSQL is down: it must wait for it, then serve"
quiet_compose stop postgres
quiet_compose restart router
router_id=$(run_compose ps -q router)
waited() { docker logs "$router_id" 2>&1 | grep -c "database not ready" || true; }  # -c: no SIGPIPE under pipefail
for _ in $(seq 30); do [ "$(waited)" -gt 0 ] && break; sleep 1; done
[ "$(waited)" -gt 0 ] || die "the router did not wait for its database"
quiet_compose start postgres
for _ in $(seq 90); do
  "$fedai" infer --router "$router" --router-pubkey "$router_npub" --key "$client_key" --max-tokens 16 --json "again" >/dev/null 2>&1 && break
  sleep 1
done
"$fedai" infer --router "$router" --router-pubkey "$router_npub" --key "$client_key" --max-tokens 16 --json "again" >/dev/null \
  || die "no verified inference after PostgreSQL came back"
restarts=$(docker inspect --format '{{.RestartCount}}' "$router_id")
[ "$restarts" = 0 ] || die "the router exited and was restarted $restarts times instead of waiting"
say "the router waited for PostgreSQL and served again, without a restart"

quiet_compose down -v --remove-orphans
: >"$env_file"
ended=$(date +%s)
say "passed in $((ended - started)) s (base image $((based - started)) s, images $((built - based)) s, stack up and nodes registered $((up - built)) s)"
