# Sourced by check scripts: the Python test tools (scripts/requirements-test.txt, pinned) in
# .tools/venv-test, installed once and again only when the requirements change.
# shellcheck source=retry.sh
source "$(dirname "${BASH_SOURCE[0]}")/retry.sh"
ensure_test_venv() {
  TEST_VENV=.tools/venv-test
  local stamp="$TEST_VENV/.requirements.sha256" want
  want="$(sha256sum scripts/requirements-test.txt | cut -d' ' -f1)"
  if [[ ! -x "$TEST_VENV/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    python3 -m venv "$TEST_VENV"
    retry "$TEST_VENV/bin/python" -m pip install -q --disable-pip-version-check -r scripts/requirements-test.txt
    echo "$want" >"$stamp"
  fi
}
