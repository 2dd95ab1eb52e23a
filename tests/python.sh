# Sourced by tests/run.sh: a Python venv under target/py with the third-party Python clients
# the tests drive: jsonschema (the shipped examples against `sluice schema`), openlineage-python
# (every OpenLineage event Sluice emits, parsed into the client's models), securesystemslib
# (DSSE envelopes of artifact provenance, verified by an implementation other than ours),
# mlflow-skinny (MLflow's own tracking and registry client, against Sluice's MLflow API),
# scipy (drift statistics compared with its own), tritonclient[http] (the Open Inference
# Protocol against served models).
# SLUICE_PYTHON names its interpreter for the tests.

PY_PACKAGES=('jsonschema==4.*' 'openlineage-python==1.*' 'securesystemslib[crypto]==1.*' 'mlflow-skinny==3.*' 'scipy==1.*' 'tritonclient[http]==2.*')

provide_python() {
  local venv="$PWD/target/py"
  if ! "$venv/bin/python" -c 'import jsonschema, openlineage.client, securesystemslib.dsse, cryptography, mlflow, scipy, tritonclient.http' >/dev/null 2>&1; then
    rm -rf "$venv"
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
      apt-get install -y -q python3-venv >/dev/null
      python3 -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"
  fi
  export SLUICE_PYTHON="$venv/bin/python"
  # Evidently, to compare drift verdicts with (tests/drift.rs): where it installs. Its 0.7
  # releases import only with pandas before 2.3. A failed install is said loudly, and the
  # test then skips saying so; SLUICE_REQUIRE_EVIDENTLY=1 makes it required.
  if ! "$venv/bin/python" -c 'import evidently.legacy.report' >/dev/null 2>&1; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'evidently==0.7.*' 'pandas<2.3' \
      || echo "!!! tests/python.sh: evidently did not install; the verdict comparison will skip !!!" >&2
  fi
  if "$venv/bin/python" -c 'import evidently.legacy.report' >/dev/null 2>&1; then
    export SLUICE_REQUIRE_EVIDENTLY=1
  fi
}
