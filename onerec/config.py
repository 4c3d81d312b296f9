"""One Config for the whole system: CLI, KFP components, training jobs, checkpoints, export, serving.

Design choices:
- Plain nested dataclasses, one per stage (data, validation, tokenizer, model, train, reward,
  align, serve, features; sasrec for the baseline), every field with a comment. No module declares
  hyperparameters of its own: they read them from here, so a checkpoint that saves its Config
  can be rebuilt anywhere.
- Strict loading. An unknown key, a value of the wrong type or out of range raises
  `ConfigError` naming the dotted key (``model.n_layers``), never a silent default: a typo in a
  YAML file sent to a cluster must fail at submit time, not after an hour of training.
- Presets (`tiny` for tests, `small` for the 2-core demo, `base` for GPU nodes) are overrides
  on top of the dataclass defaults, kept in this file so they are reviewed with the fields.
- Dotted overrides from the CLI (``--set model.d_model=128``) parse the value as YAML, so
  ``true``, ``1e-3`` and ``[1, 2]`` mean what they say.
- `fingerprint()` is a hash of the canonical JSON: artifacts record it, serving compares it.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from onerec.io import atomic_write_text


class ConfigError(ValueError):
    """A config key is unknown, or its value has the wrong type or is out of range."""


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


FORMAT_SELECTS = ("random", "topk")  # align.format_select: how the format reward picks its k


@dataclass
class DataConfig:
    dataset: Literal["kuairand", "beauty", "microlens", "synthetic"] = "kuairand"  # which loader
    data_dir: str = "data/kuairand-pure"  # folder of the dataset (shipped sample by default)
    max_seq_len: int = 50  # short-term history length kept per user (most recent items)
    max_long_seq_len: int = 256  # lifelong history length before compression to fixed tokens
    max_pos_seq_len: int = 50  # positive-feedback (long view, like) history length
    test_days: int = 2  # KuaiRand temporal split: the last N days are held out
    request_gap_ms: int = 60_000  # impressions of a user within this window form one request
    synthetic_users: int = 200  # synthetic generator: number of users
    synthetic_items: int = 300  # synthetic generator: number of videos
    synthetic_events: int = 5000  # synthetic generator: number of impressions
    seed: int = 0  # seed for sampling and the synthetic generator

    def validate(self, p: str) -> None:
        for name in ("max_seq_len", "max_long_seq_len", "max_pos_seq_len", "synthetic_users",
                     "synthetic_items", "synthetic_events"):
            _check(getattr(self, name) > 0, f"{p}.{name}", "must be > 0")
        _check(self.test_days >= 0, f"{p}.test_days", "must be >= 0")
        _check(self.request_gap_ms >= 0, f"{p}.request_gap_ms", "must be >= 0")


@dataclass
class ValidationConfig:
    max_click_rate_shift: float = 0.05  # drift: |click rate - reference| above this fails
    max_tag_kl: float = 0.10  # drift: KL(tag distribution || reference) above this fails
    max_watch_ratio_quantile_shift: float = 0.15  # drift: per-quantile absolute shift limit
    watch_ratio_quantiles: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75, 0.9])
    max_watch_ratio: float = 50.0  # range: watch ratio above this is corrupt (loops are ~5)
    max_future_ms: int = 3_600_000  # freshness: events may be at most this far past "now"
    max_age_days: float | None = None  # freshness: newest event must be this recent (None: off)
    min_rows: int = 1  # a batch with fewer events fails
    # drift: total reference weight given to tags the reference never saw, so a new tag raises
    # the KL divergence (by about its share x log(share / this)) instead of making it infinite
    tag_unseen_weight: float = 0.001
    sample_unexpected: int = 5  # how many offending values each failure shows

    def validate(self, p: str) -> None:
        for name in ("max_click_rate_shift", "max_tag_kl", "max_watch_ratio_quantile_shift",
                     "max_watch_ratio"):
            _check(getattr(self, name) > 0, f"{p}.{name}", "must be > 0")
        _check(all(0.0 < q < 1.0 for q in self.watch_ratio_quantiles),
               f"{p}.watch_ratio_quantiles", "each quantile must be in (0, 1)")
        _check(self.max_age_days is None or self.max_age_days > 0, f"{p}.max_age_days",
               "must be > 0 or null")
        _check(self.min_rows >= 0, f"{p}.min_rows", "must be >= 0")
        _check(0.0 <= self.tag_unseen_weight < 1.0, f"{p}.tag_unseen_weight", "must be in [0, 1)")


@dataclass
class TokenizerConfig:
    levels: int = 3  # L: semantic-ID levels, coarse to fine
    codebook_size: int = 256  # K: codes per level
    balanced: bool = True  # cap cluster sizes so codes are used evenly
    kmeans_iters: int = 20  # k-means iterations per level
    content_dim: int = 64  # dimension of the content part of item embeddings
    collab_dim: int = 32  # dimension of the collaborative (co-engagement) part
    refit_drift_threshold: float = 0.2  # relative reconstruction-error increase that forces a refit
    refit_utilisation_ratio: float = 0.5  # refit when new items use < this x the level-1 codes expected
    seed: int = 0  # k-means seed
    balance_slack: float = 1.0  # balanced: a code holds at most ceil(N/K) * slack items (>= 1)
    balance_iters: int = 2  # balanced: assign-under-capacity + centroid-update rounds per level
    collab_weight: float = 1.0  # scale of the collaborative part relative to the content part
    collab_window: int = 10  # co-engagement: items within this many positions in a user's history
    text_batch_size: int = 128  # sentence-embedding batch size for item text

    def validate(self, p: str) -> None:
        for name in ("levels", "codebook_size", "kmeans_iters", "content_dim", "collab_dim",
                     "balance_iters", "collab_window", "text_batch_size"):
            _check(getattr(self, name) > 0, f"{p}.{name}", "must be > 0")
        _check(self.codebook_size >= 2, f"{p}.codebook_size", "must be >= 2")
        _check(self.refit_drift_threshold > 0, f"{p}.refit_drift_threshold", "must be > 0")
        _check(self.balance_slack >= 1.0, f"{p}.balance_slack", "must be >= 1")
        _check(0.0 <= self.refit_utilisation_ratio <= 1.0, f"{p}.refit_utilisation_ratio",
               "must be in [0, 1] (0 turns the utilisation trigger off)")
        _check(self.collab_weight >= 0, f"{p}.collab_weight", "must be >= 0")


@dataclass
class ModelConfig:
    arch: Literal["encoder_decoder", "lazy_decoder"] = "encoder_decoder"  # OneRec-V2 switch
    d_model: int = 128  # hidden size
    n_heads: int = 4  # attention heads
    n_encoder_layers: int = 2  # encoder depth
    n_decoder_layers: int = 2  # decoder depth
    n_experts: int = 4  # E: experts in each MoE feed-forward
    top_k_experts: int = 2  # k: experts each token is routed to
    expert_hidden: int = 256  # hidden size of one expert
    n_long_tokens: int = 8  # lifelong sequence compressed to this many learned-query tokens
    dropout: float = 0.1  # dropout in attention and feed-forward
    # the encoder's own rate (its layers, the lifelong pooler and its input embeddings, where
    # SASRec puts dropout), so the user state can be regularised apart from the decoder
    # (None: model.dropout)
    encoder_dropout: float | None = None
    # training only: each short-history item's embedding is dropped (zeroed, its position kept)
    # with this probability, so the model learns from histories it has not seen whole
    context_dropout: float = 0.0
    balance_loss_weight: float = 0.01  # weight of the MoE load-balancing loss
    causal_encoder: bool = False  # short sequence encoded causally: one pass serves every prefix
    # each item's own learned vector beside the sum of its semantic-ID code embeddings; false:
    # an item is its codes alone (as TIGER), so no parameter grows with the catalogue (at 10 M
    # items and d 128 the id table alone is 5 GB, past what one ONNX file may hold)
    item_id_embedding: bool = True
    # training only: each item's own vector is dropped from the contexts for a step with this
    # probability (whole; the kept ones rescaled by 1 / (1 - p)), so a history is also read
    # through the semantic-ID codes similar items share, the only thing a transition no user
    # made before has to go on (0: off; needs item_id_embedding)
    item_id_dropout: float = 0.0
    # weight of the auxiliary next-item loss: a full softmax over every item, scored from the
    # encoder's user state against the (tied) item embeddings, as SASRec trains (0: off)
    item_loss_weight: float = 0.0
    # with that item head: weight of its log-probability added to the beam's when the beam is
    # ranked (a scorer that re-orders the generated beam, in the exported graph too; 0: off)
    item_score_weight: float = 1.0
    # with that item head: a factorised first-order Markov term (FPMC, Rendle et al. 2010) in
    # its query, a free vector per item for what tends to follow it, so item-to-item
    # transitions other users made are memorised apart from the encoder (false: off)
    markov_head: bool = False
    # with that item head: the decoder reads the encoder's memory through a stop-gradient in
    # training, so the encoder (the user state) is shaped by the item head's full softmax
    # alone, as SASRec's is, and the decoder learns to generate semantic IDs from it; the
    # semantic-ID loss no longer pulls the user state toward the codebook's coarse prefixes
    # (false: both losses train the encoder)
    decoder_stop_gradient: bool = False
    # the transition memory (`onerec.transitions`): how often each item followed each other
    # item in the training requests, kept as a table of its most frequent successors, re-ranks
    # the generated beam as a Dirichlet-smoothed Markov chain whose prior is the model's own
    # beam distribution: p(b | last a) = (count(a -> b) + prior x p_beam(b)) / (count(a) +
    # prior). Small values trust the counts, large ones the model (0: off). Only beam items are
    # ranked, so nothing enters the list from outside generation; the table is a buffer of the
    # model, exported in the same graph.
    transition_prior: float = 0.0
    transition_neighbors: int = 32  # successors kept per item: the table is (n_items + 1) x this
    # the chain reads the last `transition_depth` history items, the j-th most recent one's
    # counts weighted by transition_decay ** j (2 and 0.1 chosen on Beauty's shifted validation)
    transition_depth: int = 2
    transition_decay: float = 0.1
    # with the item head: the transition table as a learned feature of the head instead of (or
    # beside) the fixed chain: the head's logit of item i gains w_j x log(1 + count(h_j -> i))
    # for the last `transition_depth` history items h_j, w_j = softplus of a linear map of the
    # user state, trained with each target's own pair left out of its count (leave-one-out),
    # so how far other users' pairs predict a new one is learned, not tuned (false: off)
    transition_feature: bool = False

    # derived (not read from YAML)
    head_dim: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.head_dim = self.d_model // self.n_heads if self.n_heads > 0 else 0

    @property
    def encoder_rate(self) -> float:
        """The dropout rate the encoder uses."""
        return self.dropout if self.encoder_dropout is None else self.encoder_dropout

    def validate(self, p: str) -> None:
        for name in ("d_model", "n_heads", "n_encoder_layers", "n_decoder_layers", "n_experts",
                     "top_k_experts", "expert_hidden", "n_long_tokens"):
            _check(getattr(self, name) > 0, f"{p}.{name}", "must be > 0")
        _check(self.d_model % self.n_heads == 0, f"{p}.d_model",
               f"must be divisible by n_heads={self.n_heads}")
        _check(self.top_k_experts <= self.n_experts, f"{p}.top_k_experts",
               f"must be <= n_experts={self.n_experts}")
        _check(0.0 <= self.dropout < 1.0, f"{p}.dropout", "must be in [0, 1)")
        _check(0.0 <= self.context_dropout < 1.0, f"{p}.context_dropout", "must be in [0, 1)")
        _check(0.0 <= self.item_id_dropout < 1.0, f"{p}.item_id_dropout", "must be in [0, 1)")
        _check(self.item_id_dropout == 0 or self.item_id_embedding, f"{p}.item_id_dropout",
               "needs model.item_id_embedding (there is no item vector to drop)")
        _check(self.encoder_dropout is None or 0.0 <= self.encoder_dropout < 1.0,
               f"{p}.encoder_dropout", "must be in [0, 1) or null")
        _check(self.balance_loss_weight >= 0, f"{p}.balance_loss_weight", "must be >= 0")
        _check(self.item_loss_weight >= 0, f"{p}.item_loss_weight", "must be >= 0")
        _check(self.item_score_weight >= 0, f"{p}.item_score_weight", "must be >= 0")
        _check(self.transition_prior >= 0, f"{p}.transition_prior", "must be >= 0 (0: off)")
        _check(self.transition_neighbors > 0, f"{p}.transition_neighbors", "must be > 0")
        _check(self.transition_depth > 0, f"{p}.transition_depth", "must be > 0")
        _check(0.0 <= self.transition_decay <= 1.0, f"{p}.transition_decay", "must be in [0, 1]")
        _check(not self.transition_feature or self.item_loss_weight > 0,
               f"{p}.transition_feature", "needs model.item_loss_weight > 0 (the item head)")
        _check(not self.decoder_stop_gradient or self.item_loss_weight > 0,
               f"{p}.decoder_stop_gradient",
               "needs model.item_loss_weight > 0 (else nothing trains the encoder)")


@dataclass
class TrainConfig:
    batch_size: int = 256  # requests per step
    lr: float = 1e-3  # peak learning rate (AdamW)
    weight_decay: float = 0.01  # AdamW weight decay
    warmup_steps: int = 100  # linear warmup, then cosine decay
    max_steps: int = 2000  # optimizer steps
    grad_clip: float = 1.0  # max gradient norm
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast is used on CUDA only
    checkpoint_every: int = 500  # steps between atomic checkpoints
    log_every: int = 50  # steps between log lines
    seed: int = 0  # seed for init and data order
    # bit-identical runs on several CPU threads, busy or idle (`onerec.determinism`); also read
    # by the reward model's and ECPO's training loops
    deterministic: bool = True

    def validate(self, p: str) -> None:
        for name in ("batch_size", "max_steps", "checkpoint_every", "log_every"):
            _check(getattr(self, name) > 0, f"{p}.{name}", "must be > 0")
        _check(self.lr > 0, f"{p}.lr", "must be > 0")
        _check(self.weight_decay >= 0, f"{p}.weight_decay", "must be >= 0")
        _check(self.warmup_steps >= 0, f"{p}.warmup_steps", "must be >= 0")
        _check(self.grad_clip > 0, f"{p}.grad_clip", "must be > 0")


@dataclass
class RewardConfig:
    """The P-Score reward model (OneRec section 4.1): multi-task heads and a personalised fusion."""

    d_model: int = 64  # hidden size of the user encoder and item embeddings
    n_heads: int = 2  # attention heads of the user encoder
    n_layers: int = 1  # transformer layers over the user's short and positive sequences
    hidden: int = 128  # width of the shared MLP tower under the task heads
    max_seq_len: int = 20  # most recent short-term (clicked) videos the reward model reads
    max_pos_seq_len: int = 20  # most recent positive-feedback videos the reward model reads
    dropout: float = 0.0  # dropout in the encoder and the tower (about one epoch: none needed)
    batch_size: int = 512  # impressions per step
    lr: float = 2e-3  # AdamW learning rate (constant after a short warmup)
    weight_decay: float = 0.01  # AdamW weight decay
    steps: int = 1500  # optimizer steps (an upper bound when a time budget is given)
    warmup_steps: int = 50  # linear learning-rate warmup
    grad_clip: float = 1.0  # max gradient norm
    fusion_weight: float = 1.0  # weight of the fused P-Score loss beside the per-task losses
    duration_buckets: int = 10  # duration-aware watch target: quantile buckets of video duration
    calibration_bins: int = 10  # equal-width bins of the expected calibration error
    log_every: int = 100  # steps between log lines
    seed: int = 0  # seed for init and impression order

    def validate(self, p: str) -> None:
        for name in ("d_model", "n_heads", "n_layers", "hidden", "max_seq_len", "max_pos_seq_len",
                     "batch_size", "steps", "duration_buckets", "calibration_bins", "log_every"):
            _check(getattr(self, name) > 0, f"{p}.{name}", "must be > 0")
        _check(self.d_model % self.n_heads == 0, f"{p}.d_model",
               f"must be divisible by n_heads={self.n_heads}")
        _check(0.0 <= self.dropout < 1.0, f"{p}.dropout", "must be in [0, 1)")
        _check(self.lr > 0, f"{p}.lr", "must be > 0")
        _check(self.weight_decay >= 0, f"{p}.weight_decay", "must be >= 0")
        _check(self.warmup_steps >= 0, f"{p}.warmup_steps", "must be >= 0")
        _check(self.grad_clip > 0, f"{p}.grad_clip", "must be > 0")
        _check(self.fusion_weight >= 0, f"{p}.fusion_weight", "must be >= 0")


@dataclass
class AlignConfig:
    """ECPO preference alignment (OneRec section 4.2) and the rewards it optimises."""

    group_size: int = 8  # G: videos sampled per user for group-normalised advantages
    clip_eps: float = 0.2  # PPO ratio clip epsilon
    early_clip: bool = True  # ECPO's early clip of negative advantages; false = plain GRPO
    early_clip_delta: float = 0.1  # ECPO delta: negative-advantage ratios stay <= 1 + eps + delta
    ntp_loss_weight: float = 0.5  # weight of the next-token loss on real positives mixed in
    lr: float = 1e-5  # learning rate of the alignment phase (constant; 5e-5 collapsed diversity)
    steps: int = 200  # alignment rounds (one sampled group per round)
    batch_size: int = 32  # users per round; the sampler draws group_size videos for each
    ppo_epochs: int = 2  # optimizer updates per sampled group (ratios leave 1 after the first)
    sync_every: int = 1  # rounds between copies of the policy into the sampler (pi_old); > 1
    # samples off-policy, as a separate sampling service does, which is where early clipping acts
    temperature: float = 1.0  # sampling temperature of the policy (1 = the policy itself)
    # KL(policy || pretrained) penalty; the KL is logged either way. 0.3: with diversity_weight 3
    # the aligned beam keeps intra-list diversity within 10% of the pretrained model's (0.1: 10.5%
    # lower; bench.alignment, docs/alignment.md)
    kl_weight: float = 0.3
    grad_clip: float = 1.0  # max gradient norm
    format_weight: float = 1.0  # weight of the format (legal ID) advantage
    format_k: int = 2  # format reward: legal samples per group, drawn at random, rewarded
    # which format_k legal samples keep the positive format advantage: "random" (the paper's
    # rule) or "topk" (the most probable ones; squeezes mass onto them, bench.align_curves)
    format_select: str = "random"
    industrial_weight: float = 1.0  # weight of the industrial rules beside the P-Score
    demoted_authors: list[int] = field(default_factory=list)  # industrial: authors demoted
    author_penalty: float = 0.2  # industrial: subtracted from a demoted author's video
    fresh_days: float = 0.0  # industrial: uploaded within this many days is fresh (0: off)
    fresh_bonus: float = 0.05  # industrial: added to a fresh video's reward
    # industrial: subtracted, times the share of the group's other legal samples whose
    # first-level semantic-ID code is the same (0: off). 3 (with kl_weight 0.3): intra-list
    # diversity 0.41 -> 0.65 against the pretrained 0.70, and the only weight tried at which RM
    # selection over the whole beam, the behaviour model's winner, stays within 10% of it
    # (bench.alignment's trade-off, docs/alignment.md)
    diversity_weight: float = 3.0
    checkpoint_every: int = 100  # rounds between atomic checkpoints
    log_every: int = 10  # rounds between log lines
    seed: int = 0  # seed for sampling and context order

    def validate(self, p: str) -> None:
        _check(self.group_size >= 2, f"{p}.group_size", "must be >= 2")
        _check(self.clip_eps > 0, f"{p}.clip_eps", "must be > 0")
        _check(self.early_clip_delta >= 0, f"{p}.early_clip_delta", "must be >= 0")
        _check(self.ntp_loss_weight >= 0, f"{p}.ntp_loss_weight", "must be >= 0")
        _check(self.lr > 0, f"{p}.lr", "must be > 0")
        for name in ("steps", "batch_size", "ppo_epochs", "sync_every", "checkpoint_every",
                     "log_every"):
            _check(getattr(self, name) > 0, f"{p}.{name}", "must be > 0")
        _check(self.temperature > 0, f"{p}.temperature", "must be > 0")
        _check(self.kl_weight >= 0, f"{p}.kl_weight", "must be >= 0")
        _check(self.grad_clip > 0, f"{p}.grad_clip", "must be > 0")
        _check(self.format_weight >= 0, f"{p}.format_weight", "must be >= 0")
        _check(1 <= self.format_k <= self.group_size, f"{p}.format_k",
               f"must be in [1, group_size={self.group_size}]")
        _check(self.format_select in FORMAT_SELECTS, f"{p}.format_select",
               f"must be one of {', '.join(FORMAT_SELECTS)}, got {self.format_select!r}")
        _check(self.industrial_weight >= 0, f"{p}.industrial_weight", "must be >= 0")
        _check(self.author_penalty >= 0, f"{p}.author_penalty", "must be >= 0")
        _check(self.fresh_days >= 0, f"{p}.fresh_days", "must be >= 0 (0 turns the rule off)")
        _check(self.fresh_bonus >= 0, f"{p}.fresh_bonus", "must be >= 0")
        _check(self.diversity_weight >= 0, f"{p}.diversity_weight",
               "must be >= 0 (0 turns the rule off)")


@dataclass
class ServeConfig:
    beam_width: int = 32  # default beam width of generation
    max_beam_width: int = 512  # requests asking for more are refused (400)
    top_n: int = 10  # videos returned by default
    max_top_n: int = 100  # requests asking for more are refused (400)
    max_request_seq_len: int = 1024  # longest user sequence a request may carry
    host: str = "127.0.0.1"  # local ModelServer address
    http_port: int = 8080  # Open Inference Protocol REST port
    grpc_port: int = 8081  # Open Inference Protocol gRPC port
    # ONNX Runtime intra-op threads per graph session (0: ORT's default, every core). One is
    # fastest on a 2-core server: beam 512 p50 11.7-12.1 ms against 19.3-20.5 ms with the
    # default, beam 32 3.4-3.8 against 5.9-6.8 (bench.serving, docs/results.md); scale out
    # with replicas rather than threads.
    ort_threads: int = 1
    # ONNX exporter of the generation graph. auto: TorchScript where it can run the model (no
    # causal encoder), 17x faster to export on the demo's model (2.5 s against 42 s, same items,
    # docs/results.md), else dynamo (torch.export + onnxscript)
    exporter: Literal["auto", "dynamo", "torchscript"] = "auto"
    # Request limits, enforced before a body is parsed (serving.limits; REST: HTTP 413/400,
    # gRPC: max_request_bytes is the server's max receive message length). One user with the
    # base preset's full histories (100 + 100 + 1024 ids) is ~14 KB of JSON or ~10 KB of binary
    # tensors, so 1 MiB carries ~75 such users in JSON (the defaults of max_batch and
    # max_request_seq_len are guards, not a size to send in one body: split larger batches).
    # A v2 request nests 5 deep ({inputs: [{data: [[...]]}]}); 32 leaves room for parameters
    # and stops the parser's recursion long before Python's. 100,000 values is what 1 MiB of
    # short ids holds (~10 bytes each) and bounds the Python objects one parse creates (~10 MB).
    max_request_bytes: int = 1 << 20  # request body (REST) / message (gRPC) size
    max_json_depth: int = 32  # nesting of JSON arrays and objects
    max_json_elements: int = 100_000  # JSON values (numbers, strings, arrays, objects) a body holds
    # Serve OneRec with RM selection: a model version that carries its reward model
    # (`<version>/reward_model/`, copied by the pipeline's export) re-ranks each beam by P-Score.
    # On by default because ECPO + RM selection (with the code cap below) is the behaviour
    # model's winner within the diversity bound (bench.alignment, docs/alignment.md). Off:
    # export copies no reward model and serving ignores one a version carries (beam order).
    # `onerec serve --rm-selection PATH` / `--reranker` override a version's own.
    rm_selection: bool = True
    # RM selection re-ranks only each beam's first M videos by P-Score (0: the whole beam). The
    # whole beam gains most on the behaviour model; 16 keeps more long-view recall (the whole
    # beam pulls tail videos in) for less than half the gain (docs/alignment.md "RM selection")
    rm_selection_top_m: int = 0
    # RM selection's per-slate diversity rule: at most C of a slate's picks share a first-level
    # semantic ID (0: no cap); the passed-over fill the slate when the beam has too few
    # clusters. 6: the largest cap that kept ILD at or above the pretrained model's on
    # bench.alignment's validation users (--users-from 1000: caps 5/6/7/8 gave long view
    # +0.059/+0.061/+0.063/+0.064 at ILD +17%/+6%/-3%/-9%; the whole beam +0.064 at -14%),
    # a margin on issue #18's 10% bound that the whole beam, at its edge, lacked
    rm_selection_code_cap: int = 6

    def validate(self, p: str) -> None:
        for name in ("beam_width", "max_beam_width", "top_n", "max_top_n", "max_request_seq_len",
                     "max_request_bytes", "max_json_depth", "max_json_elements"):
            _check(getattr(self, name) > 0, f"{p}.{name}", "must be > 0")
        _check(self.rm_selection_top_m >= 0, f"{p}.rm_selection_top_m",
               "must be >= 0 (0: the whole beam)")
        _check(self.rm_selection_code_cap >= 0, f"{p}.rm_selection_code_cap",
               "must be >= 0 (0: no cap)")
        _check(self.max_request_bytes < 2**31, f"{p}.max_request_bytes",
               "must be < 2 GiB (gRPC's message size is a 32-bit integer)")
        _check(self.max_json_depth >= 5, f"{p}.max_json_depth",
               "must be >= 5 (a v2 request with [B, L] data nests 5 deep)")
        _check(self.ort_threads >= 0, f"{p}.ort_threads",
               "must be >= 0 (0: ONNX Runtime's default)")
        _check(self.beam_width <= self.max_beam_width, f"{p}.beam_width",
               f"must be <= max_beam_width={self.max_beam_width}")
        _check(self.top_n <= self.max_top_n, f"{p}.top_n", f"must be <= max_top_n={self.max_top_n}")
        for name in ("http_port", "grpc_port"):
            _check(0 < getattr(self, name) < 65536, f"{p}.{name}", "must be a TCP port (1-65535)")


@dataclass
class SASRecConfig:
    """The SASRec baseline (Kang & McAuley 2018) that the generative model is measured against."""

    d_model: int = 64  # item embedding and hidden size
    n_layers: int = 2  # causal self-attention blocks
    n_heads: int = 2  # attention heads per block
    ffn_hidden: int = 256  # hidden size of the position-wise feed-forward
    max_len: int = 20  # positions the model sees (the TIGER protocol caps histories at 20)
    dropout: float = 0.3  # dropout on embeddings, attention and feed-forward
    norm: Literal["pre", "post"] = "pre"  # LayerNorm before (pre-LN) or after each sublayer
    activation: Literal["gelu", "relu"] = "gelu"  # feed-forward non-linearity
    batch_size: int = 256  # training sequences per step
    lr: float = 2e-3  # AdamW learning rate (constant; 2e-3 beat 1e-3 on Beauty, docs/baselines.md)
    weight_decay: float = 0.0  # AdamW weight decay
    max_epochs: int = 200  # passes over the training sequences (an upper bound)
    eval_every: int = 1  # epochs between validation NDCG@10 checks (when valid data is given)
    patience: int = 5  # stop after this many checks without a better validation NDCG@10
    eval_batch_size: int = 1024  # histories scored per batch in `recommend`
    seed: int = 0  # seed for init, dropout and data order

    def validate(self, p: str) -> None:
        for name in ("d_model", "n_layers", "n_heads", "ffn_hidden", "max_len", "batch_size",
                     "max_epochs", "eval_every", "patience", "eval_batch_size"):
            _check(getattr(self, name) > 0, f"{p}.{name}", "must be > 0")
        _check(self.d_model % self.n_heads == 0, f"{p}.d_model",
               f"must be divisible by n_heads={self.n_heads}")
        _check(0.0 <= self.dropout < 1.0, f"{p}.dropout", "must be in [0, 1)")
        _check(self.lr > 0, f"{p}.lr", "must be > 0")
        _check(self.weight_decay >= 0, f"{p}.weight_decay", "must be >= 0")


@dataclass
class FeaturesConfig:
    """The Feast feature repo; sequence lengths are data.max_seq_len / pos / long (not repeated)."""

    repo_template: str = "feature_repo"  # shipped definitions, rendered (never applied) in place
    repo_dir: str = "runs/feature_repo"  # run folder: rendered repo, registry, stores
    project: str = "onerec"  # Feast project name
    registry_path: str = "data/registry.db"  # registry file, relative to repo_dir
    online_path: str = "data/online_store.db"  # SQLite online store, relative to repo_dir
    # the online store of a rendered repo: the embedded SQLite file (laptop, demo, tests) or a
    # Redis server (production's, k8s/base/feast/redis.yaml) at redis_connection
    online_store: Literal["sqlite", "redis"] = "sqlite"
    # Feast's connection_string: "host:port[,db=N][,password=...][,ssl=true]"
    redis_connection: str = "localhost:6379"
    service_version: str = "v1"  # model version: serving reads FeatureService onerec_<this>
    seed_history: bool = True  # start sequences from KuaiRand's pre-log history (as stream.py)
    push_batch_events: int = 5000  # stream writer: events applied per online push
    backfill_events: int = 20_000  # `features apply`: events replayed into the offline store

    def validate(self, p: str) -> None:
        for name in ("repo_template", "repo_dir", "registry_path", "online_path"):
            _check(bool(getattr(self, name)), f"{p}.{name}", "must not be empty")
        for name in ("registry_path", "online_path"):
            _check(not Path(getattr(self, name)).is_absolute(), f"{p}.{name}",
                   "must be relative to features.repo_dir")
        _check(self.project.replace("_", "").isalnum() and not self.project.startswith("_"),
               f"{p}.project", "must be letters, digits and underscores")
        _check(self.service_version.startswith("v") and self.service_version[1:].isdigit(),
               f"{p}.service_version", "must look like v1, v2, ...")
        _check(self.push_batch_events > 0, f"{p}.push_batch_events", "must be > 0")
        host = self.redis_connection.split(",")[0]
        _check(self.online_store != "redis" or (":" in host and "=" not in host),
               f"{p}.redis_connection", "must start with host:port (Feast's connection_string)")
        _check(self.backfill_events >= 0, f"{p}.backfill_events", "must be >= 0")


@dataclass
class Config:
    """The whole system's settings. Build with `Config.from_preset`, `from_file` or `from_dict`."""

    preset: str = "small"  # the preset this config started from (informational)
    data: DataConfig = field(default_factory=DataConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    sasrec: SASRecConfig = field(default_factory=SASRecConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)

    def __post_init__(self) -> None:
        self.validate()

    # -- checks -------------------------------------------------------------------------------
    def validate(self) -> None:
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if dataclasses.is_dataclass(section):
                section.validate(f.name)
        _check(self.preset in PRESETS, "preset", f"must be one of {sorted(PRESETS)}")

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        return _build(cls, d, prefix="")

    @classmethod
    def from_preset(cls, name: str = "small", overrides: list[str] | None = None) -> Config:
        if name not in PRESETS:
            raise ConfigError(f"preset: unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        d = _deep_merge({"preset": name}, PRESETS[name])
        for ov in overrides or []:
            _apply_override(d, ov)
        return cls.from_dict(d)

    @classmethod
    def from_file(cls, path: str | Path, overrides: list[str] | None = None) -> Config:
        path = Path(path)
        try:
            d = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
        if not isinstance(d, dict):
            raise ConfigError(f"config file {path}: top level must be a mapping")
        base = PRESETS.get(d.get("preset", "small"), {})
        d = _deep_merge(base, d)
        for ov in overrides or []:
            _apply_override(d, ov)
        return cls.from_dict(d)

    @classmethod
    def load(cls, path: str | Path | None = None, preset: str | None = None,
             overrides: list[str] | None = None) -> Config:
        """CLI entry: a file if given, else a preset (default `small`), then overrides."""
        if path is not None:
            cfg = cls.from_file(path, overrides)
            if preset is not None and preset != cfg.preset:
                raise ConfigError(f"preset: --preset {preset} conflicts with {path} ({cfg.preset})")
            return cfg
        return cls.from_preset(preset or "small", overrides)

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(Path(path), self.to_yaml())

    def fingerprint(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# -- presets -------------------------------------------------------------------------------------
PRESETS: dict[str, dict[str, Any]] = {
    # tests: seconds on one core
    "tiny": {
        "data": {"max_seq_len": 8, "max_long_seq_len": 16, "max_pos_seq_len": 8,
                 "synthetic_users": 50, "synthetic_items": 60, "synthetic_events": 1000},
        "tokenizer": {"levels": 3, "codebook_size": 8, "kmeans_iters": 5,
                      "content_dim": 16, "collab_dim": 8},
        "model": {"d_model": 32, "n_heads": 2, "n_encoder_layers": 1, "n_decoder_layers": 1,
                  "n_experts": 2, "top_k_experts": 1, "expert_hidden": 64, "n_long_tokens": 2,
                  "dropout": 0.0},
        "train": {"batch_size": 16, "max_steps": 20, "warmup_steps": 2,
                  "checkpoint_every": 10, "log_every": 5},
        "reward": {"d_model": 16, "n_heads": 2, "hidden": 32, "dropout": 0.0, "batch_size": 128,
                   "steps": 20, "warmup_steps": 2, "duration_buckets": 4, "log_every": 5},
        "align": {"group_size": 4, "steps": 5, "batch_size": 8, "format_k": 2,
                  "checkpoint_every": 5, "log_every": 1},
        "serve": {"beam_width": 8, "max_beam_width": 64, "top_n": 5},
        "sasrec": {"d_model": 16, "n_layers": 1, "n_heads": 1, "ffn_hidden": 32, "max_len": 8,
                   "dropout": 0.0, "batch_size": 32, "max_epochs": 5, "eval_batch_size": 64},
    },
    # the demo: minutes on 2 CPU cores. Short contexts (20 / 20 / 64 items) and 128 requests a
    # step: a step costs ~1/7 of the 50 / 50 / 256 context's, so a cycle's passes over its new
    # requests take about a minute. No dropout: a cycle trains a few passes over its requests,
    # too few to over-fit, and dropout masks were a quarter of a CPU step (both measured on the
    # 04-26 held-out day, docs/results.md)
    "small": {
        "data": {"max_seq_len": 20, "max_pos_seq_len": 20, "max_long_seq_len": 64},
        "model": {"dropout": 0.0},
        "train": {"batch_size": 128, "lr": 2e-3},
        # step counts, not the stages' wall-time caps, decide the reward model and alignment
        "reward": {"steps": 100, "log_every": 10},  # a progress line every 10 steps
        "align": {"steps": 20},
    },
    # GPU nodes
    "base": {
        "data": {"max_seq_len": 100, "max_long_seq_len": 1024, "max_pos_seq_len": 100},
        "tokenizer": {"codebook_size": 1024, "kmeans_iters": 30, "content_dim": 128,
                      "collab_dim": 64},
        "model": {"d_model": 512, "n_heads": 8, "n_encoder_layers": 4, "n_decoder_layers": 4,
                  "n_experts": 8, "top_k_experts": 2, "expert_hidden": 2048,
                  "n_long_tokens": 32},
        "train": {"batch_size": 1024, "max_steps": 50_000, "warmup_steps": 1000,
                  "precision": "bf16", "checkpoint_every": 2000, "log_every": 100},
        "reward": {"d_model": 128, "n_heads": 4, "n_layers": 2, "hidden": 256,
                   "batch_size": 4096, "steps": 20_000},
        "align": {"group_size": 32, "steps": 5000, "batch_size": 256, "format_k": 4},
        "serve": {"beam_width": 512},
    },
}


# -- helpers -------------------------------------------------------------------------------------
def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _apply_override(d: dict[str, Any], override: str) -> None:
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected KEY=VALUE, e.g. model.d_model=64")
    key, raw = override.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {override!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"{key}: cannot parse value {raw!r}: {e}") from None
    node = d
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: {part} is not a section")
    node[parts[-1]] = value


def _build(cls: type, d: Any, prefix: str) -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(d).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        key = f"{prefix}{unknown[0]}"
        raise ConfigError(f"{key}: unknown key (known keys: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, value in d.items():
        kwargs[name] = _coerce(hints[name], value, f"{prefix}{name}")
    try:
        return cls(**kwargs)
    except TypeError as e:  # pragma: no cover - guarded by the checks above
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {e}") from None


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, prefix=f"{key}.")
    if origin is Literal:
        choices = get_args(tp)
        _check(value in choices, key, f"must be one of {list(choices)}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            _check(type(None) in args, key, "must not be null")
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if origin in (list, typing.List):  # noqa: UP006
        _check(isinstance(value, list), key, f"must be a list, got {value!r}")
        (item_tp,) = get_args(tp) or (Any,)
        return [_coerce(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        _check(isinstance(value, bool), key, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        _check(isinstance(value, int) and not isinstance(value, bool), key,
               f"must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key}: must be a number, got {value!r}") from None
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), key,
               f"must be a number, got {value!r}")
        return float(value)
    if tp is str:
        _check(isinstance(value, str), key, f"must be a string, got {value!r}")
        return value
    if tp is Any:
        return value
    raise ConfigError(f"{key}: unsupported field type {tp}")  # pragma: no cover


def _to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, list):
        return [_to_dict(v) for v in obj]
    return obj
