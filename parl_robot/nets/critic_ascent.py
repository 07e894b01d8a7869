"""The critic's Q and its gradient with respect to the action, computed together by hand for all heads
at once: the inner loop of PA-RL's local action optimization without autograd.

The eager optimizer (`rl/action_optimizer.py`) builds an autograd graph over every head for every
local step and then evaluates the stepped candidates again; on a GPU that is ~1,450 kernel launches
per control step, almost all of them Python and launch overhead (../shared/GPU_MEASUREMENTS.md).
Here the heads' weights are stacked into one batched matrix per layer (one `baddbmm` per layer for
all heads), the state features' share of the first layer is computed once per state and reused for
every candidate and every step, and one forward pass returns both Q and ∂Q/∂a from the saved
activations. Every shape is static and nothing synchronises with the host, so the whole local search
can be captured as one graph (`rl/control_step.py`).

For `ActionConcatMLP` heads (Linear → LayerNorm → Mish, the action concatenated before every layer,
then a Linear output, optionally an HL-Gauss histogram):

    z_i = W_i [h_{i−1}, a] + b_i,   x̂_i = (z_i − μ_i) / σ_i,   h_i = mish(γ_i x̂_i + β_i)
    Q = W_o [h_L, a] + b_o          (HL-Gauss: Q = Σ_j softmax(W_o [h_L, a] + b_o)_j c_j)

and the backward pass through the same equations, LayerNorm's included. The heads combine as the
optimizer's `ensemble` says: "min" routes the gradient to the lowest head (as autograd's `min`
does), "mean" averages.
"""

from __future__ import annotations

import torch

from parl_robot.nets.activations import mish_slope, tanh_softplus
from parl_robot.nets.critic import StackedHeads, TwinCritic, stack_heads  # noqa: F401 (re-exported)


def supports_critic(critic: torch.nn.Module) -> bool:
    """Whether `critic` is a TwinCritic of ActionConcatMLP heads with at least one hidden layer."""
    return isinstance(critic, TwinCritic) and len(critic.heads[0].layers) > 0


def first_layer_state_part(heads: StackedHeads, features: torch.Tensor) -> torch.Tensor:
    """The state features' contribution to every head's first layer, b_1 + W_1[:, :F] f: (M, batch, H).
    It is the same for every candidate action and every local step, so it is computed once."""
    state_columns = heads.weights[0][:, :, : -heads.action_dim]  # (M, H, F)
    return torch.baddbmm(heads.biases[0].unsqueeze(1), features.unsqueeze(0).expand(state_columns.shape[0], -1, -1),
                         state_columns.transpose(1, 2))


def _forward(heads: StackedHeads, state_part: torch.Tensor, actions: torch.Tensor):
    """Every head's Q (M, N) for the flattened candidates, with what the backward pass needs."""
    members, batch, hidden = state_part.shape
    candidates = actions.shape[1]
    flat_actions = actions.reshape(1, batch * candidates, -1).expand(members, -1, -1)  # (M, N, A)
    saved = []
    pre = state_part.unsqueeze(2).expand(-1, -1, candidates, -1).reshape(members, batch * candidates, hidden)
    pre = pre + torch.bmm(flat_actions, heads.weights[0][:, :, -heads.action_dim:].transpose(1, 2))
    for layer in range(len(heads.weights)):
        if layer > 0:
            pre = torch.baddbmm(heads.biases[layer].unsqueeze(1), torch.cat([hidden_out, flat_actions], dim=-1),
                                heads.weights[layer].transpose(1, 2))
        normalized, _, inverse_std = torch.native_layer_norm(pre, (pre.shape[-1],), None, None, heads.norm_eps[layer])
        activation_in = normalized * heads.norm_scales[layer].unsqueeze(1) + heads.norm_shifts[layer].unsqueeze(1)
        ratio = tanh_softplus(activation_in)
        hidden_out = activation_in * ratio
        saved.append((normalized, inverse_std, activation_in, ratio))
    outputs = torch.baddbmm(heads.output_bias.unsqueeze(1), torch.cat([hidden_out, flat_actions], dim=-1),
                            heads.output_weight.transpose(1, 2))  # (M, N, out)
    probabilities = None
    if heads.hl_gauss_centres is not None:
        probabilities = torch.softmax(outputs, dim=-1)
        member_q = (probabilities * heads.hl_gauss_centres).sum(-1)  # (M, N)
    else:
        member_q = outputs.squeeze(-1)
    return member_q, probabilities, saved


def q_only(heads: StackedHeads, state_part: torch.Tensor, actions: torch.Tensor, ensemble: str) -> torch.Tensor:
    """Q of `actions` (batch, c, A), heads combined by `ensemble`: (batch, c) (ranking the policy's samples)."""
    member_q, _, _ = _forward(heads, state_part, actions)
    q = member_q.mean(dim=0) if ensemble == "mean" else member_q.min(dim=0).values
    return q.view(actions.shape[0], actions.shape[1])


def q_and_action_gradient(heads: StackedHeads, state_part: torch.Tensor, actions: torch.Tensor,
                          ensemble: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Q of `actions` (batch, c, A) with the heads combined by `ensemble`, (batch, c), and the gradient
    of its sum with respect to the actions, (batch, c, A). `state_part` from `first_layer_state_part`."""
    members = state_part.shape[0]
    batch, candidates = actions.shape[0], actions.shape[1]
    member_q, probabilities, saved = _forward(heads, state_part, actions)
    # ---- the heads combined, and the weight of each head's Q in the combination
    if ensemble == "mean":
        q = member_q.mean(dim=0)
        head_weight = torch.full_like(member_q, 1.0 / members)
    else:
        q, lowest = member_q.min(dim=0)
        head_weight = torch.nn.functional.one_hot(lowest, members).transpose(0, 1).to(member_q.dtype)  # (M, N)
    # ---- backward to the actions
    if probabilities is not None:
        output_gradient = head_weight.unsqueeze(-1) * probabilities * (heads.hl_gauss_centres - member_q.unsqueeze(-1))
    else:
        output_gradient = head_weight.unsqueeze(-1)  # (M, N, 1)
    upstream = torch.bmm(output_gradient, heads.output_weight)  # (M, N, H + A)
    action_gradient = upstream[..., -heads.action_dim:]
    hidden_gradient = upstream[..., : -heads.action_dim]
    for layer in reversed(range(len(heads.weights))):
        normalized, inverse_std, activation_in, ratio = saved[layer]
        scaled = hidden_gradient * mish_slope(activation_in, ratio) * heads.norm_scales[layer].unsqueeze(1)  # ∂/∂x̂
        pre_gradient = inverse_std * (scaled - scaled.mean(-1, keepdim=True)
                                      - normalized * (scaled * normalized).mean(-1, keepdim=True))  # ∂/∂z
        if layer == 0:
            action_gradient = action_gradient + torch.bmm(pre_gradient, heads.weights[0][:, :, -heads.action_dim:])
        else:
            upstream = torch.bmm(pre_gradient, heads.weights[layer])  # (M, N, H + A)
            action_gradient = action_gradient + upstream[..., -heads.action_dim:]
            hidden_gradient = upstream[..., : -heads.action_dim]
    return q.view(batch, candidates), action_gradient.sum(dim=0).view(batch, candidates, -1)
