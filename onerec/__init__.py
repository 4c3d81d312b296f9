"""OneRec on Kubernetes: the core library (no kfp, kubernetes or kserve imports here).

One encoder-decoder model with a Mixture-of-Experts decoder generates the semantic IDs of the
next videos (OneRec, arXiv 2506.13695); this package holds its data layer, validation,
tokenizer, model, training, alignment, evaluation and export. `components/`, `pipelines/` and
`serving/` are thin layers over it, and `onerec.app` (the CLI, the demo) sits on top; the core
imports none of them (docs/architecture.md).
"""

__version__ = "0.1.0"
