"""Baselines the generative model must beat: most-popular items, item-to-item transitions,
item-kNN blended with recent popularity, and SASRec.

All rank the full catalogue and are scored with `onerec.evaluate`, the same code that scores
the generative model, so a comparison differs only in the recommender.
"""

from onerec.baselines.itemknn import ItemKNN, fit_itemknn
from onerec.baselines.popularity import Popularity, fit_popularity
from onerec.baselines.sasrec import SASRec, recommend, train_sasrec
from onerec.baselines.transitions import Transitions, fit_transitions, split_by_transition

__all__ = ["ItemKNN", "Popularity", "SASRec", "Transitions", "fit_itemknn", "fit_popularity",
           "fit_transitions", "recommend", "split_by_transition", "train_sasrec"]
