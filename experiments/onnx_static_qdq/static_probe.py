"""Static QDQ int8 probe: build variants, compare speed (ORT forward on 256 passages) and cosine to fp32."""
import os, sys, time, logging, warnings
import numpy as np
os.environ.setdefault("ATTNSIFT_DATA", "/work/shared/data")
from pathlib import Path
S = Path(os.environ.get("PROBE_DIR", "/tmp/onnx_static_qdq"))  # scratch for the quantised graphs
S.mkdir(parents=True, exist_ok=True)
import attnsift
from attnsift.retrieval.encoders import Encoder
import onnxruntime as ort
import onnx
from onnxruntime.quantization import (quantize_static, QuantFormat, QuantType, CalibrationMethod,
                                      CalibrationDataReader)

N = int(sys.argv[1]) if len(sys.argv) > 1 else 256
variants = sys.argv[2].split(",")
NCAL = int(os.environ.get("NCAL", 256))
ds = attnsift.load_dataset("scifact")
docs = list(ds.corpus.iter_documents())
rng = np.random.default_rng(0)
idx = rng.choice(len(docs), N, replace=False)
cal_idx = np.random.default_rng(1).choice(np.setdiff1d(np.arange(len(docs)), idx), NCAL, replace=False)
enc = Encoder("minilm", backend="onnx")
fp32 = enc._onnx.path
tok = enc.tokenizer

def make_batches(texts, bs=64, pad=True):
    lens = [len(tok(t, truncation=True, max_length=256)["input_ids"]) for t in texts]
    order = np.argsort(lens)[::-1]
    out = []
    for i in range(0, len(texts), bs):
        b = tok([texts[j] for j in order[i:i+bs]], padding=True if pad is True else "max_length", truncation=True, max_length=256, return_tensors="np")
        out.append({k: v.astype(np.int64) for k, v in b.items()})
    return out
batches = make_batches([docs[i].contents for i in idx])

def pooled(h, m):
    m = m[..., None].astype(np.float32)
    v = (h * m).sum(1) / m.sum(1)
    return v / np.linalg.norm(v, axis=1, keepdims=True)

def sess(path):
    so = ort.SessionOptions(); so.intra_op_num_threads = 2; so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL; so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

def run(s):
    names = [i.name for i in s.get_inputs()]
    return np.concatenate([pooled(s.run(None, {n: b[n] for n in names})[0], b["attention_mask"]) for b in batches])

class Reader(CalibrationDataReader):
    def __init__(self, names):
        self.names = names
        self.it = iter(make_batches([docs[i].contents for i in cal_idx], bs=16, pad="max"))
    def get_next(self):
        b = next(self.it, None)
        return None if b is None else {n: b[n] for n in self.names}

def build(name):
    """name: static-<calib>-<act>[-xattn][-xffnout]... calib in minmax/pct/entropy; act s8/u8"""
    p = S / f"{name}.onnx"
    if p.exists():
        return p
    if name == "dyn":
        from onnxruntime.quantization import quantize_dynamic
        quantize_dynamic(str(fp32), str(p), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        return p
    parts = name.split("-")
    calib = {"minmax": CalibrationMethod.MinMax, "pct": CalibrationMethod.Percentile,
             "entropy": CalibrationMethod.Entropy}[parts[1]]
    act = QuantType.QInt8 if parts[2] == "s8" else QuantType.QUInt8
    m = onnx.load(str(fp32))
    inits = {i.name for i in m.graph.initializer}
    excl = [n.name for n in m.graph.node if n.op_type == "MatMul" and n.input[1] not in inits]  # QK^T, AV
    import re
    pats = {"xffnout": r"/layer\.\d+/output/dense/MatMul", "xffnin": r"/intermediate/dense/MatMul",
            "xattn": r"/attention/", "xqkv": r"/self/(query|key|value)/MatMul"}
    for x in parts[3:]:
        excl += [n.name for n in m.graph.node if n.op_type == "MatMul" and re.search(pats[x], n.name)]
    names = [i.name for i in m.graph.input]
    extra = {"ActivationSymmetric": act == QuantType.QInt8, "WeightSymmetric": True}
    if calib == CalibrationMethod.Percentile:
        extra["CalibPercentile"] = float(os.environ.get("PCT", 99.999))
    t = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(str(fp32), str(p), Reader(names), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul"], per_channel=True, activation_type=act,
                        weight_type=QuantType.QInt8, calibrate_method=calib, nodes_to_exclude=excl,
                        extra_options=extra)
    print(f"built {name} in {time.time()-t:.1f}s, excluded {len(excl)}", flush=True)
    return p

ref = run(sess(fp32))
res, sessions = {}, {}
for v in variants:
    p = fp32 if v == "fp32" else build(v)
    sessions[v] = sess(p)
    out = run(sessions[v])
    cos = (out * ref).sum(1)
    res[v] = {"min_cos": float(cos.min()), "gap": float(1 - cos.mean()), "times": []}
    print(f"{v}: min cos {cos.min():.5f} gap {1-cos.mean():.5f}", flush=True)
if os.environ.get("NOTIME"):
    sys.exit()
print("load before", os.getloadavg())
for r in range(int(os.environ.get("REPS", 3))):
    for v in variants:
        t = time.perf_counter(); run(sessions[v]); res[v]["times"].append(round(time.perf_counter() - t, 3))
print("load after", os.getloadavg())
for v, r in res.items():
    print(f"{v:28s} {N/min(r['times']):7.1f} p/s  gap {r['gap']:.5f} mincos {r['min_cos']:.5f} times {r['times']}")
