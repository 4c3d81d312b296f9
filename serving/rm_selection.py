"""OneRec with RM selection in serving: re-rank each user's beam by the P-Score reward model.

OneRec (section 4) serves "generate N, re-score with the reward model, return the top k". The
transformer's reranker hook gets the beam (video ids, generator log-probabilities); this
reranker also needs the user's context, so it declares `wants_contexts` and the transformer
passes the graph inputs it built (item indices in the codebook's order, the space the reward
model was trained in: its codebook fingerprint is checked at load). Videos come back ordered by
P-Score; each keeps its generator log-probability in `scores`, so a client still sees how
likely the generator found it. The reward model runs on CPU in the transformer process: a
few hundred candidates per user are one small batched forward.

`top_m` (`serve.rm_selection_top_m`, 0 -> None: the whole beam): only each beam's first M videos
are re-ranked, the rest follow in the generator's order. The whole beam gains most on the
behaviour model; it also pulls low-probability tail videos into the top 10, which costs
long-view recall that a small M keeps (docs/alignment.md, "RM selection"). `code_cap`
(`serve.rm_selection_code_cap`, 0 -> None): at most C picks per first-level semantic ID, the
per-slate diversity rule that keeps the whole beam's gain without piling one cluster into the
slate (`onerec.reward.selection`).

Where the reward model comes from: by default each model version carries its own
(`<version>/reward_model/`, the one ECPO aligned it with; `for_version`), loaded with the
version and attached to its `Predictor`, so a hot swap changes the generator and its reranker
in one reference assignment and no request pairs one version's beam with another's reward
model. `--rm_selection PATH` (`RMSelection.load`) overrides it for every version.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from onerec.model import Batch
from onerec.reward import RewardModel, RewardModelError, check_copy, load_reward_model, rm_select
from serving.repository import REWARD_MODEL, Manifest, VersionRefused


class RMSelection:
    """Reranker(user_ids, video_ids (B, W), scores (B, W), contexts) -> reordered ids, scores."""

    wants_contexts = True

    def __init__(self, reward_model: RewardModel, top_m: int | None = None,
                 source: str = "", code_cap: int | None = None) -> None:
        self.reward_model, self.top_m, self.source = reward_model, top_m, source
        self.code_cap = code_cap

    @classmethod
    def load(cls, path: str | Path, codebook_fingerprint: str | None = None,
             top_m: int | None = None, code_cap: int | None = None) -> RMSelection:
        model, _, _ = load_reward_model(path, codebook_fingerprint)
        return cls(model, top_m, source=str(path), code_cap=code_cap)

    def __str__(self) -> str:
        """What serving logs and shows in /onerec/versions."""
        cap = f", at most {self.code_cap} per first-level code" if self.code_cap else ""
        return (f"RM selection ({self.source or 'reward model'}, "
                f"{f'top {self.top_m}' if self.top_m else 'whole beam'}{cap})")

    def __call__(self, user_ids: np.ndarray, video_ids: np.ndarray, scores: np.ndarray,
                 contexts: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        for name in ("user", "short", "pos", "long"):
            if contexts[name].shape[0] != video_ids.shape[0]:
                raise ValueError(f"contexts[{name!r}] has {contexts[name].shape[0]} rows for "
                                 f"{video_ids.shape[0]} beams")
        batch = Batch(*(torch.from_numpy(np.ascontiguousarray(contexts[n]))
                        for n in ("user", "short", "pos", "long")))
        batch.user = batch.user.reshape(-1)
        beams = [[int(v) for v in row if v >= 0] for row in video_ids]
        picked = rm_select(self.reward_model, batch, beams, k=video_ids.shape[1], top_m=self.top_m,
                           code_cap=self.code_cap)
        picked = [_then_rest(p, b) for p, b in zip(picked, beams, strict=True)]
        out_v = np.full_like(video_ids, -1)
        out_s = np.zeros_like(scores)
        for r, row in enumerate(picked):
            logp = {int(v): float(s) for v, s in zip(video_ids[r], scores[r], strict=True)}
            out_v[r, :len(row)] = row
            out_s[r, :len(row)] = [logp[v] for v in row]
        return out_v, out_s


def for_version(folder: Path, manifest: Manifest, top_m: int | None = None,
                code_cap: int | None = None) -> RMSelection | None:
    """RM selection with the reward model a version folder carries (None: it carries none).

    Raises VersionRefused naming the file when the copy is torn or swapped (its sha256 differs
    from the manifest's), made with another codebook than the version's, or unreadable; and
    when a `reward_model/` folder is there that the manifest does not record."""
    folder = Path(folder)
    entry = manifest.extra.get("reward_model")
    if entry is None:
        if (folder / REWARD_MODEL).exists():
            raise VersionRefused(f"{folder / REWARD_MODEL}: not recorded in the manifest's "
                                 f"reward_model (export the version with it)")
        return None
    try:
        path = check_copy(folder, entry)
        made_with = entry.get("codebook_fingerprint")
        if made_with != manifest.codebook_fingerprint:
            raise RewardModelError(f"{path / 'meta.json'}: reward model made with codebook "
                                   f"{made_with}, the version's is "
                                   f"{manifest.codebook_fingerprint}")
        return RMSelection.load(path, manifest.codebook_fingerprint, top_m, code_cap)
    except RewardModelError as e:
        raise VersionRefused(str(e)) from None


def _then_rest(picked: list[int], beam: list[int]) -> list[int]:
    """RM selection's picks, then the beam's other videos in beam order (each once)."""
    chosen = set(picked)
    return picked + [v for v in dict.fromkeys(beam) if v not in chosen]
