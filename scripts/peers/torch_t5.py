"""Minimal T5 in plain PyTorch (Debian python3-torch 1.13), checked against shared/golden.
It is the CPU peer for the project's trainer (torch_cpu_peer.py) and the model of trial/testdata/trajectory/make.py."""
import json, math, sys, time, struct
import torch, torch.nn as nn, torch.nn.functional as F

def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]; hdr = json.loads(f.read(n)); base = 8 + n; data = f.read()
    out = {}
    dt = {"F32": torch.float32, "I64": torch.int64}
    for k, v in hdr.items():
        if k == "__metadata__": continue
        a, b = v["data_offsets"]
        out[k] = torch.frombuffer(bytearray(data[a:b]), dtype=dt[v["dtype"]]).reshape(v["shape"]).clone()
    return out

def bucket(rel, bidirectional, nb, maxd):
    ret = torch.zeros_like(rel)
    if bidirectional:
        nb //= 2; ret += (rel > 0).long() * nb; n = rel.abs()
    else:
        n = -torch.min(rel, torch.zeros_like(rel))
    me = nb // 2; small = n < me
    large = me + (torch.log(n.float() / me + 1e-20) / math.log(maxd / me) * (nb - me)).long()
    large = torch.min(large, torch.full_like(large, nb - 1))
    return ret + torch.where(small, n, large)

class RMS(nn.Module):
    def __init__(s, d, eps=1e-6): super().__init__(); s.weight = nn.Parameter(torch.ones(d)); s.eps = eps
    def forward(s, x): return s.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + s.eps))

class Attn(nn.Module):
    def __init__(s, c, rel, causal):
        super().__init__(); d, h, k = c["d_model"], c["num_heads"], c["d_kv"]
        s.h, s.k, s.causal, s.c = h, k, causal, c
        s.q, s.kk, s.v, s.o = (nn.Linear(d, h * k, bias=False) for _ in range(3)) if False else (nn.Linear(d, h*k, bias=False), nn.Linear(d, h*k, bias=False), nn.Linear(d, h*k, bias=False), None)
        s.o = nn.Linear(h * k, d, bias=False)
        s.rel = nn.Embedding(c["relative_attention_num_buckets"], h) if rel else None
    def bias(s, q, kl):
        ctx = torch.arange(q)[:, None]; mem = torch.arange(kl)[None, :]
        b = bucket(mem - ctx, not s.causal, s.c["relative_attention_num_buckets"], s.c["relative_attention_max_distance"])
        return s.rel(b).permute(2, 0, 1).unsqueeze(0)
    def forward(s, x, kv, mask, pos_bias):
        B, Lq, _ = x.shape; Lk = kv.shape[1]
        q = s.q(x).view(B, Lq, s.h, s.k).transpose(1, 2); k = s.kk(kv).view(B, Lk, s.h, s.k).transpose(1, 2)
        v = s.v(kv).view(B, Lk, s.h, s.k).transpose(1, 2)
        sc = q @ k.transpose(-1, -2)
        if pos_bias is None:
            pos_bias = s.bias(Lq, Lk) if s.rel is not None else torch.zeros(1, s.h, Lq, Lk)
            pos_bias = pos_bias + mask
        p = F.softmax((sc + pos_bias).to(torch.promote_types(sc.dtype, torch.float32)), -1).to(v.dtype)
        return s.o((p @ v).transpose(1, 2).reshape(B, Lq, -1)), pos_bias, p

class FF(nn.Module):
    def __init__(s, c):
        super().__init__(); d, f = c["d_model"], c["d_ff"]; s.gated = c["feed_forward_proj"].startswith("gated")
        if s.gated: s.wi_0 = nn.Linear(d, f, bias=False); s.wi_1 = nn.Linear(d, f, bias=False)
        else: s.wi = nn.Linear(d, f, bias=False)
        s.wo = nn.Linear(f, d, bias=False)
    def forward(s, x):
        if s.gated: return s.wo(F.gelu(s.wi_0(x), approximate="tanh") * s.wi_1(x))
        return s.wo(F.relu(s.wi(x)))

class Block(nn.Module):
    def __init__(s, c, rel, dec):
        super().__init__(); s.dec = dec
        s.ln0 = RMS(c["d_model"]); s.sa = Attn(c, rel, dec)
        if dec: s.ln1 = RMS(c["d_model"]); s.ca = Attn(c, False, False)
        s.ln2 = RMS(c["d_model"]); s.ff = FF(c)
    def forward(s, x, mask, pb, enc=None, emask=None, cpb=None):
        a, pb, _ = s.sa(s.ln0(x), s.ln0(x), mask, pb); x = x + a
        cp = None
        if s.dec:
            y = s.ln1(x); a, cpb, cp = s.ca(y, enc, emask, cpb); x = x + a
        return x + s.ff(s.ln2(x)), pb, cpb, cp

