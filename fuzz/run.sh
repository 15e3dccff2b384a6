#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer through cargo-fuzz) of everything that
# reads outside input. Works with the stable toolchain: `--sanitizer none`
# (Rust's own checks catch what matters: panics, overflows in debug
# assertions, out-of-bounds slicing, hangs, unbounded memory).
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# SECONDS per target (default 600, as for a local run; CI passes a few);
# TARGETs default to all of them. Seed corpora are made from the recorded
# samples, the bundled patterns and the README's configuration; what the
# fuzzer finds is kept under fuzz/corpus/ (not committed) and crashes
# under fuzz/artifacts/TARGET/ (replay one with
# `cargo fuzz run -s none TARGET fuzz/artifacts/TARGET/crash-…`).
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(split line_to_event checkpoint_file pattern_file config_file backend_messages container_records message_deflate)

CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

seed() {
  local target=$1 dir=corpus/$1
  mkdir -p "$dir"
  [ -n "$(ls -A "$dir")" ] && return
  case $target in
    split|line_to_event)
      local n=0
      for f in ../tests/samples/*.log; do
        while IFS= read -r line; do
          n=$((n + 1)); printf '%s' "$line" > "$dir/sample-$n"
        done < "$f"
      done ;;
    pattern_file) cp ../patterns/*.toml "$dir/" ;;
    config_file)
      printf 'log = ["/var/log/nginx/access.log"]\nformat = "nginx_json"\nws_url = "wss://cerberus.example.com/ws/ingest"\ntoken = "t"\nclient_id = "c"\nbackend_url = "https://cerberus.example.com"\n' > "$dir/readme.toml" ;;
    backend_messages)
      printf '{"type":"ack","seq":17}' > "$dir/ack"
      printf '{"type":"error","seq":3,"message":"storage full"}' > "$dir/error"
      printf '{"secret_key":"k"}' > "$dir/key" ;;
    container_records)
      printf '%s\n' '2026-12-06T23:35:41.123456789Z stdout P GET /lo' '2026-12-06T23:35:41.2+01:00 stderr F oops' \
        '2026-12-06T23:35:41.3Z stdout F ng 200' > "$dir/cri"
      printf '%s\n' '{"log":"GET / \"q\" ","stream":"stdout","time":"2026-12-06T23:35:41Z"}' \
        '{"log":"200\n","stream":"stdout","time":"2026-12-06T23:35:41Z"}' > "$dir/docker" ;;
    message_deflate)
      printf '\x0b{"type":"batch","seq":1,"events":[{"remote_addr":"ab","endpoint":"/"},{"remote_addr":"ab","endpoint":"/a"}]}\xff{"type":"batch","seq":2}' > "$dir/batches" ;;
    checkpoint_file)
      printf '{"version":1,"files":[{"device":2049,"inode":131,"fingerprint":"00ff00ff00ff00ff","path":"/var/log/nginx/access.log","offset":4096,"finished":false,"updated":1764000000}],"paths":{"/var/log/nginx/access.log":1764000000}}' > "$dir/one.json" ;;
  esac
}

for t in "${targets[@]}"; do
  seed "$t"
  echo "== fuzzing $t for ${seconds}s"
  # The full output goes to a file; only the summary is shown. A target
  # that does not build, or a run that ends in failure, fails the script.
  status=0
  cargo fuzz run --sanitizer none --release "$t" "corpus/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"artifacts-$t.log" 2>&1 || status=$?
  grep -E "^(stat::|Done|#[0-9]+ *DONE|==|INFO: Seed|error|.*(panicked|ERROR|SUMMARY|crash|timeout))" \
    "artifacts-$t.log" || true
  if [ -n "$(ls -A "artifacts/$t" 2>/dev/null)" ]; then
    echo "fuzz target $t found a failing input: fuzz/artifacts/$t/" >&2
    exit 1
  fi
  if [ "$status" -ne 0 ]; then
    tail -30 "artifacts-$t.log" >&2
    echo "fuzz target $t failed (status $status): fuzz/artifacts-$t.log" >&2
    exit 1
  fi
done
