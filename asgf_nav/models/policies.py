"""Recurrent actor-critic policies in a registry by name: ``asgf``, its ablations, and the AV-Nav baseline.

Every policy maps an observation to a per-step feature vector (``step_features``), runs it through one
GRU whose hidden state is reset where ``masks`` is 0 (a new episode starts), and reads 4 action logits
(Linear with orthogonal gain 0.01) and a value (Linear(hidden, 1)) from the GRU output.

Shapes: a single step takes observations (B, ...), masks (B,) and hidden (1, B, H); a recurrent minibatch
takes time-major observations (T, B, ...) and masks (T, B) with the hidden state before step 0. Values,
log-probabilities and entropies come back as (B,) or (T, B).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.distributions import Categorical

from asgf_nav.config import ConfigError, check_registered_name, import_plugins
from asgf_nav.models.ase import AudioSpatialStateEncoder
from asgf_nav.models.asgf import AudioSpatialGuidedFusion
from asgf_nav.models.encoders import VISUAL_SENSORS, AudioEncoder, VisualEncoder

logger = logging.getLogger(__name__)

NUM_ACTIONS = 4  # STOP, MOVE_FORWARD, TURN_LEFT, TURN_RIGHT
FEATURE_SIZE = 512  # visual and audio CNN outputs
Observations = dict[str, torch.Tensor]

POLICY_REGISTRY: dict[str, type[Policy]] = {}


def register_policy(name: str, overwrite: bool = False) -> Callable[[type[Policy]], type[Policy]]:
    """Class decorator adding a Policy subclass to the registry under ``name``; ``overwrite`` replaces an
    earlier class of that name (a notebook cell run again). A class has one name: its errors say it."""
    check_registered_name("policy", name, "model.policy")

    def decorator(cls: type[Policy]) -> type[Policy]:
        other = next((n for n, c in POLICY_REGISTRY.items() if c is cls and n != name), None)
        if other is not None:
            raise ValueError(
                f"{cls.__name__} is already registered as policy {other!r}; register a subclass under {name!r}"
            )
        earlier = POLICY_REGISTRY.get(name)
        if earlier is not None and earlier.__module__ == __name__ and cls.__module__ != __name__:
            raise ValueError(f"policy name {name!r} is a built-in policy; register yours under another name")
        if name in POLICY_REGISTRY and not overwrite:
            raise ValueError(
                f"policy {name!r} is already registered by {POLICY_REGISTRY[name].__name__} "
                "(pass overwrite=True to replace it)"
            )
        POLICY_REGISTRY[name] = cls
        cls.policy_name = name
        return cls

    return decorator


def policy_class(name: str) -> type[Policy]:
    """The registered policy class of ``model.policy``; an unknown name is a ConfigError listing the known ones."""
    if name not in POLICY_REGISTRY:
        raise ConfigError(
            f"model.policy: unknown policy {name!r}; registered: {sorted(POLICY_REGISTRY)} (a policy of your own "
            "registers when its module is imported: name that module in model.plugins)"
        )
    return POLICY_REGISTRY[name]


def build_policy(cfg: Any, observation_space: Any) -> Policy:
    """The policy named by ``cfg.model.policy``, built for one env's ``observation_space`` (after importing the
    modules of ``model.plugins``, where a policy of one's own is registered)."""
    import_plugins(getattr(cfg.model, "plugins", ()))
    return policy_class(cfg.model.policy)(cfg, observation_space)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def observation_shapes(observation_space: Any) -> dict[str, tuple[int, ...]]:
    """Per-key shapes of a gymnasium Dict space (or any mapping of spaces / shapes)."""
    spaces = getattr(observation_space, "spaces", observation_space)
    if not isinstance(spaces, Mapping):
        raise TypeError(f"observation_space must be a gymnasium Dict or mapping, not {type(spaces)}")
    return {k: tuple(getattr(v, "shape", v)) for k, v in spaces.items()}


