#!/usr/bin/env python3
"""Checks an exported attribution graph (neurontrace export) with nothing but Python's json module: the fields
circuit-tracer's viewer and Neuronpedia require (docs/circuit-graph-schema.md ("Exported attribution graph")), their types, and that every link joins
two listed nodes. Usage: check_neuronpedia_graph.py GRAPH.json [graph-metadata.json]. Prints "ok ..." or one error line, exit 1."""
import json
import sys

META = {"slug": str, "scan": str, "prompt_tokens": list, "prompt": str, "node_threshold": (int, float), "schema_version": int, "info": dict}
QPARAMS = {"pinnedIds": list, "supernodes": list, "linkType": str, "clickedId": str, "sg_pos": str}
NODE = {"node_id": str, "feature": int, "layer": str, "ctx_idx": int, "feature_type": str, "jsNodeId": str, "clerp": str,
        "influence": (int, float, type(None)), "activation": (int, float, type(None))}
LINK = {"source": str, "target": str, "weight": (int, float)}


def need(obj, fields, where):
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: not an object")
    for name, kind in fields.items():
        if name not in obj:
            raise ValueError(f"{where}: field {name} is missing")
        value = obj[name]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ValueError(f"{where}.{name}: {value!r} has the wrong type")


def check(path, meta_path=None):
    with open(path, encoding="utf-8") as f:
        g = json.load(f)
    for key in ("metadata", "qParams", "nodes", "links"):
        if key not in g:
            raise ValueError(f"top-level field {key} is missing")
    m = g["metadata"]
    need(m, META, "metadata")
    if m["schema_version"] != 1:
        raise ValueError("metadata.schema_version is not 1")
    if not isinstance(m["info"].get("generator"), dict) or not isinstance(m["info"]["generator"].get("name"), str):
        raise ValueError("metadata.info.generator.name is missing")
    need(g["qParams"], QPARAMS, "qParams")
    n_tokens = len(m["prompt_tokens"])
    ids = set()
    kinds = set()
    for i, n in enumerate(g["nodes"]):
        need(n, NODE, f"nodes[{i}]")
        if not 0 <= n["ctx_idx"] < n_tokens:
            raise ValueError(f"nodes[{i}].ctx_idx {n['ctx_idx']} is outside the {n_tokens} prompt tokens")
        if n["node_id"] in ids:
            raise ValueError(f"nodes[{i}]: node_id {n['node_id']} is listed twice")
        ids.add(n["node_id"])
        kinds.add(n["feature_type"])
    for kind in ("embedding", "logit"):
        if kind not in kinds:
            raise ValueError(f"no {kind} node")
    embeddings = sorted(n["ctx_idx"] for n in g["nodes"] if n["feature_type"] == "embedding")
    if embeddings != list(range(n_tokens)):
        raise ValueError("there is not exactly one embedding node per prompt token")
    for i, link in enumerate(g["links"]):
        need(link, LINK, f"links[{i}]")
        for end in ("source", "target"):
            if link[end] not in ids:
                raise ValueError(f"links[{i}].{end} {link[end]} is not a node")
    if meta_path is not None:
        with open(meta_path, encoding="utf-8") as f:
            listed = json.load(f)
        slugs = [x.get("slug") for x in listed.get("graphs", [])]
        if m["slug"] not in slugs:
            raise ValueError(f"{meta_path} does not list slug {m['slug']}")
    return len(g["nodes"]), len(g["links"])


if __name__ == "__main__":
    try:
        nodes, links = check(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
    except (ValueError, KeyError, OSError, json.JSONDecodeError) as e:
        print(f"error: {e}")
        sys.exit(1)
    print(f"ok {nodes} nodes {links} links")