class T5(nn.Module):
    def __init__(s, c):
        super().__init__(); s.c = c; d = c["d_model"]
        s.shared = nn.Embedding(c["vocab_size"], d)
        s.enc = nn.ModuleList([Block(c, i == 0, False) for i in range(c["num_layers"])])
        s.dec = nn.ModuleList([Block(c, i == 0, True) for i in range(c.get("num_decoder_layers") or c["num_layers"])])
        s.enc_ln = RMS(d); s.dec_ln = RMS(d)
        # The output projection is lm_head.weight where the checkpoint has one, else shared.weight; the decoder
        # output is scaled by d_model**-0.5 when scale_decoder_outputs says so, or (configs without that field)
        # when the embeddings are tied. shared/golden/README.md explains why both checks are needed.
        s.tied = not c.get("has_lm_head", not c.get("tie_word_embeddings", True))
        s.scale = c.get("scale_decoder_outputs", c.get("tie_word_embeddings", True))
        if not s.tied: s.lm_head = nn.Linear(d, c["vocab_size"], bias=False)
    def encode(s, ids, am, states=None):
        x = getattr(s, "shared_in", None)
        if x is None: x = s.shared(ids)
        mask = (1.0 - am[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min; pb = None
        for b in s.enc:
            x, pb, _, _ = b(x, mask, pb)
            if states is not None: states.append(x)
        return s.enc_ln(x), mask
    def decode(s, dids, enc, emask, states=None, cross=None):
        L = dids.shape[1]; x = s.shared(dids)
        causal = torch.triu(torch.full((L, L), torch.finfo(x.dtype).min, dtype=x.dtype), 1)[None, None]
        pb = cpb = None
        for b in s.dec:
            x, pb, cpb, cp = b(x, causal, pb, enc, emask, cpb)
            if states is not None: states.append(x); cross.append(cp)
        x = s.dec_ln(x)
        return x
    def head(s, h):
        if s.scale: h = h * (s.c["d_model"] ** -0.5)
        return h @ s.shared.weight.t() if s.tied else s.lm_head(h)
    def forward(s, ids, am, labels):
        dids = torch.cat([torch.zeros_like(labels[:, :1]), labels[:, :-1]], 1).masked_fill(torch.cat([torch.zeros_like(labels[:, :1]), labels[:, :-1]], 1) == -100, 0)
        enc, em = s.encode(ids, am)
        logits = s.head(s.decode(dids, enc, em))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100), logits

def param_map(m):
    """Hugging Face name -> parameter of a T5 built here."""
    mp = {}
    for stack, blocks in (("encoder", m.enc), ("decoder", m.dec)):
        for i, b in enumerate(blocks):
            p = f"{stack}.block.{i}.layer."
            mp[p + "0.layer_norm.weight"] = b.ln0.weight
            for n, mod in (("q", b.sa.q), ("k", b.sa.kk), ("v", b.sa.v), ("o", b.sa.o)): mp[p + f"0.SelfAttention.{n}.weight"] = mod.weight
            if b.sa.rel is not None: mp[p + "0.SelfAttention.relative_attention_bias.weight"] = b.sa.rel.weight
            fi = 1
            if stack == "decoder":
                mp[p + "1.layer_norm.weight"] = b.ln1.weight
                for n, mod in (("q", b.ca.q), ("k", b.ca.kk), ("v", b.ca.v), ("o", b.ca.o)): mp[p + f"1.EncDecAttention.{n}.weight"] = mod.weight
                fi = 2
            mp[p + f"{fi}.layer_norm.weight"] = b.ln2.weight
            if b.ff.gated: mp[p + f"{fi}.DenseReluDense.wi_0.weight"] = b.ff.wi_0.weight; mp[p + f"{fi}.DenseReluDense.wi_1.weight"] = b.ff.wi_1.weight
            else: mp[p + f"{fi}.DenseReluDense.wi.weight"] = b.ff.wi.weight
            mp[p + f"{fi}.DenseReluDense.wo.weight"] = b.ff.wo.weight
    mp["shared.weight"] = m.shared.weight; mp["encoder.final_layer_norm.weight"] = m.enc_ln.weight; mp["decoder.final_layer_norm.weight"] = m.dec_ln.weight
    if not m.tied: mp["lm_head.weight"] = m.lm_head.weight
    return mp

def load_hf(folder):
    c = json.load(open(folder + "/config.json")); sd = load_safetensors(folder + "/model.safetensors")
    c["has_lm_head"] = "lm_head.weight" in sd; m = T5(c); mp = param_map(m)
    with torch.no_grad():
        for k, p in mp.items(): p.copy_(sd[k])
    return m, mp

def save_safetensors(path, tensors):
    hdr, off, blobs = {}, 0, []
    for k, t in tensors.items():
        b = t.detach().to(torch.float32).contiguous().numpy().tobytes()
        hdr[k] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}; off += len(b); blobs.append(b)
    h = json.dumps(hdr).encode()
    with open(path, "wb") as f: f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))

def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]; return json.loads(f.read(n))

