"""An independent pure-PyTorch NorMuon (+ AdamW) for the tests of normuon.torch.

Written from docs/ARCHITECTURE.md section 1 (the math), not from the runtime or the official code. Runs in
float32 throughout (Newton-Schulz included) by default, or in float64 (dtype=torch.float64, on
float64 parameters) as the "truth" the fp32 results are measured against. It is not an
optimizer class: `Reference.step(grads)` applies one step to its own parameter list, with the
gradients passed explicitly (None = no gradient: zero gradient and no weight decay).
"""

import math

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(update, steps=5, eps=1e-7, dtype=torch.float32):
    """Quintic Newton-Schulz in `dtype`: X = U / (||U||_F + eps), iterated on the
    short-and-wide orientation; returns an m x n matrix like `update`."""
    a, b, c = NS_COEFFICIENTS
    x = update.to(dtype)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.t()
    x = x / (torch.linalg.norm(x) + eps)
    for _ in range(steps):
        gram = x @ x.t()
        poly = b * gram + c * (gram @ gram)
        x = a * x + poly @ x
    return x.t() if tall else x


def normuon_direction(o, v, beta2, variant, eps=1e-10):
    """The post-orthogonalization stage. Returns (D, new v) for O (m x n) and v (m)."""
    m, n = o.shape
    shape_factor = math.sqrt(max(1.0, m / n))
    if variant == "muon":
        return o * shape_factor, v
    row_mean_sq = (o * o).mean(dim=1)
    v = beta2 * v + (1.0 - beta2) * row_mean_sq
    normalized = o / (v.sqrt() + eps)[:, None]
    if variant == "normuon":
        restored = normalized * (torch.linalg.norm(o) / (torch.linalg.norm(normalized) + eps))
        return restored * shape_factor, v
    if variant == "normuon_paper":
        scale = 0.2 * math.sqrt(m * n) / (torch.linalg.norm(normalized) + eps)
        return normalized * scale, v
    raise ValueError(variant)


class Reference:
    """Groups as in normuon.torch.NorMuon (dicts with params, use_muon and hyper-parameters);
    the parameters are the tensors it updates in place (under no_grad)."""

    def __init__(self, groups, variant="normuon", nesterov=True, ns_steps=5,
                 dtype=torch.float32):
        self.groups = groups
        self.dtype = dtype
        self.variant = variant
        self.nesterov = nesterov
        self.ns_steps = ns_steps
        self.state = {}

    @torch.no_grad()
    def step(self, grads):
        """grads: {param: gradient tensor or None}. Uses each group's current lr/wd."""
        for g in self.groups:
            for p in g["params"]:
                grad = grads.get(p)
                if g["use_muon"]:
                    self._matrix(p, grad, g)
                else:
                    self._adamw(p, grad, g)

    def _matrix(self, p, grad, g):
        rows = p.shape[0]
        cols = p.numel() // rows
        w = p.detach().to(self.dtype).reshape(rows, cols)
        gm = (torch.zeros_like(w) if grad is None else
              grad.detach().to(self.dtype).reshape(rows, cols))
        st = self.state.setdefault(p, {"M": torch.zeros_like(w),
                                       "v": torch.zeros(rows, dtype=self.dtype)})
        b1 = g["momentum"]
        st["M"] = b1 * st["M"] + (1.0 - b1) * gm
        u = (1.0 - b1) * gm + b1 * st["M"] if self.nesterov else st["M"]
        o = orthogonalize(u, self.ns_steps, dtype=self.dtype)
        d, st["v"] = normuon_direction(o, st["v"], g["beta2"], self.variant)
        decay = 1.0 if grad is None else 1.0 - g["lr"] * g["weight_decay"]
        p.copy_((w * decay - g["lr"] * d).reshape(p.shape))

    def _adamw(self, p, grad, g):
        w = p.detach().to(self.dtype)
        gr = torch.zeros_like(w) if grad is None else grad.detach().to(self.dtype)
        st = self.state.setdefault(p, {"m": torch.zeros_like(w), "v": torch.zeros_like(w),
                                       "step": 0})
        b1, b2 = g["betas"]
        st["step"] += 1
        st["m"] = b1 * st["m"] + (1.0 - b1) * gr
        st["v"] = b2 * st["v"] + (1.0 - b2) * gr * gr
        m_hat = st["m"] / (1.0 - b1 ** st["step"])
        v_hat = st["v"] / (1.0 - b2 ** st["step"])
        decay = 1.0 if grad is None else 1.0 - g["lr"] * g["weight_decay"]
        p.copy_(w * decay - g["lr"] * m_hat / (v_hat.sqrt() + g["eps"]))
