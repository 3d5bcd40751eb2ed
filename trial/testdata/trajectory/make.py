"""Golden training trajectories for trial/trajectory_test.go, made with plain PyTorch (Debian's python3-torch).

    cd trial/testdata/trajectory && /usr/bin/python3 make.py

For the tiny checkpoints in t5/testdata (v1: ReLU, tied and scaled; v1.1: gated-gelu, unscaled) and each method
(full, BitFit, LoRA, prompt tuning, READ, LST), with and without warm-up, it trains 20 steps on a fixed sequence of
batches (padding, ignored label positions) exactly as Hugging Face's Trainer would with the project's settings:
dropout off; torch.optim.AdamW (betas 0.9/0.999, eps 1e-8) with the Trainer's two parameter groups (no decay for
biases and norms); LambdaLR with transformers' linear schedule (warm-up from 0, ceil(ratio * steps) warm-up steps);
clip_grad_norm_ at 1.0 before each step. It records, per step, the loss, the global gradient norm before clipping and
the learning rate used, and the trainable tensors before the first and after the last step, under the names the Go
methods give them. Each case runs twice from the same float32 start: in float32, and in float64, whose trajectory is
the golden (what exact arithmetic gives); cases.json keeps how far PyTorch's own float32 run ended from it, since over
20 AdamW steps (eps 1e-8 against gradients near zero) float32 itself determines some final tensors only to ~1e-5. The model is scripts/peers/torch_t5.py (checked against shared/golden to 1e-5).

Writes cases.json and one <checkpoint>.<method>.<schedule>.safetensors per case (float32, little-endian).
"""
import json, math, os, struct, sys

import torch, torch.nn as nn, torch.nn.functional as F

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "..", "..", "scripts", "peers"))
import torch_t5 as T  # noqa: E402

torch.set_num_threads(1)
STEPS, CLIP, WARMUP_RATIO = 20, 1.0, 0.2
CHECKPOINTS = ["tiny-t5-v1", "tiny-t5-v11"]
# method -> (architecture settings for the Go registry, learning rate, weight decay). Clipping happens at these
# rates (the initial gradient norms exceed 1); higher ones make 20 float32 steps so chaotic that float32 itself no
# longer determines them. Full fine-tuning decays, strongly, so that the decay shows in 20 steps.
METHODS = {
    "full": ({}, 1e-3, 0.5),
    "bitfit": ({"scope": "all"}, 1e-2, 0.0),
    "lora": ({"rank": 4, "alpha": 8, "targets": "all_qv"}, 3e-3, 0.0),
    "prompt": ({"prompts": 5}, 3e-2, 0.0),
    "read": ({"hidden": 8}, 1e-2, 0.0),
    "lst": ({"sidenet_dim": 8, "init": "random"}, 1e-2, 0.0),
}


def save_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous()
        dtype = {torch.float32: "F32", torch.int64: "I64"}[t.dtype]
        raw = t.numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def make_batches(vocab, g):
    """Four batches of 3: sources of different lengths with padding (id 0, mask 0), labels with -100 holes."""
    out = []
    for S, T_ in ((6, 3), (8, 2), (5, 3), (7, 3)):
        lens = [S, S - 2, S - 3]
        ids = torch.zeros(3, S, dtype=torch.int64)
        am = torch.zeros(3, S, dtype=torch.int64)
        for b, n in enumerate(lens):
            ids[b, :n - 1] = torch.randint(2, vocab, (n - 1,), generator=g)
            ids[b, n - 1] = 1  # </s>
            am[b, :n] = 1
        labels = torch.randint(2, vocab, (3, T_), generator=g)
        labels[1, -1] = -100
        if T_ == 3:
            labels[2, 1:] = -100
        out.append((ids, am, labels))
    return out


def decay_rule(name):
    """transformers' get_decay_parameter_names on our (Hugging Face style) names: no decay for biases and norms."""
    import re
    n = name.lower()
    return not any(re.search(p, n) for p in ("bias", "layernorm", "rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"))


def linear_schedule(warmup, total):
    """transformers.get_linear_schedule_with_warmup's lambda."""
    def f(step):
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


def sites(m):
    """(Go name, owner module, attribute, kind) of every projection and norm of the backbone."""
    out = []
    for stack, blocks in (("encoder", m.enc), ("decoder", m.dec)):
        for i, b in enumerate(blocks):
            p = f"{stack}.block.{i}.layer."
            out.append((p + "0.layer_norm", b, "ln0", "norm"))
            for n, a in (("q", "q"), ("k", "kk"), ("v", "v"), ("o", "o")):
                out.append((p + f"0.SelfAttention.{n}", b.sa, a, "linear"))
            fi = 1
            if stack == "decoder":
                out.append((p + "1.layer_norm", b, "ln1", "norm"))
                for n, a in (("q", "q"), ("k", "kk"), ("v", "v"), ("o", "o")):
                    out.append((p + f"1.EncDecAttention.{n}", b.ca, a, "linear"))
                fi = 2
            out.append((p + f"{fi}.layer_norm", b, "ln2", "norm"))
            for n in (("wi_0", "wi_1") if b.ff.gated else ("wi",)) + ("wo",):
                out.append((p + f"{fi}.DenseReluDense.{n}", b.ff, n, "linear"))
    out.append(("encoder.final_layer_norm", m, "enc_ln", "norm"))
    out.append(("decoder.final_layer_norm", m, "dec_ln", "norm"))
    return out


