# Sourced by scripts/*: make .venv with a Python the project supports, install the project.
# durable-rules 2.0.28 fails to import on Python 3.13, so 3.11 or 3.12 is required.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

pick_python() {
    for candidate in ${PYTHON:-} python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 12) else 1)' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    echo "osteoguard needs Python 3.11 or 3.12 (set PYTHON=/path/to/python3.12)" >&2
    return 1
}

if [ ! -x .venv/bin/python ]; then
    "$(pick_python)" -m venv .venv
fi
# Pinned versions (constraints.txt) so a fresh machine installs what CI tested.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".${EXTRAS:-}"
