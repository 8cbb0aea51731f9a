"""Train a tiny Hunyuan-style MoE decoder on CPU from `synth.loader`.

    synth pack runs/demo/ runs/kg/ --tokenizer ~/.cache/synth/models/SmolLM2-135M-Instruct \\
        --seq-len 512 --output runs/packed
    python examples/train_tiny_moe.py runs/packed --steps 200

The model, in plain PyTorch: token embeddings, then blocks of grouped-query attention
with rotary positions and an MoE feed-forward (one shared expert every token goes
through, plus top-k routed experts and a Switch-style load-balancing loss). Packed
sequences are attended document by document: the segment of every token comes from
the loader's `cu_seqlens`, and positions restart at each document (`position_ids`).
On a GPU the same batch feeds a variable-length flash-attention kernel directly
(`cu_seqlens`, `max_seqlen`); here a block-diagonal causal mask does the same.

It logs the loss, the trained tokens seen per domain and kind, and the share of
tokens each expert receives.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class MoEConfig:
    vocab_size: int
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2  # grouped-query attention: 2 query heads share each key/value head
    d_expert: int = 96
    n_experts: int = 4
    top_k: int = 2
    aux_loss_coef: float = 0.01
    rope_theta: float = 10000.0


def rotary(x: torch.Tensor, position_ids: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary position embedding; x: [B, H, L, D], position_ids: [B, L]."""
    d = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=x.dtype, device=x.device) / d))
    ang = position_ids.to(x.dtype)[:, None, :, None] * inv  # [B, 1, L, D/2]
    cos, sin = ang.cos(), ang.sin()
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2)


def segments_from_cu_seqlens(cu_seqlens: torch.Tensor, batch: int, length: int) -> torch.Tensor:
    """Segment id of every token of the [batch, length] batch from the flattened cu_seqlens."""
    flat = torch.arange(batch * length, device=cu_seqlens.device)
    return (torch.searchsorted(cu_seqlens.to(torch.long), flat, right=True) - 1).view(batch, length)


class Attention(nn.Module):
    def __init__(self, c: MoEConfig):
        super().__init__()
        self.c = c
        self.hd = c.d_model // c.n_heads
        self.q = nn.Linear(c.d_model, c.n_heads * self.hd, bias=False)
        self.kv = nn.Linear(c.d_model, 2 * c.n_kv_heads * self.hd, bias=False)
        self.o = nn.Linear(c.n_heads * self.hd, c.d_model, bias=False)

    def forward(self, x, position_ids, mask):
        b, L, _ = x.shape
        q = self.q(x).view(b, L, self.c.n_heads, self.hd).transpose(1, 2)
        k, v = self.kv(x).view(b, L, 2, self.c.n_kv_heads, self.hd).permute(2, 0, 3, 1, 4)
        q, k = rotary(q, position_ids, self.c.rope_theta), rotary(k, position_ids, self.c.rope_theta)
        rep = self.c.n_heads // self.c.n_kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])
        return self.o(y.transpose(1, 2).reshape(b, L, -1))


class Expert(nn.Module):
    def __init__(self, d_model, d_ff):
        super().__init__()
        self.gate_up = nn.Linear(d_model, 2 * d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x):
        g, u = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(g) * u)


class MoE(nn.Module):
    """Shared expert + top-k routed experts (Hunyuan-Large's layout), Switch balance loss."""

    def __init__(self, c: MoEConfig):
        super().__init__()
        self.c = c
        self.shared = Expert(c.d_model, c.d_expert)
        self.router = nn.Linear(c.d_model, c.n_experts, bias=False)
        self.experts = nn.ModuleList(Expert(c.d_model, c.d_expert) for _ in range(c.n_experts))

    def forward(self, x):
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        probs = self.router(flat).softmax(dim=-1)
        weight, chosen = probs.topk(self.c.top_k, dim=-1)
        weight = weight / weight.sum(dim=-1, keepdim=True)
        out = self.shared(flat)
        load = torch.zeros(self.c.n_experts, dtype=torch.long)
        for e, expert in enumerate(self.experts):
            rows, slot = (chosen == e).nonzero(as_tuple=True)
            load[e] = len(rows)
            if len(rows):
                out = out.index_add(0, rows, expert(flat[rows]) * weight[rows, slot, None])
        # Switch Transformer: n * sum_e (share of routed tokens) * (mean router probability)
        frac = F.one_hot(chosen, self.c.n_experts).sum(dim=(0, 1)).to(probs.dtype) / chosen.numel()
        aux = self.c.n_experts * (frac * probs.mean(dim=0)).sum()
        return out.view(shape), aux, load