class Biased(nn.Module):
    """BitFit: a zero-initialised bias after a projection or a norm."""
    def __init__(s, base, bias):
        super().__init__(); s.base, s.bias = base, bias
    def forward(s, x):
        return s.base(x) + s.bias


class LoRA(nn.Module):
    """peft's LoRA: W0 x + (alpha/r) B A x."""
    def __init__(s, base, A, B, scale):
        super().__init__(); s.base, s.A, s.B, s.scale = base, A, B, scale
    def forward(s, x):
        return s.base(x) + (x @ s.A.t() @ s.B.t()) * s.scale


def rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def gru_cell(x, h, wih, whh, bih, bhh):
    """torch.nn.GRUCell's equations, gates in the order r, z, n."""
    gi, gh = x @ wih.t() + bih, h @ whh.t() + bhh
    ir, iz, inn = gi.chunk(3, -1)
    hr, hz, hn = gh.chunk(3, -1)
    r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
    n = torch.tanh(inn + r * hn)
    return (1 - z) * n + z * h


def backbone(m, ids, am, labels, prompt=None):
    """The frozen backbone's states: embeddings, block outputs, cross-attention, the final decoder output."""
    c = m.c
    dids = torch.cat([torch.zeros_like(labels[:, :1]), labels[:, :-1]], 1)
    dids = dids.masked_fill(dids == -100, 0)
    x = m.shared(ids)
    if prompt is not None:
        x = torch.cat([prompt.unsqueeze(0).expand(ids.shape[0], -1, -1), x], 1)
        am = torch.cat([torch.ones(ids.shape[0], prompt.shape[0], dtype=am.dtype), am], 1)
    emb = x
    mask = (1.0 - am[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
    pb, es = None, []
    for b in m.enc:
        x, pb, _, _ = b(x, mask, pb)
        es.append(x)
    enc = m.enc_ln(x)
    L = dids.shape[1]
    y = demb = m.shared(dids)
    causal = torch.triu(torch.full((L, L), torch.finfo(y.dtype).min, dtype=y.dtype), 1)[None, None]
    pb = cpb = None
    ds, cross = [], []
    for b in m.dec:
        y, pb, cpb, cp = b(y, causal, pb, enc, mask, cpb)
        ds.append(y); cross.append(cp)
    return dict(emb=emb, es=es, mask=mask, demb=demb, ds=ds, cross=cross, dec_out=m.dec_ln(y))


def loss_of(logits, labels):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def build(method, arch, m, mp, g):
    """Attaches a method; returns (trainable {Go name: parameter}, loss function of a batch)."""
    c = m.c
    eps = c.get("layer_norm_epsilon", 1e-6)
    D, V = c["d_model"], c["vocab_size"]
    P = {}

    def param(name, t):
        P[name] = nn.Parameter(t.clone())
        return P[name]

    def plain(ids, am, labels):
        return m(ids, am, labels)[0]

    if method == "full":
        for name, p in mp.items():
            p.requires_grad_(True)
            P[name] = p
        return P, plain
    for p in m.parameters():
        p.requires_grad_(False)
    if method == "bitfit":
        for name, owner, attr, kind in sites(m):
            base = getattr(owner, attr)
            n = base.out_features if kind == "linear" else D
            setattr(owner, attr, Biased(base, param(name + ".bias", torch.zeros(n))))
        head_bias = param("lm_head.bias", torch.zeros(V))

        def f(ids, am, labels):
            st = backbone(m, ids, am, labels)
            return loss_of(m.head(st["dec_out"]) + head_bias, labels)
        return P, f
    if method == "lora":
        r, alpha = arch["rank"], arch["alpha"]
        for name, owner, attr, kind in sites(m):
            if kind == "linear" and name.rsplit(".", 1)[1] in ("q", "v"):
                base = getattr(owner, attr)
                bound = 1 / math.sqrt(base.in_features)  # kaiming_uniform_(a=sqrt(5)), peft's default
                A = param(name + ".lora_A", torch.empty(r, base.in_features).uniform_(-bound, bound, generator=g))
                B = param(name + ".lora_B", torch.zeros(base.out_features, r))
                setattr(owner, attr, LoRA(base, A, B, alpha / r))
        return P, plain
    if method == "prompt":
        rows = torch.randperm(min(5000, V), generator=g)[:arch["prompts"]]
        emb = param("prompt.embedding", m.shared.weight[rows].detach())

        def f(ids, am, labels):
            st = backbone(m, ids, am, labels, prompt=emb)
            return loss_of(m.head(st["dec_out"]), labels)
        return P, f
    if method == "read":
        R = arch["hidden"]
        bound = 1 / math.sqrt(R)
        u = lambda *shape: torch.empty(*shape).uniform_(-bound, bound, generator=g)  # noqa: E731
        for side, proj in (("encoder", "psi"), ("decoder", "out")):
            param(side + ".norm.weight", torch.ones(D))
            param(side + ".cell.weight_ih", u(3 * R, D)); param(side + ".cell.weight_hh", u(3 * R, R))
            param(side + ".cell.bias_ih", u(3 * R)); param(side + ".cell.bias_hh", u(3 * R))
            param(proj + ".weight", u(D, R)); param(proj + ".bias", u(D))

        def run(side, xs):
            B_, T_, _ = xs[0].shape
            h = torch.zeros(B_ * T_, R)
            for x in xs:
                h = gru_cell(rms(x.reshape(-1, D), P[side + ".norm.weight"], eps), h, P[side + ".cell.weight_ih"],
                             P[side + ".cell.weight_hh"], P[side + ".cell.bias_ih"], P[side + ".cell.bias_hh"])
            return h

        def f(ids, am, labels):
            with torch.no_grad():
                st = backbone(m, ids, am, labels)
            he = run("encoder", st["es"])
            psi = (he @ P["psi.weight"].t() + P["psi.bias"]).reshape(st["es"][0].shape)
            xs = [x + cp.mean(1) @ psi for x, cp in zip(st["ds"], st["cross"])]
            hd = run("decoder", xs)
            corr = (hd @ P["out.weight"].t() + P["out.bias"]).reshape(st["ds"][0].shape)
            return loss_of(m.head(st["dec_out"] + corr), labels)
        return P, f
    if method == "lst":
        ds_ = arch["sidenet_dim"]
        sc = dict(c, d_model=ds_, d_kv=c["d_kv"] * ds_ // D, d_ff=c["d_ff"] * ds_ // D)
        side = T.T5(dict(sc, has_lm_head=False))
        for name, p in T.param_map(side).items():
            if name == "shared.weight":
                continue
            if name.endswith("layer_norm.weight"):
                init = 1 + 0.1 * torch.randn(p.shape, generator=g)
            else:
                init = 0.3 * torch.randn(p.shape, generator=g)
            with torch.no_grad():
                p.copy_(init)
            p.requires_grad_(True)
            P["side." + name] = p
        for stack, n in (("encoder", len(m.enc)), ("decoder", len(m.dec))):
            for key in ["embed"] + [str(i) for i in range(n)]:
                bound = 1 / math.sqrt(D)
                param(f"down.{stack}.{key}.weight", torch.empty(ds_, D).uniform_(-bound, bound, generator=g))
                param(f"down.{stack}.{key}.bias", torch.empty(ds_).uniform_(-bound, bound, generator=g))
            for i in range(n):
                param(f"gate.{stack}.{i}", 0.05 * torch.randn(1, generator=g))
        bound = 1 / math.sqrt(ds_)
        param("up.weight", torch.empty(D, ds_).uniform_(-bound, bound, generator=g))
        param("up.bias", torch.empty(D).uniform_(-bound, bound, generator=g))

        def lin(x, name):
            return x @ P[name + ".weight"].t() + P[name + ".bias"]

        def mix(a, b, alpha):
            gate = torch.sigmoid(alpha / 0.1)
            return gate * a + (1 - gate) * b

        def f(ids, am, labels):
            with torch.no_grad():
                st = backbone(m, ids, am, labels)
            s, pb = lin(st["emb"], "down.encoder.embed"), None
            for i, blk in enumerate(side.enc):
                s = mix(s, lin(st["es"][i], f"down.encoder.{i}"), P[f"gate.encoder.{i}"])
                s, pb, _, _ = blk(s, st["mask"], pb)
            enc = side.enc_ln(s)
            d, L = lin(st["demb"], "down.decoder.embed"), st["demb"].shape[1]
            causal = torch.triu(torch.full((L, L), torch.finfo(d.dtype).min, dtype=d.dtype), 1)[None, None]
            pb = cpb = None
            for j, blk in enumerate(side.dec):
                d = mix(d, lin(st["ds"][j], f"down.decoder.{j}"), P[f"gate.decoder.{j}"])
                d, pb, cpb, _ = blk(d, causal, pb, enc, st["mask"], cpb)
            return loss_of(m.head(lin(side.dec_ln(d), "up")), labels)
        return P, f
    raise ValueError(method)


def train(folder, method, arch, lr, wd, warmup_ratio, batches, order, dtype=torch.float32, start=None):
    """One trajectory in dtype; start (Go name -> tensor) replaces the method's initial tensors."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        m, mp = T.load_hf(folder)
        g = torch.Generator().manual_seed(1234)
        P, loss_fn = build(method, arch, m, mp, g)
        if start is not None:
            with torch.no_grad():
                for k, p in P.items():
                    p.copy_(start[k])
        init = {k: p.detach().clone() for k, p in P.items()}
        decay = [p for k, p in P.items() if decay_rule(k)]
        no_decay = [p for k, p in P.items() if not decay_rule(k)]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=lr, betas=(0.9, 0.999), eps=1e-8)
        warmup = math.ceil(STEPS * warmup_ratio)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_schedule(warmup, STEPS))
        params = list(P.values())
        losses, norms, lrs = [], [], []
        for k in order:
            ids, am, labels = batches[k]
            lrs.append(sched.get_last_lr()[0])
            loss = loss_fn(ids, am, labels)
            loss.backward()
            norms.append(float(torch.nn.utils.clip_grad_norm_(params, CLIP)))
            opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
        return init, {k: p.detach().clone() for k, p in P.items()}, losses, norms, lrs
    finally:
        torch.set_default_dtype(saved)


def rel_err(got, want):
    return max(abs(a - b) / abs(b) for a, b in zip(got, want))


def final_err(got, want):
    """Worst |got - want| over a tensor's largest |want|, over all tensors (BitFit's key biases, whose gradient
    is exactly zero, aside)."""
    return max(((got[k].double() - want[k].double()).abs().max() / want[k].abs().max().clamp_min(1e-30)).item()
               for k in want if not k.endswith(".k.bias"))


def main():
    g = torch.Generator().manual_seed(20261202)
    cases = []
    for ckpt in CHECKPOINTS:
        folder = os.path.join(here, "..", "..", "..", "t5", "testdata", ckpt)
        vocab = json.load(open(os.path.join(folder, "config.json")))["vocab_size"]
        batches = make_batches(vocab, g)
        order = [int(i) for i in torch.randint(0, len(batches), (STEPS,), generator=g)]
        tensors = {}
        for k, (ids, am, labels) in enumerate(batches):
            tensors[f"batch.{k}.input_ids"], tensors[f"batch.{k}.attention_mask"] = ids, am
            tensors[f"batch.{k}.labels"] = labels
        tensors["order"] = torch.tensor(order, dtype=torch.int64)
        save_safetensors(os.path.join(here, f"{ckpt}.batches.safetensors"), tensors)
        for method, (arch, lr, wd) in METHODS.items():
            for sched, ratio in (("nowarmup", 0.0), ("warmup", WARMUP_RATIO)):
                # PyTorch in float32, then the same start in float64: the golden is the float64 trajectory (what
                # exact arithmetic gives), and the float32 run's distance from it says how well float32 can do.
                init, f32, l32, n32, lrs = train(folder, method, arch, lr, wd, ratio, batches, order)
                _, f64, l64, n64, _ = train(folder, method, arch, lr, wd, ratio, batches, order, torch.float64,
                                            {k: v.double() for k, v in init.items()})
                name = f"{ckpt}.{method}.{sched}.safetensors"
                out = {"loss": torch.tensor(l64, dtype=torch.float32), "grad_norm": torch.tensor(n64, dtype=torch.float32),
                       "lr": torch.tensor(lrs, dtype=torch.float32)}
                for k, v in init.items():
                    out["init." + k] = v.float()
                for k, v in f64.items():
                    out["final." + k] = v.float()
                save_safetensors(os.path.join(here, name), out)
                clipped = sum(n > CLIP for n in n32)
                errs = dict(torch32_loss_err=rel_err(l32, l64), torch32_grad_norm_err=rel_err(n32, n64),
                            torch32_final_err=final_err(f32, f64))
                cases.append(dict(checkpoint=ckpt, method=method, arch=arch, lr=lr, weight_decay=wd,
                                  warmup_ratio=ratio, clip_norm=CLIP, steps=STEPS, file=name, clipped_steps=clipped,
                                  **errs))
                print(f"{name}: loss {l64[0]:.4f} -> {l64[-1]:.4f}, clipped {clipped}/{STEPS}, {len(init)} tensors; "
                      f"PyTorch float32 vs float64: loss {errs['torch32_loss_err']:.1e}, grad norm "
                      f"{errs['torch32_grad_norm_err']:.1e}, final {errs['torch32_final_err']:.1e}")
    with open(os.path.join(here, "cases.json"), "w") as f:
        json.dump({"generator": "make.py, torch " + torch.__version__, "cases": cases}, f, indent=1)


if __name__ == "__main__":
    main()
