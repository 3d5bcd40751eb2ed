"""Writes the pytorch_model.bin fixtures of t5/pytorch_test.go with torch.save, from tiny-t5-v1's safetensors
(Debian python3-torch): run from this folder, /usr/bin/python3 make.py."""
import collections, json, os, shutil, sys
sys.path.insert(0, "../../../scripts/peers")
import torch
from torch_t5 import load_safetensors

sd = load_safetensors("../tiny-t5-v1/model.safetensors")
order = sorted(sd)

def folder(name):
    os.makedirs(name, exist_ok=True); shutil.copy("../tiny-t5-v1/config.json", name + "/config.json"); return name

# One file, as save_pretrained(safe_serialization=False) writes it: an OrderedDict of float32 tensors.
one = folder("single")
torch.save(collections.OrderedDict((k, sd[k]) for k in order), one + "/pytorch_model.bin")

# Sharded, with the index transformers writes; each shard's first matrix is saved with column-major strides.
sh = folder("sharded")
half = len(order) // 2
parts = {"pytorch_model-00001-of-00002.bin": order[:half], "pytorch_model-00002-of-00002.bin": order[half:]}
weight_map = {}
for f, keys in parts.items():
    d = collections.OrderedDict()
    for k in keys:
        d[k] = sd[k]
        weight_map[k] = f
    first = keys[0]
    if sd[first].dim() == 2:
        d[first] = sd[first].t().contiguous().t()  # same values, column-major strides
    torch.save(d, sh + "/" + f)
json.dump({"metadata": {"total_size": sum(v.numel() * 4 for v in sd.values())}, "weight_map": weight_map},
          open(sh + "/pytorch_model.bin.index.json", "w"), indent=2)

# A file whose unpickling would run a command in Python (torch.load(weights_only=False)).
class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/readsweep-pickle-ran",))
ev = folder("malicious")
torch.save(collections.OrderedDict([("shared.weight", Evil())]), ev + "/pytorch_model.bin")

# A storage record shorter than its element count says (a hostile or damaged file): refused before allocating.
import zipfile
lie = folder("short-storage")
src = zipfile.ZipFile(one + "/pytorch_model.bin")
with zipfile.ZipFile(lie + "/pytorch_model.bin", "w", zipfile.ZIP_STORED) as dst:
    for info in src.infolist():
        data = src.read(info.filename)
        if info.filename.endswith("/data/0"):
            data = data[: len(data) // 2]
        dst.writestr(info, data)

# Protocol 4 (torch.save(..., pickle_protocol=4)): frames, short strings, MEMOIZE, with three tensors of the model,
# for the reader's opcodes; small, read with readPyTorch directly.
p4 = folder("protocol4")
os.remove(p4 + "/config.json")
torch.save(collections.OrderedDict((k, sd[k]) for k in ["encoder.final_layer_norm.weight", "decoder.final_layer_norm.weight",
    "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]), p4 + "/pytorch_model.bin", pickle_protocol=4)
