# Sourced by scripts/*: make the venv ($VENV, default .venv) with a Python the project supports
# (3.11, 3.12 or 3.13), and install the project into it only when pyproject.toml or
# constraints.txt changed since the last install (a stamp in the venv): a second run starts at
# once and works offline.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${VENV:-.venv}"

supported() {
    "$1" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 13) else 1)' 2>/dev/null
}

pick_python() {
    local candidate
    for candidate in ${PYTHON:-} python3.12 python3.11 python3.13 python3; do
        if command -v "$candidate" >/dev/null 2>&1 && supported "$candidate"; then
            echo "$candidate"
            return 0
        fi
    done
    echo "osteoguard needs Python 3.11, 3.12 or 3.13 (found: $(python3 --version 2>&1 || echo none))." >&2
    echo "Install one (README: \"No suitable Python?\"), or point PYTHON= at one: PYTHON=/path/to/python3.13 $0" >&2
    return 1
}

if [ ! -x "$VENV/bin/python" ] || ! supported "$VENV/bin/python"; then
    python="$(pick_python)" || exit 1
    rm -rf "$VENV"
    "$python" -m venv "$VENV"
fi

# What the install depends on: the two files, the extras asked for, and the interpreter.
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1) ${EXTRAS:-} $("$VENV/bin/python" -V 2>&1)"
stamp="$VENV/.osteoguard-installed${EXTRAS:-}"
# A venv set up for the tests ([test]) holds everything scripts/serve needs.
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
fi
if [ -z "${EXTRAS:-}" ] && [ -f "$VENV/.osteoguard-installed[test]" ] &&
    [ "$(cut -d' ' -f1 "$VENV/.osteoguard-installed[test]")" = "${want%% *}" ]; then
    return 0
fi

echo "== installing osteoguard${EXTRAS:-} into $VENV (pyproject.toml or constraints.txt changed, or first run)" >&2
pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c constraints.txt)
if "$VENV/bin/python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 13) else 1)'; then
    # durable-rules 2.0.28 calls PyEval_CallObject, which 3.13 removed; it ships only C
    # sources, and its setup.py overwrites CFLAGS but not CPPFLAGS. Built here, from the
    # sdist, without pip's wheel cache: a cached wheel built without the flag would not import.
    CPPFLAGS="-DPyEval_CallObject=PyObject_CallObject ${CPPFLAGS:-}" \
        "${pip[@]}" --no-cache-dir --no-binary durable-rules durable-rules
fi
# Pinned versions (constraints.txt) so a fresh machine installs what CI tested.
"${pip[@]}" -e ".${EXTRAS:-}"
if ! "$VENV/bin/python" -I -c "import durable_rules_engine" 2>/dev/null; then
    echo "durable-rules was installed but does not import; remove $VENV and run again" >&2
    exit 1
fi
echo "$want" >"$stamp"
