#!/usr/bin/env python3
"""Generate crates/atoll-apiserver/src/protobuf/schema.rs: the field table the API server uses
to decode Kubernetes protobuf request bodies (client-go's typed clients and `kubectl create`
send them).

The table is data about the Kubernetes API: for every protobuf message, each field's tag, wire
type and JSON name. Tags and types come from the prost annotations of the `k8s-pb` crate; JSON
names come from the serde field names of the `k8s-openapi` crate (the JSON names cannot be
derived from the proto names: `clusterIP`, `podIPs`, ...). Both crates are fetched from
crates.io into a throwaway project; neither is a dependency of Atoll.

Usage: tools/gen-proto-schema.py > crates/atoll-apiserver/src/protobuf/schema.rs
"""

import json
import os
import re
import subprocess
import sys
import tempfile

K8S_PB = "0.9.0"
K8S_OPENAPI = "0.29.0"
OPENAPI_VERSION_DIR = "v1_33"


def fetch_sources():
    tmp = tempfile.mkdtemp()
    with open(os.path.join(tmp, "Cargo.toml"), "w") as f:
        f.write(f"""[package]
name = "fetch"
version = "0.0.0"
edition = "2021"
[dependencies]
k8s-pb = "={K8S_PB}"
k8s-openapi = {{ version = "={K8S_OPENAPI}", features = ["v1_33"] }}
""")
    os.makedirs(os.path.join(tmp, "src"))
    open(os.path.join(tmp, "src", "lib.rs"), "w").close()
    meta = json.loads(subprocess.check_output(
        ["cargo", "metadata", "--format-version", "1"], cwd=tmp))
    dirs = {}
    for p in meta["packages"]:
        if p["name"] in ("k8s-pb", "k8s-openapi"):
            dirs[p["name"]] = os.path.dirname(p["manifest_path"])
    return dirs["k8s-pb"], dirs["k8s-openapi"]


STRUCT = re.compile(r'pub struct (\w+) \{(?:\}|(.*?)\n\})', re.S)


def module_of(root, path):
    rel = os.path.relpath(os.path.dirname(path), root)
    return [] if rel == "." else rel.split(os.sep)


def resolve(module, type_path):
    """Resolve a Rust type path (relative with super::) to a dotted message name."""
    t = type_path.strip()
    for wrapper in ("::core::option::Option<", "::prost::alloc::vec::Vec<", "::prost::alloc::boxed::Box<"):
        while t.startswith(wrapper):
            t = t[len(wrapper):-1].strip().rstrip(",").strip()
    t = t.rstrip(",").strip()
    parts = t.split("::")
    mod = list(module)
    while parts and parts[0] == "super":
        mod.pop()
        parts.pop(0)
    return ".".join(mod + parts)


def parse_pb(root):
    messages = {}
    for dirpath, _, files in os.walk(root):
        for fn in files:
            if fn != "mod.rs":
                continue
            path = os.path.join(dirpath, fn)
            module = module_of(root, path)
            src = open(path).read()
            for m in STRUCT.finditer(src):
                name, body = m.group(1), m.group(2) or ""
                fields = []
                # Each field: its attribute, then (after doc comments) its declaration.
                chunks = re.split(r'(#\[prost\([^\]]*\)\])', body)
                for i in range(1, len(chunks) - 1, 2):
                    attr = chunks[i][len("#[prost("):-2]
                    decl = chunks[i + 1].strip()
                    d = re.match(r'pub (?:r#)?(\w+):\s*(.*?),\s*(?:///|$)', decl, re.S)
                    if not d:
                        continue
                    rust_name, ty = d.group(1), " ".join(d.group(2).split())
                    tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
                    repeated = "repeated" in attr
                    kind = attr.split(",")[0].strip()
                    if kind.startswith("btree_map"):
                        kv = re.search(r'btree_map = "(\w+), (\w+)"', attr)
                        value = kv.group(2)
                        if value == "message":
                            inner = ty[ty.index(",") + 1:ty.rindex(">")]
                            value = "message:" + resolve(module, inner)
                        fields.append((tag, rust_name, "map", value, False))
                    elif kind == "message":
                        fields.append((tag, rust_name, "message", resolve(module, ty), repeated))
                    elif kind.startswith("bytes"):
                        fields.append((tag, rust_name, "bytes", None, repeated))
                    else:
                        fields.append((tag, rust_name, kind, None, repeated))
                messages[".".join(module + [name])] = fields
    return messages


