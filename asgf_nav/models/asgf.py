"""Audio Spatial State Guided cross-modal Fusion (ASGF), ASGF-Nav section III-B, eqs. (4)-(10).

    X_t   = [W_d LN(d_t), W_a LN(a_t) (, W_o LN(doa_t))]     (4)  memory tokens in R^D
    K_t   = X_t W_K,  V_t = X_t W_V                           (5)
    q_t   = W_q LN(e_t)                                        (6)
    c_t   = MultiHeadAttn(q_t, K_t, V_t)                       (7)
    ê_t   = c_t + W_e e_t                                      (8)
    α_t   = sigmoid(MLP(LN(e_t)))                              (9)
    h_t   = LN_out(α_t ê_t + (1 - α_t) W_e e_t)                (10)

The paper's eq. (7) is single-head attention; here it has ``heads`` heads and an output projection W_O, eqs.
(6) and (9) normalise e_t with separate LayerNorms, and every W is a Linear layer with a bias (docs/models.md
lists these choices). c_t lives in R^D while e_t has ase_dim (512) entries, so the residual adds a linear
projection W_e e_t; when ase_dim == D, W_e is the identity. An optional direction-of-arrival vector enters the
memory as a third token. The module keeps the last mean gate and attention entropy (detached) for logging,
and the last attention weights (``last_attention``, for tests and figures).

With (8) in (10), h_t = LN_out(α_t c_t + W_e e_t): the gate weighs the attention's context against nothing,
and the state's projection always passes whole. So ``fusion/gate_alpha`` is how much of the attended
audio-visual context enters, not a mix between context and state.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class AudioSpatialGuidedFusion(nn.Module):
    def __init__(
        self,
        memory_sizes: dict[str, int],
        state_size: int = 512,
        fusion_dim: int = 256,
        num_heads: int = 4,
        gate_hidden: int = 128,
    ) -> None:
        super().__init__()
        if not memory_sizes:
            raise ValueError("ASGF needs at least one memory token (visual, audio or doa features)")
        if fusion_dim % num_heads:
            raise ValueError(f"fusion_dim {fusion_dim} must be divisible by fusion_heads {num_heads}")
        self.token_names = list(memory_sizes)
        self.fusion_dim, self.num_heads = fusion_dim, num_heads
        self.head_dim = fusion_dim // num_heads
        self.token_norms = nn.ModuleDict({name: nn.LayerNorm(size) for name, size in memory_sizes.items()})
        self.token_projections = nn.ModuleDict(
            {name: nn.Linear(size, fusion_dim) for name, size in memory_sizes.items()}
        )
        self.key = nn.Linear(fusion_dim, fusion_dim)
        self.value = nn.Linear(fusion_dim, fusion_dim)
        self.query_norm = nn.LayerNorm(state_size)
        self.query = nn.Linear(state_size, fusion_dim)
        self.attention_output = nn.Linear(fusion_dim, fusion_dim)
        same_size = state_size == fusion_dim
        self.state_projection = nn.Identity() if same_size else nn.Linear(state_size, fusion_dim)
        self.gate_norm = nn.LayerNorm(state_size)
        self.gate = nn.Sequential(nn.Linear(state_size, gate_hidden), nn.ReLU(), nn.Linear(gate_hidden, 1))
        self.output_norm = nn.LayerNorm(fusion_dim)
        self.output_size = fusion_dim
        self.last_gate = torch.zeros(())
        self.last_attention_entropy = torch.zeros(())
        self.last_attention = torch.zeros(0)

    def forward(self, state: torch.Tensor, memory: dict[str, torch.Tensor]) -> torch.Tensor:
        """state e_t (B, state_size), memory {name: (B, size)} -> fused h_t (B, fusion_dim)."""
        batch = state.shape[0]
        tokens = torch.stack(
            [self.token_projections[n](self.token_norms[n](memory[n])) for n in self.token_names], dim=1
        )  # eq. (4): (B, M, D)

        def split_heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, -1, self.num_heads, self.head_dim).transpose(1, 2)  # (B, heads, L, hd)

        keys, values = split_heads(self.key(tokens)), split_heads(self.value(tokens))  # eq. (5)
        query = split_heads(self.query(self.query_norm(state)).unsqueeze(1))  # eq. (6): (B, heads, 1, hd)
        scores = query @ keys.transpose(-2, -1) / math.sqrt(self.head_dim)
        attention = torch.softmax(scores, dim=-1)  # (B, heads, 1, M)
        context = (attention @ values).transpose(1, 2).reshape(batch, self.fusion_dim)
        context = self.attention_output(context)  # eq. (7)
        projected_state = self.state_projection(state)
        residual = context + projected_state  # eq. (8)
        alpha = torch.sigmoid(self.gate(self.gate_norm(state)))  # eq. (9): (B, 1)
        fused = self.output_norm(alpha * residual + (1.0 - alpha) * projected_state)  # eq. (10)

        with torch.no_grad():
            self.last_gate = alpha.mean().detach()
            entropy = -(attention * attention.clamp_min(1e-12).log()).sum(-1)
            self.last_attention_entropy = entropy.mean().detach()
            self.last_attention = attention.squeeze(2).detach()
        return fused
