#!/usr/bin/env bash
# A plain install works: `pip install .` (no -e, no extras) into a fresh venv, then the installed
# `tunewatch` on small inputs. The test venv has the dev extras, which would hide a module the
# package imports without declaring it. Runs alone too: bash .ci/smoke-install.sh
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "smoke-install: $*" >&2; exit 1; }

# Install from a copy of the tree (tracked and new files, not ignored ones): building in place
# would package whatever a stale build/ holds.
mkdir "$tmp/src"
git ls-files -z --cached --others --exclude-standard \
  | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
  | tar --null -T - -cf - | tar -xf - -C "$tmp/src"
"$python" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q "$tmp/src" 2>"$tmp/pip.err" \
  || { cat "$tmp/pip.err" >&2; fail "pip install . failed"; }
tw=$tmp/venv/bin/tunewatch
export XDG_STATE_HOME=$tmp/state XDG_CONFIG_HOME=$tmp/config

# Every plugin loads (a missing module shows up here as FAILED).
"$tw" plugins >"$tmp/plugins.out"
if grep FAILED "$tmp/plugins.out"; then fail "a plugin does not load"; fi

# `validate` on a small chat file: exit 0 (pass) or 1 (low score), never a crash.
cat >"$tmp/chat.jsonl" <<'EOF'
{"messages": [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}]}
{"messages": [{"role": "user", "content": "Name a primary colour."}, {"role": "assistant", "content": "Blue."}]}
{"messages": [{"role": "user", "content": "How many legs has a spider?"}, {"role": "assistant", "content": "Eight."}]}
{"messages": [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"}]}
EOF
validate() {
  local code=0
  "$tw" validate "$@" >"$tmp/validate.out" 2>"$tmp/validate.err" || code=$?
  if [ "$code" -gt 1 ] || grep -q Traceback "$tmp/validate.err"; then
    cat "$tmp/validate.out" "$tmp/validate.err" >&2
    fail "tunewatch validate $* exited $code"
  fi
}
validate "$tmp/chat.jsonl"
grep -q "approximate" "$tmp/validate.out" || fail "no tokenizer given, but counts not labelled approximate"

# With a real tokenizer (a word-level tokenizer.json written by hand): counted, not estimated.
mkdir "$tmp/tokenizer"
cat >"$tmp/tokenizer/tokenizer.json" <<'EOF'
{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
 "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
 "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "what": 1, "is": 2}, "unk_token": "[UNK]"}}
EOF
validate --json --tokenizer "$tmp/tokenizer" "$tmp/chat.jsonl"
grep -q "\"tokenizer\": *\"$tmp/tokenizer\"" "$tmp/validate.out" || fail "--tokenizer not used"

# The daemon reads a small LLaMA-Factory run once (a NaN in it), and `status` shows the run.
mkdir "$tmp/run-smoke"
for step in 1 2 3 4 5 6 7 8 9; do
  echo "{\"current_steps\": $step, \"total_steps\": 10, \"loss\": 2.$((10 - step))}"
done >"$tmp/run-smoke/trainer_log.jsonl"
echo '{"current_steps": 10, "total_steps": 10, "loss": NaN}' >>"$tmp/run-smoke/trainer_log.jsonl"
"$tw" run --once --no-notifications "$tmp/run-smoke" >"$tmp/run.log" 2>&1 \
  || { cat "$tmp/run.log" >&2; fail "tunewatch run --once failed"; }
if grep -E "Traceback|\"level\": \"error\"" "$tmp/run.log"; then fail "errors while running"; fi
"$tw" status >"$tmp/status.out"
grep -q "run-smoke" "$tmp/status.out" || { cat "$tmp/status.out" >&2; fail "status lacks the run"; }
grep -q "step 10 / 10" "$tmp/status.out" || { cat "$tmp/status.out" >&2; fail "status lacks step 10"; }
"$tw" events --json --kind anomaly | grep -q '"non_finite"' || fail "the NaN loss raised no alert"
echo "smoke-install: a plain install validates data and watches a run"