class Block(nn.Module):
    def __init__(self, c: MoEConfig):
        super().__init__()
        self.n1, self.n2 = nn.RMSNorm(c.d_model), nn.RMSNorm(c.d_model)
        self.attn = Attention(c)
        self.moe = MoE(c)

    def forward(self, x, position_ids, mask):
        x = x + self.attn(self.n1(x), position_ids, mask)
        y, aux, load = self.moe(self.n2(x))
        return x + y, aux, load


class TinyMoE(nn.Module):
    def __init__(self, c: MoEConfig):
        super().__init__()
        self.c = c
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layers))
        self.norm = nn.RMSNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.vocab_size, bias=False)

    def forward(self, input_ids, position_ids, cu_seqlens=None, document_masking=True):
        b, L = input_ids.shape
        causal = torch.ones(L, L, dtype=torch.bool, device=input_ids.device).tril()
        if document_masking and cu_seqlens is not None:
            seg = segments_from_cu_seqlens(cu_seqlens, b, L)
            mask = causal & (seg[:, :, None] == seg[:, None, :])
        else:
            mask = causal.expand(b, L, L)
        x = self.embed(input_ids)
        aux, loads = 0.0, []
        for blk in self.blocks:
            x, a, load = blk(x, position_ids, mask)
            aux = aux + a
            loads.append(load)
        return self.head(self.norm(x)), aux / len(self.blocks), torch.stack(loads)


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed next-token loss and the number of predicted tokens (labels are unshifted, -100 = ignore)."""
    lg, lb = logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1)
    return F.cross_entropy(lg, lb, ignore_index=-100, reduction="sum"), (lb != -100).sum()


def train(
    data: str,
    steps: int = 200,
    batch_size: int = 4,
    lr: float = 3e-3,
    seed: int = 0,
    log_every: int = 10,
    config: dict | None = None,
    num_workers: int = 0,
    say=print,
) -> dict:
    from synth.loader import PackedDataset, PackedLoader

    torch.manual_seed(seed)
    ds = PackedDataset(data, batch_size=batch_size, seed=seed)
    vocab = int(ds.data.manifest["tokenizer"]["vocab_size"])
    model = TinyMoE(MoEConfig(vocab_size=vocab, **(config or {})))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    loader = PackedLoader(ds, num_workers=num_workers)
    domains, kinds = ds.data.vocab["domain"], ds.data.vocab["kind"]
    seen_domain, seen_kind = Counter(), Counter()
    expert_load = torch.zeros(model.c.n_layers, model.c.n_experts, dtype=torch.long)
    history = []
    started = time.perf_counter()
    for step, batch in enumerate(loader, start=1):
        logits, aux, load = model(batch["input_ids"], batch["position_ids"], batch["cu_seqlens"])
        total, count = token_losses(logits, batch["labels"])
        loss = total / count.clamp(min=1)
        opt.zero_grad()
        (loss + model.c.aux_loss_coef * aux).backward()
        opt.step()
        if count > 0:  # a batch of prompt-only pieces trains the router alone: no LM loss to log
            history.append(loss.item())
        expert_load += load
        trained = batch["labels"] != -100
        for code, n in zip(*batch["token_domain"][trained].unique(return_counts=True)):
            seen_domain[domains[code]] += int(n)
        for code, n in zip(*batch["token_kind"][trained].unique(return_counts=True)):
            seen_kind[kinds[code]] += int(n)
        if step % log_every == 0 or step == steps:
            share = (expert_load.sum(0) / expert_load.sum()).tolist()
            say(
                f"step {step:4d}  loss {loss.item():.3f}  aux {aux.item():.3f}  "
                f"experts {' '.join(f'{s:.2f}' for s in share)}  {time.perf_counter() - started:.0f}s"
            )
        if step >= steps:
            break
    say(f"trained tokens per domain: {dict(seen_domain)}")
    say(f"trained tokens per kind:   {dict(seen_kind)}")
    say(f"expert load (tokens routed, per layer): {expert_load.tolist()}")
    return {
        "loss": history,
        "expert_load": expert_load,
        "domains": dict(seen_domain),
        "kinds": dict(seen_kind),
        "loader_state": loader.state_dict(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", help="a `synth pack --format native` output folder")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    a = ap.parse_args()
    out = train(a.data, a.steps, a.batch_size, a.lr, a.seed, num_workers=a.workers)
    first, last = sum(out["loss"][:10]) / min(10, len(out["loss"])), sum(out["loss"][-10:]) / min(10, len(out["loss"]))
    print(f"loss: {first:.3f} (first 10 steps) -> {last:.3f} (last 10 steps)")


if __name__ == "__main__":
    main()
