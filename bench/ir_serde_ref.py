"""Reference timings for bench/ir_serde.bench.ts: the onnx Python package.

usage: python3 bench/ir_serde_ref.py <config.json>

config: {"cases": [{"label", "path", "save_path", "runs", "warmup"}]}
prints one JSON object on stdout: {"onnx", "protobuf", "protobuf_impl", "cases": [
  {"label", "decode_ms": [...], "encode_ms": [...], "load_ms": [...], "save_ms": [...], "nodes"}]}

Times are taken inside this process with time.perf_counter, so interpreter start-up and
`import onnx` are excluded:
  decode = onnx.load_model_from_string(bytes)   (bytes read beforehand)
  encode = model.SerializeToString()
  load   = onnx.load(path)                      (reads the file; also scans for external data)
  save   = onnx.save(model, save_path)
"""
import gc
import json
import sys
import time

import google.protobuf
import onnx
from google.protobuf.internal import api_implementation


def timed(fn, runs, warmup):
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000.0)
    return samples


def main():
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    out = {
        "onnx": onnx.__version__,
        "protobuf": google.protobuf.__version__,
        "protobuf_impl": api_implementation.Type(),
        "cases": [],
    }
    for case in cfg["cases"]:
        path, runs, warmup = case["path"], case["runs"], case["warmup"]
        with open(path, "rb") as f:
            data = f.read()
        model = onnx.load_model_from_string(data)
        res = {"label": case["label"], "nodes": len(model.graph.node)}
        res["decode_ms"] = timed(lambda: onnx.load_model_from_string(data), runs, warmup)
        res["encode_ms"] = timed(model.SerializeToString, runs, warmup)
        res["load_ms"] = timed(lambda: onnx.load(path), runs, warmup)
        res["save_ms"] = timed(lambda: onnx.save(model, case["save_path"]), runs, warmup)
        out["cases"].append(res)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