def peft_targets(cfg, names):
    """The modules peft's check_target_module_exists wraps: a string is a regex fullmatched against the module
    name, a list matches a name equal to an entry or ending in "." + entry."""
    import re
    t = cfg["target_modules"]
    if isinstance(t, str): return {n for n in names if re.fullmatch(t, n)}
    return {n for n in names if any(n == x or n.endswith("." + x) for x in t)}

def load_export(folder):
    """A folder `sweep export` wrote, as its consumer reads it: a Hugging Face T5 folder, or a peft LoRA, IA3 or
    prompt-tuning folder over the base model adapter_config.json names, the adapter applied by peft's formulas.
    Returns the model and the prompt rows to prepend to the encoder's input (None when there are none)."""
    import os
    if not os.path.exists(folder + "/adapter_config.json"):
        meta = header(folder + "/model.safetensors")
        assert meta.get("__metadata__") == {"format": "pt"}, meta.get("__metadata__")
        assert all(v["dtype"] == "F32" for k, v in meta.items() if k != "__metadata__")
        m, mp = load_hf(folder)
        extra = set(k for k in meta if k != "__metadata__") - set(mp)
        assert not extra, extra
        return m, None
    cfg = json.load(open(folder + "/adapter_config.json")); assert cfg["task_type"] == "SEQ_2_SEQ_LM", cfg
    m, mp = load_hf(cfg["base_model_name_or_path"]); sd = load_safetensors(folder + "/adapter_model.safetensors")
    assert header(folder + "/adapter_model.safetensors").get("__metadata__") == {"format": "pt"}
    modules = {k[: -len(".weight")] for k in mp if k.endswith(".weight") and "layer_norm" not in k and "relative_attention" not in k and k != "shared.weight" and k != "lm_head.weight"}
    prompt = None
    with torch.no_grad():
        if cfg["peft_type"] == "LORA":
            wrapped = peft_targets(cfg, modules); scale = cfg["lora_alpha"] / cfg["r"]
            keys = {k[len("base_model.model."): -len(".lora_A.weight")] for k in sd if k.endswith(".lora_A.weight")}
            assert keys == wrapped and len(sd) == 2 * len(keys), (sorted(keys), sorted(wrapped))
            for mod in keys:
                a, b = sd[f"base_model.model.{mod}.lora_A.weight"], sd[f"base_model.model.{mod}.lora_B.weight"]
                assert a.shape[0] == cfg["r"] and b.shape[1] == cfg["r"]
                mp[mod + ".weight"] += b @ a * scale
        elif cfg["peft_type"] == "IA3":
            wrapped = peft_targets(cfg, modules); ff = peft_targets({"target_modules": cfg["feedforward_modules"]}, modules)
            keys = {k[len("base_model.model."): -len(".ia3_l")] for k in sd}
            assert keys == wrapped, (sorted(keys), sorted(wrapped))
            for mod in keys:
                l = sd[f"base_model.model.{mod}.ia3_l"]; w = mp[mod + ".weight"]
                if mod in ff: assert l.shape == (1, w.shape[1]); w *= l        # scales the input: columns
                else: assert l.shape == (w.shape[0], 1); w *= l                # scales the output: rows
        elif cfg["peft_type"] == "PROMPT_TUNING":
            rows = sd["prompt_embeddings"]
            assert rows.shape == (cfg["num_virtual_tokens"] * cfg.get("num_transformer_submodules", 2), cfg["token_dim"]), rows.shape
            prompt = rows[: cfg["num_virtual_tokens"]]
        else:
            raise SystemExit("unknown peft_type " + cfg["peft_type"])
    return m, prompt

def export_logits(folder, batch, out):
    m, prompt = load_export(folder); b = load_safetensors(batch)
    ids, am, labels = b["input_ids"].long(), b["attention_mask"].long(), b["labels"].long()
    if prompt is not None:  # peft's PeftModelForSeq2SeqLM: the prompt before the inputs' embeddings, mask ones
        emb = torch.cat([prompt[None].expand(ids.shape[0], -1, -1), m.shared(ids)], 1)
        am = torch.cat([torch.ones(ids.shape[0], prompt.shape[0], dtype=am.dtype), am], 1)
        m.shared_in = emb
    with torch.no_grad():
        _, logits = m(ids, am, labels)
    save_safetensors(out, {"logits": logits})

if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "logits":
    export_logits(*sys.argv[2:]); sys.exit(0)

if __name__ == "__main__":
    for kind in sys.argv[1:]:
        m, mp = load_hf(kind); ref = load_safetensors(kind + "/reference.safetensors")
        loss, logits = m(ref["input_ids"], ref["attention_mask"], ref["labels"])
        loss.backward()
        gerr = max(((mp[k].grad - ref["grad." + k]).abs().max() / ref["grad." + k].abs().max().clamp_min(1e-12)).item() for k in mp)
        print(kind, "loss", loss.item(), "ref", ref["loss"].item(), "max|dlogits|", (logits - ref["logits"]).abs().max().item(), "max rel grad err", gerr)