def parse_openapi_names(root):
    """(dotted struct name) -> {rust field name: json name}."""
    names = {}
    base = os.path.join(root, "src", OPENAPI_VERSION_DIR)
    for dirpath, _, files in os.walk(base):
        for fn in files:
            if not fn.endswith(".rs") or fn == "mod.rs":
                continue
            src = open(os.path.join(dirpath, fn)).read()
            s = re.search(r'pub struct (\w+)', src)
            if not s:
                continue
            module = module_of(base, os.path.join(dirpath, fn))
            mapping = {}
            for j, k in re.findall(r'"(\w+)" => Field::Key_(\w+)', src):
                mapping[k] = j
            names[".".join(module + [s.group(1)])] = mapping
    return names


# API groups the server decodes protobuf for (their GA versions), plus what they reference.
ROOTS = [
    "api.core.v1.", "api.apps.v1.", "api.coordination.v1.", "api.discovery.v1.", "api.events.v1.",
    "api.autoscaling.v1.", "api.certificates.v1.", "api.rbac.v1.", "api.authentication.v1.",
    "api.authorization.v1.", "api.admissionregistration.v1.", "api.policy.v1.", "api.batch.v1.",
    "apiextensions_apiserver.pkg.apis.apiextensions.v1.", "apimachinery.pkg.apis.meta.v1.",
    "apimachinery.pkg.runtime.",
]


def reachable(messages):
    todo = [m for m in messages if any(m.startswith(r) for r in ROOTS)]
    seen = set()
    while todo:
        m = todo.pop()
        if m in seen or m not in messages:
            continue
        seen.add(m)
        for _, _, kind, extra, _ in messages[m]:
            if kind == "message":
                todo.append(extra)
            elif kind == "map" and extra.startswith("message:"):
                todo.append(extra[len("message:"):])
    return seen


def camel(snake):
    head, *rest = snake.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def main():
    pb_root, openapi_root = fetch_sources()
    messages = parse_pb(os.path.join(pb_root, "src"))
    names = parse_openapi_names(openapi_root)
    out = sys.stdout
    out.write("// Generated by tools/gen-proto-schema.py from k8s-pb %s (tags, wire types) and\n" % K8S_PB)
    out.write("// k8s-openapi %s (JSON names). Do not edit; re-run the script.\n" % K8S_OPENAPI)
    out.write("//\n// Each entry: message name, then its fields as (tag, JSON name, type, repeated).\n\n")
    out.write("use super::{Field, Type};\n\n")
    out.write("pub static MESSAGES: &[(&str, &[Field])] = &[\n")
    for msg in sorted(reachable(messages)):
        json_names = names.get(msg, {})
        out.write('    ("%s", &[\n' % msg)
        for tag, rust, kind, extra, repeated in sorted(messages[msg]):
            jn = json_names.get(rust, camel(rust))
            if kind == "map":
                if extra.startswith("message:"):
                    ty = 'Type::MapMessage("%s")' % extra[len("message:"):]
                else:
                    ty = "Type::Map%s" % extra.capitalize()
            elif kind == "message":
                ty = 'Type::Message("%s")' % extra
            else:
                ty = "Type::" + {"string": "String", "bool": "Bool", "int32": "Int32",
                                 "int64": "Int64", "double": "Double", "float": "Float",
                                 "bytes": "Bytes"}[kind]
            out.write('        Field { tag: %d, json: "%s", ty: %s, repeated: %s },\n'
                      % (tag, jn, ty, "true" if repeated else "false"))
        out.write("    ]),\n")
    out.write("];\n")


if __name__ == "__main__":
    main()
