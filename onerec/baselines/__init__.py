"""Baselines the generative model must beat: most-popular items and SASRec.

Both rank the full catalogue and are scored with `onerec.evaluate`, the same code that scores
the generative model, so a comparison differs only in the recommender.
"""

from onerec.baselines.popularity import Popularity, fit_popularity
from onerec.baselines.sasrec import SASRec, recommend, train_sasrec

__all__ = ["Popularity", "SASRec", "fit_popularity", "recommend", "train_sasrec"]
