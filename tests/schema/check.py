#!/usr/bin/env python3
"""The topology schema checked by a validator nobody here wrote (python-jsonschema).

  check.py valid SCHEMA FILE...
      every FILE is valid against SCHEMA (draft 2020-12); prints each error.
  check.py agree SCHEMA ANYEDGE FILE...
      the schema and anyedge's parser refuse the same structural mistakes: from each
      FILE, every kind of mistake once per mapping and key (an unknown field, a required
      field removed, a value outside an enum, a value of the wrong type) is written to a
      file of its own; `ANYEDGE validate` and the schema must both refuse it (a removed
      required field by name). A removed optional field must not be called required.

Files are read as YAML 1.2, as editors' YAML language servers read them (`off` and `no`
are words, not booleans).
"""

import copy
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml
from jsonschema import Draft202012Validator


class Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2's booleans: only true and false."""


Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load(path):
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=Yaml12Loader)


def validator(schema_path):
    with open(schema_path, encoding="utf-8") as f:
        schema = json.load(f)
    Draft202012Validator.check_schema(schema)
    return schema, Draft202012Validator(schema)


def valid(schema_path, files):
    _, v = validator(schema_path)
    bad = 0
    for path in files:
        errors = sorted(v.iter_errors(load(path)), key=lambda e: list(e.absolute_path))
        for e in errors:
            where = "/".join(str(p) for p in e.absolute_path) or "(top)"
            print(f"{path}: {where}: {e.message}")
        bad += len(errors)
        print(f"{path}: {'valid' if not errors else f'{len(errors)} error(s)'}")
    return 1 if bad else 0


def json_type(value):
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "null"


def resolve(schema, s, value):
    """The schema of `value` under `s`: through $ref, and the anyOf branch of its type."""
    while True:
        if "$ref" in s:
            s = schema["$defs"][s["$ref"].split("/")[-1]]
            continue
        if "anyOf" in s:
            t = json_type(value)
            for branch in s["anyOf"]:
                b = branch
                while "$ref" in b:
                    b = schema["$defs"][b["$ref"].split("/")[-1]]
                bt = b.get("type")
                bt = set(bt) if isinstance(bt, list) else {bt}
                if t in bt or ("number" in bt and t == "integer"):
                    s = b
                    break
            else:
                return None
            continue
        return s


def mappings(schema, s, value, path):
    """Every (path, mapping, its schema) under `value`."""
    s = resolve(schema, s, value)
    if s is None:
        return
    if isinstance(value, dict) and "properties" in s:
        yield path, value, s
        for k, v in value.items():
            sub = s["properties"].get(k)
            if sub is not None:
                yield from mappings(schema, sub, v, path + [k])
    elif isinstance(value, dict) and "additionalProperties" in s and isinstance(s["additionalProperties"], dict):
        for k, v in value.items():
            yield from mappings(schema, s["additionalProperties"], v, path + [k])
    elif isinstance(value, list):
        items = s.get("prefixItems")
        for i, v in enumerate(value):
            sub = items[i] if items and i < len(items) else s.get("items")
            if sub is not None:
                yield from mappings(schema, sub, v, path + [i])


def at(doc, path):
    for p in path:
        doc = doc[p]
    return doc


def types(schema, s):
    """The JSON types a value under `s` may have."""
    while "$ref" in s:
        s = schema["$defs"][s["$ref"].split("/")[-1]]
    if "anyOf" in s:
        return set().union(*(types(schema, b) for b in s["anyOf"]))
    t = s.get("type")
    allowed = set(t) if isinstance(t, list) else {t}
    return allowed | {"integer"} if "number" in allowed else allowed


def wrong_value(schema, field, resolved):
    """(value, kind): a value outside the field's enum, or of a type none of its forms
    takes; None if there is none."""
    if resolved is not None and "enum" in resolved and resolved.get("type") == "string":
        return "not-a-choice", "enum"
    allowed = types(schema, field)
    for value in ["many", 4.5, ["many"], True]:
        if json_type(value) not in allowed:
            return value, "type"
    return None


