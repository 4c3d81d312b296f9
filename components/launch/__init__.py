"""The job launcher: how a training step leaves its component's pod as a cluster job.

`jobs` builds what every job shares (Config as a ConfigMap, the `onerec` CLI, restricted pods
on the GPU pool), `trainjob` (Kubeflow Trainer v2, the default) and `pytorchjob` (Training
Operator v1) build and run the two kinds, and `training` runs a step in-process or as one of
them. It lives here because both sides import it one way: the pretrain and align components
call it, and `pipelines/` passes its launcher choice through. This is the one part of
`components/` that imports the Kubernetes and Kubeflow SDKs (docs/architecture.md).
"""
