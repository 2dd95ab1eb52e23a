# Sourced by tests/run.sh: a Python venv under target/py with the third-party Python clients
# the tests drive (today: jsonschema, to check the shipped examples against `sluice schema`).
# SLUICE_PYTHON names its interpreter for the tests.

PY_PACKAGES=('jsonschema==4.*')

provide_python() {
  local venv="$PWD/target/py"
  if ! "$venv/bin/python" -c 'import jsonschema' >/dev/null 2>&1; then
    rm -rf "$venv"
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
      apt-get install -y -q python3-venv >/dev/null
      python3 -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"
  fi
  export SLUICE_PYTHON="$venv/bin/python"
}
