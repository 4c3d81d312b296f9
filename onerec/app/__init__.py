"""The apps on the core: the `onerec` CLI and its sub-apps, the demo, the local pipeline runner.

Everything a person runs lives here; everything it runs lives in the core (`onerec`, minus this
package). This is the one `onerec` package that may import `serving/` (the `serve` and
`recommend` commands, the demo's servers and clients), `pipelines/` (compile, submit, run under
kfp.local) and `components/` (`onerec pipeline step`, the training pods' entry point); the core
imports none of it, so training, export and the KFP components never load a CLI or a server
(docs/architecture.md; the import-linter contracts in pyproject.toml).
"""
