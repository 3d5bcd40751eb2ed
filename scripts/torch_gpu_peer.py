"""GPU peer for `sweep bench t5 --backend cuda --peer scripts/torch_gpu_peer.py`: the training step of
scripts/peers/torch_cpu_peer.py (same plain-PyTorch T5 from torch_t5.py, same LoRA and READ modules, same
random weights and ids), run on a CUDA device in fp32 with TF32 off (or at the precision asked for), timed
with torch.cuda.synchronize and measured with torch.cuda.max_memory_allocated.

usage: torch_gpu_peer.py SIZE METHOD [batch src tgt steps]   -> one JSON line
env:   READSWEEP_PEER_DIR  folder holding torch_t5.py (default scripts/peers)
       READSWEEP_PEER_DEVICE  cuda (default) or cpu, to check this script on a machine without a GPU
       READSWEEP_PEER_PRECISION  fp32 (default: TF32 off), tf32 (allow_tf32) or bf16 (torch.autocast bf16 around
                                 the forward and loss, fp32 weights and AdamW state): `sweep bench t5 --precision`
"""
import json, os, sys, time
import torch, torch.nn as nn, torch.nn.functional as F

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("READSWEEP_PEER_DIR", os.path.join(here, "peers")))
import torch_t5 as T

dev = torch.device(os.environ.get("READSWEEP_PEER_DEVICE", "cuda"))
precision = os.environ.get("READSWEEP_PEER_PRECISION", "fp32")
if precision not in ("fp32", "tf32", "bf16"):
    sys.exit("READSWEEP_PEER_PRECISION must be fp32, tf32 or bf16")
if dev.type == "cuda":
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    torch.set_default_device(dev)  # torch_t5 makes position and mask tensors without a device
else:
    torch.set_num_threads(2)

SIZES = {"t5-tiny": dict(d_model=128, d_kv=32, d_ff=512, num_layers=4, num_heads=4),
         "t5-small": dict(d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8),
         "t5-base": dict(d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12),
         "t5-large": dict(d_model=1024, d_kv=64, d_ff=4096, num_layers=24, num_heads=16)}
size, method = sys.argv[1], sys.argv[2]
B, S, L, steps = (int(x) for x in (sys.argv[3:7] + ["8", "64", "4", "5"][len(sys.argv[3:7]):]))
c = dict(vocab_size=32128, relative_attention_num_buckets=32, relative_attention_max_distance=128,
         feed_forward_proj="relu", tie_word_embeddings=True, **SIZES[size])
torch.manual_seed(0)
m = T.T5(c).to(dev)
for p in m.parameters():
    p.data.normal_(0, 0.05)


class LoRA(nn.Module):  # rank 32 on q and v, as the CPU peer
    def __init__(s, base, r=32, a=32):
        super().__init__()
        s.base = base
        s.A = nn.Parameter(torch.randn(r, base.in_features, device=dev) * 0.01)
        s.B = nn.Parameter(torch.zeros(base.out_features, r, device=dev))
        s.s = a / r

    def forward(s, x):
        return s.base(x) + (x @ s.A.t() @ s.B.t()) * s.s


class READ(nn.Module):  # the CPU peer's READ: GRUs over the frozen states
    def __init__(s, d, r=256):
        super().__init__()
        s.ln_e, s.ln_d = T.RMS(d), T.RMS(d)
        s.gru_e = nn.GRU(d, r, batch_first=True)
        s.gru_d = nn.GRU(d, r, batch_first=True)
        s.psi = nn.Linear(r, d)
        s.out = nn.Linear(r, d)

    def forward(s, enc_states, dec_states, sigma):
        B, m_, d = enc_states[0].shape
        n = dec_states[0].shape[1]
        _, he = s.gru_e(s.ln_e(torch.stack(enc_states, 2).reshape(B * m_, len(enc_states), d)))
        he = he[-1].reshape(B, m_, -1)
        xd = torch.stack(dec_states, 2) + torch.einsum("bnm,bmd->bnd", sigma, s.psi(he)).unsqueeze(2)
        _, hd = s.gru_d(s.ln_d(xd.reshape(B * n, len(dec_states), d)))
        return s.out(hd[-1].reshape(B, n, -1))


side = None
if method == "full":
    params = list(m.parameters())
elif method == "lora":
    for p in m.parameters():
        p.requires_grad_(False)
    for b in list(m.enc) + list(m.dec):
        for att in [b.sa] + ([b.ca] if b.dec else []):
            att.q, att.v = LoRA(att.q), LoRA(att.v)
    params = [p for p in m.parameters() if p.requires_grad]
elif method == "read":
    for p in m.parameters():
        p.requires_grad_(False)
    side = READ(c["d_model"]).to(dev)
    params = list(side.parameters())
else:
    sys.exit("method must be full, lora or read")
opt = torch.optim.AdamW(params, lr=1e-4)
ids = torch.randint(2, 32000, (B, S), device=dev)
am = torch.ones(B, S, dtype=torch.long, device=dev)
labels = torch.randint(2, 32000, (B, L), device=dev)


def step():
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = forward()
    loss.backward()
    # As our trials and HF's Trainer do (max_grad_norm 1.0).
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def forward():
    if side is None:
        loss, _ = m(ids, am, labels)
    else:
        dids = torch.cat([torch.zeros_like(labels[:, :1]), labels[:, :-1]], 1)
        with torch.no_grad():
            es, ds, cr = [], [], []
            enc, em = m.encode(ids, am, es)
            m.decode(dids, enc, em, ds, cr)
            sigma = cr[-1].mean(1)
        h = m.dec_ln(ds[-1] + side(es, ds, sigma))
        logits = m.head(h)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    return loss


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


step()
sync()
t0 = time.time()
for _ in range(steps):
    step()
sync()
dt = (time.time() - t0) / steps
peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else 0.0
import resource
print(json.dumps(dict(size=size, method=method, device=str(dev), precision=precision, batch=B, src=S, tgt=L, step_s=round(dt, 4),
                      ex_per_s=round(B / dt, 2), peak_gpu_mb=round(peak, 1),
                      peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      trainable=sum(p.numel() for p in params))))
