"""P-Score: the reward model that tells ECPO (and RM selection) what a user would prefer.

OneRec's Preference Score (arXiv 2506.13695, section 4.1) with OneRec-V2's duration-aware
watch-time target (arXiv 2508.20900), one concept a module:

- `shaper`: the six tasks, the label each impression gives them, and the duration-aware
  watch-time percentile (`DurationShaper`, `event_labels`);
- `model`: the multi-task network and its personalised fusion into one P-Score
  (`RewardModel`, `loss_fn`, `build_reward_model`);
- `data`: every impression with its user's context strictly before it (`RewardData`,
  `reward_data`, `impression_batch`);
- `train`: the training loop and `fit_p_score`, the one recipe the pipeline's reward stage,
  `onerec align` and `bench.alignment` run (`train_reward_model`, `RewardTrainResult`);
- `metrics`: per-task AUC and calibration on held-out impressions (`predict`,
  `reward_metrics`, `ece`, `calibration_bins`, `calibration_curves`);
- `io`: the saved folder, refused when made with another codebook (`save_reward_model`,
  `load_reward_model`, `RewardModelError`, `RM_NAME`), and the copy a model version carries
  (`copy_reward_model`, `check_copy`, `holds_reward_model`);
- `selection`: "OneRec with RM selection" at inference time (`rm_select`).

Every public name is re-exported here: `from onerec.reward import X` is the way in.
"""

from onerec.reward.data import RewardData, impression_batch, reward_data
from onerec.reward.io import (
    RM_FILES,
    RM_NAME,
    RewardModelError,
    check_copy,
    copy_reward_model,
    holds_reward_model,
    load_reward_model,
    save_reward_model,
)
from onerec.reward.metrics import (
    calibration_bins,
    calibration_curves,
    ece,
    predict,
    reward_metrics,
)
from onerec.reward.model import RewardModel, build_reward_model, loss_fn
from onerec.reward.selection import rm_select
from onerec.reward.shaper import (
    ENGAGED_TASKS,
    LABEL_COLUMNS,
    TASKS,
    DurationShaper,
    event_labels,
)
from onerec.reward.train import RewardTrainResult, fit_p_score, train_reward_model

__all__ = ["ENGAGED_TASKS", "LABEL_COLUMNS", "RM_FILES", "RM_NAME", "TASKS", "DurationShaper",
           "RewardData", "RewardModel", "RewardModelError", "RewardTrainResult",
           "build_reward_model", "calibration_bins", "calibration_curves", "check_copy",
           "copy_reward_model", "ece", "event_labels", "fit_p_score", "holds_reward_model",
           "impression_batch", "load_reward_model", "loss_fn", "predict", "reward_data",
           "reward_metrics", "rm_select", "save_reward_model", "train_reward_model"]
