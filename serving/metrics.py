"""Prometheus metrics of the serving path, exposed on KServe's /metrics (the default registry).

Counters, not logs, because an operator alerts on them: a refused model version (the old one
keeps serving, so nothing else would show it), unknown video ids in histories (a codebook that
lags the catalogue), cold-start users (a Feast store that lags the stream), and users answered without their online
features because the Feast store was unavailable (`serving.online`). One gauge says whether RM
selection re-ranks what is served: a version exported without its reward model silently serves
beam order, which an operator should see.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

MODEL_VERSION = Gauge("onerec_model_version", "Model version serving now (-1: none yet)")
MODEL_VERSION.set(-1)
SWAPS = Counter("onerec_model_swaps", "Model versions swapped in (the first load counts)")
REFUSED = Counter("onerec_model_versions_refused",
                  "Model versions refused (fingerprint mismatch or unloadable)", ["version"])
UNKNOWN_IDS = Counter("onerec_unknown_video_ids",
                      "History video ids the serving model does not know (dropped)")
COLD_START = Counter("onerec_cold_start_users", "Users answered from the cold-start table")
RM_SELECTION = Gauge("onerec_rm_selection",
                     "1 while the served version's beams are re-ranked by RM selection (its own "
                     "reward model or --rm_selection), 0: beam order or another reranker")
FEAST_AVAILABLE = Gauge("onerec_feast_online_available",
                        "1 while the Feast online store answers, 0 during an outage "
                        "(-1: no feature repo configured)")
FEAST_AVAILABLE.set(-1)
FEAST_OUTAGES = Counter("onerec_feast_online_outages",
                        "Feast online store outages (each logged once, with its recovery)")
FEAST_FALLBACK_USERS = Counter("onerec_feast_fallback_users",
                               "Users served without their online features (store unavailable)")