class ObservationShapes(dict):
    """Per-key observation shapes; a key the env does not provide names the policy and what to declare."""

    def __init__(self, policy_name: str, shapes: Mapping[str, tuple[int, ...]]) -> None:
        super().__init__(shapes)
        self.policy_name = policy_name

    def __missing__(self, key: str) -> tuple[int, ...]:
        raise ConfigError(
            f"policy {self.policy_name!r} reads observation {key!r}, which the env does not provide (it has "
            f"{sorted(self)}): add {key!r} to task.sensors, and to the policy's required_sensors so that a config "
            "without it is refused before any bake"
        )


class RecurrentStateEncoder(nn.Module):
    """One-layer GRU over time-major (T, B, I) inputs; the hidden state is multiplied by masks[t] before t.

    The sequence is cut only where some environment starts a new episode, so long rollouts run through
    cuDNN / MKL in a few large calls instead of one call per step.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.gru = nn.GRU(input_size, hidden_size, num_layers=1)
        for param_name, param in self.gru.named_parameters():
            if "weight" in param_name:
                nn.init.orthogonal_(param)
            else:
                nn.init.zeros_(param)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        steps = x.shape[0]
        masks = masks.to(x.dtype)
        if steps == 1:
            out, hidden = self.gru(x, hidden * masks[0].view(1, -1, 1))
            return out, hidden
        restarts = ((masks[1:] == 0).any(dim=1).nonzero().squeeze(-1) + 1).tolist()
        bounds = [0, *restarts, steps]
        outputs = []
        for start, end in zip(bounds[:-1], bounds[1:]):
            out, hidden = self.gru(x[start:end], hidden * masks[start].view(1, -1, 1))
            outputs.append(out)
        return torch.cat(outputs, dim=0), hidden


class Policy(nn.Module):
    """Shared actor-critic machinery; subclasses define ``step_features(obs) -> (N, feature_size)``."""

    policy_name = "policy"
    required_sensors: tuple[str, ...] = ("spectrogram",)  # checked against task.sensors before any bake
    # every observation the policy can use; a sensor outside it is refused before any bake, since it would be
    # computed and silently ignored (a run labelled "with pointgoal" that never read it)
    reads_sensors: tuple[str, ...] = (*VISUAL_SENSORS, "spectrogram", "doa")
    has_spatial_state = False  # an ASE whose state e_t (last_ase_state) the t-SNE figure embeds

    def __init__(self, cfg: Any, observation_space: Any) -> None:
        super().__init__()
        self.shapes = ObservationShapes(self.policy_name, observation_shapes(observation_space))
        missing = [name for name in self.required_sensors if name not in self.shapes]
        if missing:
            raise ConfigError(
                f"task.sensors: policy {self.policy_name!r} needs observations {missing}, got keys "
                f"{sorted(self.shapes)}"
            )
        self.hidden_size = int(cfg.model.hidden_size)
        self.num_recurrent_layers = 1
        self.use_doa = bool(getattr(cfg.task, "use_doa", False))
        if self.use_doa and "doa" not in self.shapes:
            # a "with DoA" run that silently trains without it would be mislabelled
            raise ConfigError(
                f"task.use_doa=true but the observation space has no 'doa' (keys {sorted(self.shapes)}): "
                "asgf_nav.experiment.register_auxiliary_observations(cfg) registers the DoA head and adds 'doa' "
                "to task.sensors; call it before the env is made, or set task.use_doa=false"
            )
        self.doa_size = int(self.shapes["doa"][0]) if self.use_doa else 0
        visual = {k: self.shapes[k] for k in VISUAL_SENSORS if k in self.shapes and k in self.reads_sensors}
        self.visual_encoder = VisualEncoder(visual, FEATURE_SIZE) if visual else None
        self.audio_encoder: nn.Module | None = None  # a subclass that reads the spectrogram through a CNN sets it
        self.last_ase_state: torch.Tensor | None = None

    def build_heads(self, feature_size: int) -> None:
        """GRU, actor and critic; called by subclasses once their feature size is known."""
        self.state_encoder = RecurrentStateEncoder(feature_size, self.hidden_size)
        self.actor = nn.Linear(self.hidden_size, NUM_ACTIONS)
        nn.init.orthogonal_(self.actor.weight, gain=0.01)
        nn.init.zeros_(self.actor.bias)
        self.critic = nn.Linear(self.hidden_size, 1)
        nn.init.orthogonal_(self.critic.weight)
        nn.init.zeros_(self.critic.bias)

    def step_features(self, obs: Observations) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement step_features")

    def diagnostics(self) -> dict[str, torch.Tensor]:
        """Detached scalars from the last forward pass worth logging (empty for policies without fusion)."""
        return {}

    def initial_hidden(self, batch: int, device: torch.device | str | None = None) -> torch.Tensor:
        return torch.zeros(self.num_recurrent_layers, batch, self.hidden_size, device=device)

    def forward(
        self, obs: Observations, hidden: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """GRU output (B, H) for one step or (T, B, H) for a sequence, and the new hidden state."""
        sequence = masks.dim() == 2
        if sequence:
            steps, batch = masks.shape
            flat = {k: v.flatten(0, 1) for k, v in obs.items() if k in self.shapes}
            features = self.step_features(flat).view(steps, batch, -1)
            return self.state_encoder(features, hidden, masks)
        features = self.step_features(obs).unsqueeze(0)
        out, hidden = self.state_encoder(features, hidden, masks.unsqueeze(0))
        return out.squeeze(0), hidden

    def distribution_and_value(
        self, obs: Observations, hidden: torch.Tensor, masks: torch.Tensor
    ) -> tuple[Categorical, torch.Tensor, torch.Tensor]:
        state, hidden = self(obs, hidden, masks)
        return Categorical(logits=self.actor(state)), self.critic(state).squeeze(-1), hidden

    def act(
        self, obs: Observations, hidden: torch.Tensor, masks: torch.Tensor, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(value, action, log_prob, hidden) for one step; deterministic picks the most likely action."""
        dist, value, hidden = self.distribution_and_value(obs, hidden, masks)
        action = dist.probs.argmax(dim=-1) if deterministic else dist.sample()
        return value, action, dist.log_prob(action), hidden

    def evaluate_actions(
        self, obs: Observations, hidden: torch.Tensor, masks: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(value, log_prob, entropy, hidden) of given actions, for one step or a time-major sequence."""
        dist, value, hidden = self.distribution_and_value(obs, hidden, masks)
        return value, dist.log_prob(actions), dist.entropy(), hidden

    def get_value(self, obs: Observations, hidden: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        state, _ = self(obs, hidden, masks)
        return self.critic(state).squeeze(-1)

    def encode_modalities(self, obs: Observations) -> dict[str, torch.Tensor]:
        """Visual (if any sensor), audio (if the policy built ``audio_encoder``) and (if enabled) doa feature
        vectors, each (N, size)."""
        features = {} if self.audio_encoder is None else {"audio": self.audio_encoder(obs["spectrogram"])}
        if self.visual_encoder is not None:
            features["visual"] = self.visual_encoder(obs)
        if self.use_doa:
            features["doa"] = obs["doa"].float()
        return features


@register_policy("av_nav")
class AVNavPolicy(Policy):
    """SoundSpaces' AV-Nav baseline: [audio 512, visual 512 (, doa)] -> GRU 512 -> actor / critic."""

    def __init__(self, cfg: Any, observation_space: Any) -> None:
        super().__init__(cfg, observation_space)
        self.audio_encoder = AudioEncoder(self.shapes["spectrogram"], FEATURE_SIZE)
        visual_size = FEATURE_SIZE if self.visual_encoder is not None else 0
        self.build_heads(FEATURE_SIZE + visual_size + self.doa_size)

    def step_features(self, obs: Observations) -> torch.Tensor:
        features = self.encode_modalities(obs)
        return torch.cat([features[k] for k in ("audio", "visual", "doa") if k in features], dim=-1)


@register_policy("asgf_no_asgf")
class ASENoFusionPolicy(Policy):
    """Ablation 'w/o ASGF': [ASE state e_t, audio a_t, visual d_t (, doa)] concatenated into the GRU."""

    has_spatial_state = True

    def __init__(self, cfg: Any, observation_space: Any) -> None:
        super().__init__(cfg, observation_space)
        self.audio_encoder = AudioEncoder(self.shapes["spectrogram"], FEATURE_SIZE)
        self.ase = AudioSpatialStateEncoder(self.shapes["spectrogram"], int(cfg.model.ase_dim))
        visual_size = FEATURE_SIZE if self.visual_encoder is not None else 0
        self.build_heads(self.ase.output_size + FEATURE_SIZE + visual_size + self.doa_size)

    def step_features(self, obs: Observations) -> torch.Tensor:
        state, _ = self.ase(obs["spectrogram"])
        self.last_ase_state = state.detach()
        features = self.encode_modalities(obs)
        return torch.cat([state] + [features[k] for k in ("audio", "visual", "doa") if k in features], dim=-1)


_WARNED_SINGLE_TOKEN: set[str] = set()  # policy names already warned about, so a process warns once each


def warn_single_memory_token(policy_name: str, tokens: list[str]) -> None:
    """Warn (once per process and policy) that ASGF over one memory token is not attention at all.

    A softmax over one token is identically 1, so the query (W_q, LN_q) and the keys (W_K) get no gradient,
    the attention entropy stays 0 and eq. (7) returns that token's value: the fusion is a gated MLP of e_t
    and the audio features. Blind runs are legitimate (the t-SNE recipe), so this is a warning, not an error.
    """
    if policy_name in _WARNED_SINGLE_TOKEN:
        return
    _WARNED_SINGLE_TOKEN.add(policy_name)
    logger.warning(
        "model.policy=%s has a single ASGF memory token %s: its cross-attention softmax is always 1, so the "
        "query and key weights get no gradient, fusion/attention_entropy stays 0 and the fusion reduces to a gated "
        "MLP of the audio state and the audio features; add 'rgb' or 'depth' to task.sensors, or set "
        "task.use_doa=true, for attention over two or more tokens",
        policy_name, tokens,
    )  # fmt: skip


@register_policy("asgf")
class ASGFPolicy(Policy):
    """ASGF-Nav: ASE state e_t queries visual / audio (/ doa) tokens; gated residual fusion -> GRU."""

    has_spatial_state = True

    def __init__(self, cfg: Any, observation_space: Any) -> None:
        super().__init__(cfg, observation_space)
        self.audio_encoder = AudioEncoder(self.shapes["spectrogram"], FEATURE_SIZE)
        self.state_size = int(cfg.model.ase_dim)
        self.ase = self.build_state_source()
        memory = {"visual": FEATURE_SIZE} if self.visual_encoder is not None else {}
        memory["audio"] = FEATURE_SIZE
        if self.use_doa:
            memory["doa"] = self.doa_size
        if len(memory) < 2:
            warn_single_memory_token(self.policy_name, list(memory))
        self.fusion = AudioSpatialGuidedFusion(
            memory, self.state_size, int(cfg.model.fusion_dim), int(cfg.model.fusion_heads)
        )
        self.build_heads(self.fusion.output_size)

    def build_state_source(self) -> nn.Module | None:
        return AudioSpatialStateEncoder(self.shapes["spectrogram"], self.state_size)

    def spatial_state(self, obs: Observations) -> torch.Tensor:
        state, _ = self.ase(obs["spectrogram"])
        self.last_ase_state = state.detach()
        return state

    def step_features(self, obs: Observations) -> torch.Tensor:
        return self.fusion(self.spatial_state(obs), self.encode_modalities(obs))

    def diagnostics(self) -> dict[str, torch.Tensor]:
        return {
            "fusion/gate_alpha": self.fusion.last_gate,
            "fusion/attention_entropy": self.fusion.last_attention_entropy,
        }


@register_policy("asgf_no_ase")
class ASGFNoASEPolicy(ASGFPolicy):
    """Ablation 'w/o ASE': a learnable vector replaces e_t everywhere e_t appears (query, residual, gate)."""

    has_spatial_state = False

    def build_state_source(self) -> nn.Module | None:
        self.learned_state = nn.Parameter(torch.randn(self.state_size) * 0.02)
        return None

    def spatial_state(self, obs: Observations) -> torch.Tensor:
        return self.learned_state.expand(obs["spectrogram"].shape[0], -1)
