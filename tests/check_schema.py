"""Validates JSON documents against a JSON Schema with the `jsonschema` package.

    python check_schema.py SCHEMA.json DOC.json...

Prints one line per document with its errors; exits 1 if any document is invalid.
"""
import json
import sys

import jsonschema

schema = json.load(open(sys.argv[1]))
validator = jsonschema.validators.validator_for(schema)(schema)
bad = 0
for path in sys.argv[2:]:
    errors = list(validator.iter_errors(json.load(open(path))))
    for e in errors:
        print(f"{path}: {'/'.join(map(str, e.absolute_path))}: {e.message}")
    bad += bool(errors)
print(f"{len(sys.argv) - 2 - bad} of {len(sys.argv) - 2} documents valid")
sys.exit(1 if bad else 0)