def agree(schema_path, anyedge, files):
    schema, v = validator(schema_path)
    defs_by_id = {id(d): name for name, d in schema["$defs"].items()}
    defs_by_id[id(schema)] = "topology"
    seen = set()
    failures = []
    count = 0
    with tempfile.TemporaryDirectory(prefix="anyedge-schema-") as tmp:

        def parser_says(doc):
            """Writes `doc` to a file of its own; what `anyedge validate` said and its exit."""
            nonlocal count
            count += 1
            path = os.path.join(tmp, f"m{count}.yaml")
            with open(path, "w", encoding="utf-8") as f:
                yaml.safe_dump(doc, f, sort_keys=False)
            run = subprocess.run([anyedge, "validate", path], capture_output=True, text=True)
            return run.stdout + run.stderr, run

        def refused(doc, what, must_name=None):
            said, run = parser_says(doc)
            schema_errors = list(v.iter_errors(doc))
            if run.returncode == 0:
                failures.append(f"{what}: the parser accepted it")
            elif must_name and must_name not in said:
                failures.append(f"{what}: the parser did not say `{must_name}`: {said.strip()[:300]}")
            if not schema_errors:
                failures.append(f"{what}: the schema accepted it (the parser said: {said.strip()[:200]})")
            return said

        for file in files:
            doc = load(file)
            for path, mapping, s in list(mappings(schema, schema, doc, [])):
                name = defs_by_id.get(id(s), "?")
                where = f"{os.path.basename(file)}: {name} at /{'/'.join(map(str, path))}"
                if (name, "+unknown") not in seen:
                    seen.add((name, "+unknown"))
                    m = copy.deepcopy(doc)
                    at(m, path)["bogus_field"] = 1
                    refused(m, f"{where}: unknown field", "bogus_field: unknown field")
                required = set(s.get("required", []))
                for k, needs in s.get("dependentRequired", {}).items():
                    if k in mapping:
                        required.update(needs)
                # One of a group (a fault's kind; a traffic class's protocol or kind):
                # the only one present is required, under the group's own message.
                grouped = set()
                for rule in s.get("allOf", []):
                    group = [r["required"][0] for r in rule.get("oneOf", rule.get("anyOf", []))]
                    present = [k for k in group if k in mapping]
                    if len(present) == 1:
                        grouped.add(present[0])
                for key in list(mapping):
                    if key in grouped and (name, key, "-grouped") not in seen:
                        seen.add((name, key, "-grouped"))
                        m = copy.deepcopy(doc)
                        del at(m, path)[key]
                        refused(m, f"{where}: `{key}` removed, the only one of its group")
                    elif key in grouped:
                        pass
                    elif key in required and (name, key, "-required") not in seen:
                        seen.add((name, key, "-required"))
                        m = copy.deepcopy(doc)
                        del at(m, path)[key]
                        refused(m, f"{where}: required `{key}` removed", f"{key}: missing (required)")
                    elif key not in required and (name, key, "-optional") not in seen:
                        seen.add((name, key, "-optional"))
                        m = copy.deepcopy(doc)
                        del at(m, path)[key]
                        if f"{key}: missing (required)" in parser_says(m)[0]:
                            failures.append(f"{where}: optional `{key}` removed: the parser calls it required")
                    field = s["properties"][key]
                    resolved = resolve(schema, field, mapping[key])
                    # Every choice the schema offers is one the parser knows.
                    for choice in (resolved or {}).get("enum", []) if (name, key, "choices") not in seen else []:
                        m = copy.deepcopy(doc)
                        at(m, path)[key] = choice
                        if f"`{choice}`" in parser_says(m)[0]:
                            failures.append(f"{where}: the schema offers `{key}: {choice}`, the parser refuses the word")
                    seen.add((name, key, "choices"))
                    wrong = wrong_value(schema, field, resolved)
                    if wrong is not None and (name, key, wrong[1]) not in seen:
                        bad, kind = wrong
                        seen.add((name, key, kind))
                        m = copy.deepcopy(doc)
                        at(m, path)[key] = bad
                        refused(m, f"{where}: `{key}: {bad!r}` ({kind})")
    for f in failures:
        print(f)
    print(f"{count} mutated files, {len(failures)} disagreement(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "valid":
        sys.exit(valid(sys.argv[2], sys.argv[3:]))
    if len(sys.argv) >= 5 and sys.argv[1] == "agree":
        sys.exit(agree(sys.argv[2], sys.argv[3], sys.argv[4:]))
    print(__doc__)
    sys.exit(2)
