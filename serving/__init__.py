"""Serving (issue #6): KServe predictor + transformer, version hot swap, tritonclient client.

Modules: `schema` (request/response names and limits), `repository` (the Triton model
repository on disk), `runtime` (one version under ONNX Runtime), `versions` (hot swap),
`v2` (safe decoding of v2 inputs), `predictor` and `transformer` (the KServe models),
`server` (the local ModelServer), `client` (tritonclient; never imports kserve).
Importing this package imports neither kserve nor tritonclient.
"""
