"""The continuous-training pipeline: compile, kfp.local end to end, warm start past the
watermark, the gate, the PyTorchJob of the pretrain step, submission objects."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from components.launch.jobs import JobSpec
from components.launch.training import StepOptions, preview_job, run_step
from onerec import gitops, registry, run_pages, stages
from onerec.app.cycle_report import cycle_summary, write_report
from onerec.config import Config
from onerec.data import kuairand
from onerec.stream import requests_from_events
from onerec.tokenizer import Codebook
from pipelines import run as prun
from pipelines.continuous import compile_pipeline
from tests.test_run_pages import assert_png, embedded_pngs

DATA = Path(__file__).resolve().parents[1] / "data" / "kuairand-pure"
DAY1, DAY2 = "2022-04-26", "2022-04-27"
CORE = "validate,codebook,pretrain,gate,publish"
COMPONENTS = {"validate-data", "refresh-codebook", "pretrain", "train-reward-model", "align",
              "evaluation-gate", "export-model", "publish"}
# component -> the type of its run page (the `page` output the Kubeflow UI renders) and the
# file name of the page's copy in the run's ledger
PAGES = {"validate-data": ("system.Markdown", "validate.md"),
         "refresh-codebook": ("system.HTML", "codebook.html"),
         "pretrain": ("system.HTML", "pretrain.html"),
         "train-reward-model": ("system.HTML", "reward.html"),
         "align": ("system.HTML", "align.html"),
         "evaluation-gate": ("system.Markdown", "gate.md"),
         "publish": ("system.Markdown", "publish.md")}


def _cfg() -> Config:
    return Config.from_preset("tiny")


def _run(tmp: Path, root: Path, until: str, run_id: str, **kw) -> None:
    """One cycle of 12 steps: the pipeline's mechanics, not a model that beats popularity (its
    gate would block it: the popularity floor is tested on an untrained candidate below)."""
    kw.setdefault("gate_popularity_floor", False)
    params = prun.local_params(_cfg(), until=until, run_id=run_id, root=root, data_dir=DATA,
                               stages_csv=CORE, max_steps=12, gate_max_users=150, **kw)
    prun.run_local(params, tmp / "kfp")


# -- compile -------------------------------------------------------------------------------------
def _docs(path: Path) -> tuple[dict, dict]:
    docs = list(yaml.safe_load_all(path.read_text()))
    spec = docs[0]
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(
        docs) > 1 else {}
    return spec, platform


def test_cluster_pipeline_compiles_with_dag_and_gpu_settings(tmp_path):
    path = compile_pipeline(tmp_path / "p.yaml", cluster=True)
    from kfp import components

    assert components.load_component_from_file(str(path)).name == "onerec-continuous-training"
    spec, platform = _docs(path)
    assert {c.removeprefix("comp-") for c in spec["components"]} >= COMPONENTS
    root = spec["root"]["dag"]["tasks"]
    deps = {name: set(t.get("dependentTasks", [])) for name, t in root.items()}
    assert deps["refresh-codebook"] == {"validate-data"}
    assert deps["pretrain"] == {"validate-data", "refresh-codebook"}
    assert deps["align"] >= {"pretrain", "train-reward-model"}
    assert deps["evaluation-gate"] >= {"align", "refresh-codebook"}
    # export and publish sit under the gate's condition
    cond = root["condition-1"]
    assert "promote" in cond["triggerPolicy"]["condition"]
    inner = spec["components"]["comp-condition-1"]["dag"]["tasks"]
    assert set(inner) == {"export-model", "publish"}
    assert "export-model" in inner["publish"]["dependentTasks"]
    # the exported version carries the cycle's reward model (serving's RM selection)
    assert inner["export-model"]["inputs"]["artifacts"]["reward_model"] == {
        "componentInputArtifact": "pipelinechannel--train-reward-model-reward_model"}
    assert root["condition-1"]["inputs"]["artifacts"][
        "pipelinechannel--train-reward-model-reward_model"]["taskOutputArtifact"] == {
        "outputArtifactKey": "reward_model", "producerTask": "train-reward-model"}
    # the cluster defaults: TrainJobs (Kubeflow Trainer v2), the PVC root
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["launcher"]["defaultValue"] == "trainjob"
    assert params["root"]["defaultValue"] == "/mnt/onerec"
    # kfp-kubernetes: the data PVC everywhere, the gate and export on the GPU pool
    executors = spec["deploymentSpec"]["executors"]
    for name in ("exec-evaluation-gate", "exec-export-model"):
        assert platform[name]["nodeSelector"]["labels"] == {"onerec.io/pool": "gpu"}
        assert platform[name]["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        acc = executors[name]["container"]["resources"]["accelerator"]
        assert acc["resourceType"] == "nvidia.com/gpu" and acc["resourceCount"] == "1"
    for name in ("exec-validate-data", "exec-pretrain", "exec-publish"):
        assert platform[name]["pvcMount"][0]["mountPath"] == "/mnt/onerec"
        assert "nodeSelector" not in platform[name]
    assert executors["exec-pretrain"]["container"]["image"].endswith("onerec-train:0.1.0")


def test_every_stage_declares_its_run_page_as_markdown_or_html(tmp_path):
    spec, _ = _docs(compile_pipeline(tmp_path / "p.yaml", cluster=True))
    for comp, (kind, _) in PAGES.items():
        outputs = spec["components"][f"comp-{comp}"]["outputDefinitions"]["artifacts"]
        assert outputs["page"]["artifactType"]["schemaTitle"] == kind, comp
        assert outputs["page"]["artifactType"]["schemaVersion"]
    assert "page" not in spec["components"]["comp-export-model"]["outputDefinitions"][
        "artifacts"]


def test_local_variant_has_no_cluster_settings(tmp_path):
    spec, platform = _docs(compile_pipeline(tmp_path / "l.yaml", cluster=False))
    assert platform == {}
    assert spec["root"]["inputDefinitions"]["parameters"]["launcher"]["defaultValue"] == "local"



def test_transfer_weights_follow_video_ids_and_grow_code_tables():
    from onerec.checkpoint import build_model

    cfg = _cfg()
    old_ids = np.array([10, 20, 30])
    old_codes = torch.tensor([[0, 0, 0], [1, 2, 0], [3, 1, 0], [2, 2, 0]])
    new_ids = np.array([10, 20, 30, 40])
    new_codes = torch.cat([old_codes, torch.tensor([[1, 2, 1]])])
    old = build_model(cfg, old_codes, [4, 4, 1])
    torch.manual_seed(1)
    new = build_model(cfg, new_codes, [4, 4, 2])
    moved = stages.transfer_weights(old, old_ids, new, new_ids)
    assert moved == {"items_carried": 3, "items_new": 1}
    assert torch.equal(new.item_emb.weight[1:4], old.item_emb.weight[1:4])
    assert torch.equal(new.code_emb.weight[:9], old.code_emb.weight[:9])
    assert torch.equal(new.heads[2].weight[:1], old.heads[2].weight)
    assert torch.equal(new.encoder[0].state_dict()["norm1.weight"],
                       old.encoder[0].state_dict()["norm1.weight"])


def test_transfer_weights_move_the_transition_memory_by_video_id():
    from onerec.checkpoint import build_model
    from onerec.transitions import TransitionTable

    cfg = Config.from_preset("tiny", ["model.transition_prior=1", "model.transition_neighbors=2"])
    # production: videos 10, 20, 30 at rows 1-3; 10 -> 20 (x3) and 10 -> 30 (x1), 30 -> 10 (x2)
    old_codes = torch.tensor([[0, 0, 0], [1, 2, 0], [3, 1, 0], [2, 2, 0]])
    old = build_model(cfg, old_codes, [4, 4, 1])
    old.set_transitions(TransitionTable(
        next_items=np.array([[0, 0], [2, 3], [0, 0], [1, 0]]),
        next_counts=np.array([[0, 0], [3, 1], [0, 0], [2, 0]], dtype=np.float32),
        out_counts=np.array([0, 4, 0, 2], dtype=np.float32)))
    # the refresh: video 30 left, 40 is new, and the rows are in another order (20, 40, 10)
    new_codes = torch.tensor([[0, 0, 0], [1, 2, 0], [1, 2, 1], [3, 1, 0]])
    new = build_model(cfg, new_codes, [4, 4, 2])
    stages.transfer_weights(old, np.array([10, 20, 30]), new, np.array([20, 40, 10]))
    got = new.transition_table()
    assert got is not None
    assert got.next_items[3].tolist() == [1, 0]  # 10 -> 20 (now row 1); 10 -> 30 dropped
    assert got.next_counts[3].tolist() == [3.0, 0.0]
    assert got.out_counts.tolist() == [0.0, 0.0, 0.0, 4.0]  # 10 saw 4 successors in all
    assert got.next_items[[1, 2]].sum() == 0  # 20 had none; 40 is new
    # a production model without the memory leaves the candidate's table empty
    plain = build_model(Config.from_preset("tiny"), old_codes, [4, 4, 1])
    fresh = build_model(cfg, new_codes, [4, 4, 2])
    stages.transfer_weights(plain, np.array([10, 20, 30]), fresh, np.array([20, 40, 10]))
    assert fresh.transition_table().n_pairs == 0


# -- the PyTorchJob of the pretrain step ------------------------------------------------------------
def test_pretrain_step_pytorchjob_validates():
    cfg = Config.from_preset("base")
    doc = preview_job("pretrain", cfg, StepOptions(root="/mnt/onerec", max_steps=500),
                      "cycle-2022-05-01", JobSpec(workers=1, gpus_per_node=8),
                      launcher="pytorchjob")
    assert doc["kind"] == "PyTorchJob" and doc["metadata"]["name"] == "onerec-pretrain-cycle-2022-05-01"
    master = doc["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    c = master["spec"]["containers"][0]
    step = c["command"][c["command"].index("--no-python") + 1:]  # under torchrun: 8 GPUs
    assert c["command"][0] == "torchrun" and step[:4] == ["onerec", "pipeline", "step", "pretrain"]
    assert c["command"][-2:] == ["--config", "/etc/onerec/config.yaml"]
    assert "/mnt/onerec/jobs/onerec-pretrain-cycle-2022-05-01/in/snapshot" in c["command"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert master["spec"]["nodeSelector"] == {"onerec.io/pool": "gpu"}
    for replica in doc["spec"]["pytorchReplicaSpecs"].values():
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "check", **replica["template"]["metadata"]},
               "spec": replica["template"]["spec"]}
        kubernetes_validate.validate(pod, "1.30.0", strict=True)


def test_step_command_parses_with_the_cli():
    """The command a replica runs is a valid `onerec pipeline step` invocation."""
    from typer.testing import CliRunner

    from onerec.app.cli import app

    res = CliRunner().invoke(app, ["pipeline", "step", "--help"])
    assert res.exit_code == 0
    opts = StepOptions(root="/r", warm_start=False, epochs=2.0, max_steps=3, time_budget_s=9.0)
    cmd = preview_job("pretrain", _cfg(), opts, "x", launcher="pytorchjob")["spec"][
        "pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"]
    for flag in ("--cold-start", "--epochs", "--max-steps", "--time-budget", "--root", "--out"):
        assert flag in cmd
        assert flag.lstrip("-") in res.output.replace("\n", " ") or flag == "--cold-start"


def test_pytorchjob_launcher_stages_inputs_launches_waits_and_collects(tmp_path):
    (tmp_path / "snap").mkdir()
    (tmp_path / "snap" / "snapshot.json").write_text("{}")
    (tmp_path / "cb").mkdir()
    sent = []

    class FakeCore:  # the Kubernetes API server cannot exist here
        def create_namespaced_config_map(self, namespace, body):
            sent.append(("configmap", body.metadata.name))

    class FakeTraining:
        def create_job(self, job, namespace):
            sent.append(("job", job.metadata.name))
            self.cmd = job.spec.pytorch_replica_specs["Master"].template.spec.containers[0].command

        def wait_for_job_conditions(self, name, namespace, job_kind, wait_timeout):
            sent.append(("wait", name))  # the replica's work: write the output folder
            out = Path(self.cmd[self.cmd.index("--out") + 1])
            out.mkdir(parents=True)
            (out / "summary.json").write_text(json.dumps({"watermark_ms": 7}))

    import components.launch.training as tr

    fake = FakeTraining()
    orig = tr.TrainingClientLauncher.__init__

    def init(self, training_client=None, core_api=None):
        orig(self, fake, FakeCore())

    tr.TrainingClientLauncher.__init__ = init
    try:
        res = run_step("pretrain", _cfg(), {"snapshot": str(tmp_path / "snap"),
                                            "codebook": str(tmp_path / "cb")},
                       str(tmp_path / "model"), StepOptions(root=str(tmp_path / "root")),
                       launcher="pytorchjob", run_id="c1")
    finally:
        tr.TrainingClientLauncher.__init__ = orig
    name = "onerec-pretrain-c1"
    assert sent == [("configmap", f"{name}-config"), ("job", name), ("wait", name)]
    assert (tmp_path / "root" / "jobs" / name / "in" / "snapshot" / "snapshot.json").exists()
    assert res == {"watermark_ms": 7}
    assert json.loads((tmp_path / "model" / "summary.json").read_text()) == res


# -- submission ---------------------------------------------------------------------------------------
class FakeServer:
    def __init__(self):
        self.calls = []

    def upload(self, package, name, description):
        self.calls.append(("upload", Path(package).exists(), name))
        return "pid"

    def experiment(self, name):
        self.calls.append(("experiment", name))
        return "eid"

    def run(self, package, experiment_id, run_name, params):
        self.calls.append(("run", experiment_id, run_name, params))
        return "rid"

    def schedule(self, package, experiment_id, job_name, cron, params):
        self.calls.append(("schedule", experiment_id, job_name, cron, params))
        return "rrid"


def test_submit_runs_once_or_creates_a_recurring_run(tmp_path):
    pkg = compile_pipeline(tmp_path / "p.yaml")
    params = {"config_yaml": Config.from_preset("base").to_yaml(), "until": "2022-05-01",
              "stages_csv": CORE}
    srv = FakeServer()
    sub = prun.submit(srv, pkg, params, name="onerec-ct")
    assert sub.run_id == "rid" and srv.calls[0] == ("upload", True, "onerec-ct")
    assert srv.calls[2] == ("run", "eid", "onerec-ct-2022-05-01", params)
    srv = FakeServer()
    sub = prun.submit(srv, pkg, params, name="onerec-ct", schedule="0 0 2 * * *")
    kind, exp, _job, cron, sent = srv.calls[2]
    assert (kind, exp, cron, sub.recurring_run_id) == ("schedule", "eid", "0 0 2 * * *", "rrid")
    assert "until" not in sent and sent["stages_csv"] == CORE  # each run takes its own day
    with pytest.raises(ValueError, match="6 fields"):
        prun.submit(FakeServer(), pkg, params, name="x", schedule="0 2 * * *")


def test_kfp_server_sends_recurring_run_to_kfp_client(tmp_path):
    got = {}

    class Client:
        def create_recurring_run(self, **kw):
            got.update(kw)
            return type("R", (), {"recurring_run_id": "r1"})()

    srv = prun.KfpServer("http://kfp", client=Client())
    assert srv.schedule(tmp_path / "p.yaml", "e1", "job", "0 0 2 * * *", {"a": 1}) == "r1"
    assert got["cron_expression"] == "0 0 2 * * *" and got["experiment_id"] == "e1"
    assert got["params"] == {"a": 1} and got["pipeline_package_path"].endswith("p.yaml")


# -- kfp.local end to end ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_cycles(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ct")
    root = tmp / "state"
    _run(tmp, root, DAY1, "c1")
    c1_state = tmp / "state-after-c1"
    shutil.copytree(root, c1_state, symlinks=True)
    _run(tmp, root, DAY2, "c2")
    return tmp, root, c1_state


def _seen(until_holdout_ms: int) -> set[int]:
    ev = kuairand.load(DATA).events
    seen = set(ev.loc[ev["time_ms"] < until_holdout_ms, "video_id"].tolist())
    hist = kuairand.read_history(DATA)
    for col in ("watch_seq", "long_watch_seq", "like_seq"):
        for seq in hist[col]:
            seen.update(int(v) for v in seq)
    return seen & set(kuairand.load(DATA).items["video_id"].tolist())


def test_local_pipeline_first_cycle_trains_from_scratch_and_publishes(two_cycles):
    _, root, _ = two_cycles
    c1 = cycle_summary(root, "c1")
    assert c1["failed"] == {}
    assert [s for s, st in c1["stages"].items() if st == "ran"] == CORE.split(",")
    assert {c1["stages"][s] for s in ("reward", "align", "export")} == {"skipped"}
    assert c1["codebook"]["mode"] == "fit" and not c1["warm_start"]
    assert c1["watermark_in_ms"] == -1 and c1["gate"] == "promote" and c1["published"]
    assert c1["candidate"]["legality"] == 1.0 and c1["n_eval_users"] == 150


def test_second_cycle_warm_starts_and_trains_only_past_the_watermark(two_cycles):
    _, root, c1_state = two_cycles
    c1, c2 = cycle_summary(root, "c1"), cycle_summary(root, "c2")
    assert c2["failed"] == {}
    wm = c1["watermark_out_ms"]
    assert c2["warm_start"] and c2["init_version"] == c1["published"]
    assert c2["watermark_in_ms"] == wm and c2["first_request_ms"] > wm
    # the requests it trained on: exactly those after the watermark, before the held-out day
    holdout = stages.day_ms(DAY2) - stages.DAY_MS
    cb = Codebook.load(c1_state / "production" / "codebook")
    ev = kuairand.load(DATA).events
    index = {int(v): i + 1 for i, v in enumerate(cb.item_ids.tolist())}
    reqs = requests_from_events(ev[ev["time_ms"] < holdout].reset_index(drop=True), index,
                                _cfg().data, history=kuairand.read_history(DATA))
    assert c2["n_requests"] == int((reqs.time_ms > wm).sum()) > 0
    assert c2["n_requests"] < len(reqs)
    # the refresh encoded exactly the videos first seen since cycle 1; old IDs kept
    new = _seen(holdout) - _seen(holdout - stages.DAY_MS)
    assert c2["codebook"]["mode"] == "refresh" and c2["codebook"]["n_new_items"] == len(new) > 0
    cb2 = Codebook.load(root / "production" / "codebook")
    assert set(cb2.item_ids.tolist()) - set(cb.item_ids.tolist()) == new
    assert np.array_equal(cb2.semantic_ids_of(cb.item_ids), cb.semantic_ids)
    assert c2["items_carried"] == len(cb.item_ids)
    # production moved on: the watermark, the GitOps tree
    prod = registry.read_production(root)
    assert prod.version == c2["published"] and prod.watermark_ms == c2["watermark_out_ms"] > wm
    log = gitops.log(root / registry.GITOPS, "dev")
    assert any(c2["published"] in line for line in log)
    assert any(c1["published"] in line for line in log)


def test_report_shows_both_cycles(two_cycles, tmp_path):
    _, root, _ = two_cycles
    js, md = write_report(root, ["c1", "c2"], tmp_path)
    cycles = json.loads(js.read_text())["cycles"]
    assert [c["run_id"] for c in cycles] == ["c1", "c2"]
    text = md.read_text()
    assert "warm from " + cycles[1]["init_version"] in text and "cold (" in text


def test_local_run_writes_the_run_pages_and_the_report_shows_them(two_cycles, tmp_path):
    tmp, root, _ = two_cycles
    ledgers = {r: run_pages.ledger_pages(root, r) for r in ("c1", "c2")}
    for run_id, pages in ledgers.items():
        assert set(pages) == {name for _, name in PAGES.values()} | {
            "codebook-utilisation.png", "pretrain-curves.png"}, run_id  # reward, align skipped
        for name in ("codebook-utilisation.png", "pretrain-curves.png"):
            png = Path(pages[name]).read_bytes()
            assert_png(png)
            html = Path(pages[name.split("-")[0] + ".html"]).read_text()
            assert embedded_pngs(html) == [png]
        c = cycle_summary(root, run_id)
        gate = Path(pages["gate.md"]).read_text()
        assert f"# Evaluation gate: **{c['gate']}**" in gate
        assert f"| ndcg@10 (gated) | {c['candidate']['ndcg@10']:.4f} |" in gate
        assert f"# Published `{c['published']}`" in Path(pages["publish.md"]).read_text()
        assert "# Data validation: PASSED" in Path(pages["validate.md"]).read_text()
        assert "did not run" in Path(pages["align.html"]).read_text()
    assert "production none" in Path(ledgers["c1"]["gate.md"]).read_text()
    # kfp.local wrote the same files as the steps' output artifacts
    for task, (_, name) in PAGES.items():
        got = sorted(p.read_text() for p in (tmp / "kfp").glob(f"*/{task}/page"))
        assert got == sorted(Path(ledgers[r][name]).read_text() for r in ledgers), task
    # the cycle report links every page and shows the plots, relative to its folder
    _, md = write_report(root, ["c1", "c2"], tmp_path / "report")
    text = md.read_text()
    assert "## Run pages" in text
    for run_id in ledgers:
        for plot in ("codebook-utilisation", "pretrain-curves"):
            rel = text.split(f"![{run_id} {plot}](")[1].split(")")[0]
            assert (md.parent / rel).resolve() == Path(ledgers[run_id][f"{plot}.png"]).resolve()


def test_gate_blocks_a_worse_candidate_and_publish_is_not_reached(two_cycles):
    tmp, _, c1_state = two_cycles
    root = tmp / "state-blocked"
    shutil.copytree(c1_state, root, symlinks=True)
    before = registry.read_production(root).meta
    commits = gitops.log(root / registry.GITOPS, "dev")
    # a candidate trained from scratch for one step at a learning rate that leaves it at its
    # random initialisation, against the trained production model
    bad = Config.from_preset("tiny", ["train.lr=1e-7"])
    params = prun.local_params(bad, until=DAY2, run_id="bad", root=root, data_dir=DATA,
                               stages_csv=CORE, warm_start=False, max_steps=1,
                               gate_max_users=1000)  # enough users to tell it apart
    prun.run_local(params, tmp / "kfp-bad")
    c = cycle_summary(root, "bad")
    assert c["gate"] == "blocked" and c["stages"]["publish"] == "not reached"
    assert c["candidate"]["ndcg@10"] < c["production"]["ndcg@10"]
    assert registry.read_production(root).meta == before
    assert gitops.log(root / registry.GITOPS, "dev") == commits
    # the popularity floor blocks it too, and the record shows both comparisons
    assert any("below popularity" in r for r in c["gate_reasons"])
    gate = registry.read_run(root, "bad")["gate"]["result"]
    for m in ("ndcg@10", "recall@10"):
        row = gate["compared"][m]
        assert row["vs_popularity"]["upper"] < 0 and row["vs_production"]["users_needed"] >= 1
    # no production model (a first cycle): the same untrained candidate is still blocked, by the
    # popularity floor alone, on the same real held-out window
    run = next((tmp / "kfp-bad").iterdir())
    first = stages.evaluate_gate(bad, run / "validate-data" / "snapshot", run / "pretrain" / "model",
                                 run / "refresh-codebook" / "codebook", tmp / "gate-first",
                                 root=tmp / "no-production", max_users=1000)
    assert first["decision"] == "blocked" and first["production"] is None
    assert first["reasons"] and all("significantly below popularity" in r
                                    for r in first["reasons"])
    assert json.loads((tmp / "gate-first" / "gate.json").read_text())["decision"] == "blocked"


# -- faults: a broken new log batch stops the cycle, production untouched ----------------------------
OLD_LOG, NEW_LOG = "log_2022-04-25_to_04-25.parquet", "log_2022-04-26_to_04-30.parquet"


def _digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `root` (a link: its target; a folder: "dir"),
    `.git` included: the state a cycle would update, byte for byte."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _git_refs(repo: Path) -> tuple[str, str]:
    """HEAD and every ref of the GitOps repository."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                              text=True).stdout
    return git("rev-parse", "HEAD"), git("for-each-ref", "--format=%(refname) %(objectname)")


@pytest.fixture(scope="module")
def split_data(tmp_path_factory) -> Path:
    """The shipped sample with its first log split at DAY1: the events from DAY1 on arrive as a
    new file, the log batch cycle 2 (until DAY2) validates."""
    folder = tmp_path_factory.mktemp("split-data")
    first = "log_2022-04-25_to_04-30.parquet"
    for f in DATA.iterdir():
        if f.name != first:
            shutil.copy(DATA / f.name, folder / f.name)
    ev = pd.read_parquet(DATA / first)
    cut = stages.day_ms(DAY1)
    ev[ev["time_ms"] < cut].to_parquet(folder / OLD_LOG, index=False)
    ev[ev["time_ms"] >= cut].to_parquet(folder / NEW_LOG, index=False)
    return folder


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])  # the copy stopped a third short


def _rewrite(fn):
    def corrupt(path: Path) -> None:
        fn(pd.read_parquet(path)).to_parquet(path, index=False)
    return corrupt


# case -> (corruption of NEW_LOG, what the error must name besides the file)
FAULTS = {
    "truncated_parquet": (_truncate, "as parquet"),
    "renamed_column": (_rewrite(lambda ev: ev.rename(columns={"is_click": "click"})),
                       "events.is_click"),
    "dropped_column": (_rewrite(lambda ev: ev.drop(columns=["long_view"])), "events.long_view"),
    "dtype_changed": (_rewrite(lambda ev: ev.assign(watch_ratio=ev["watch_ratio"].astype(str))),
                      "events.watch_ratio"),
}


def test_the_split_log_batch_is_valid_before_it_is_corrupted(two_cycles, split_data, tmp_path):
    """Control for the fault tests: the clean split folder passes cycle 2's validation, so what
    stops them is the corruption."""
    _, _, c1_state = two_cycles
    root = tmp_path / "state"
    shutil.copytree(c1_state, root, symlinks=True)
    out = stages.validate(_cfg(), split_data, tmp_path / "snap", until=DAY2, root=root)
    assert out["validation_success"] and out["n_batch_events"] > 0
    # the GX Data Docs site beside the report: an index and one page per suite's result (the
    # drift suite is in report.json only: GX cannot store its KL-divergence result)
    docs = tmp_path / "snap" / "validation" / "data_docs"
    index = (docs / "index.html").read_text()
    for suite in ("events", "items", "users"):
        assert suite in index
        pages = list((docs / "validations" / suite).rglob("*.html"))
        assert len(pages) == 1 and "Expectation" in pages[0].read_text(), suite
    assert not list(tmp_path.glob(".data_docs-*"))  # the build folder moved into the snapshot
    page = run_pages.write_validation(tmp_path / "snap", "snap-uri", tmp_path / "page.md",
                                      tmp_path, "c2")
    assert page is not None and "snap-uri/validation/data_docs/index.html" in page.read_text()


@pytest.mark.parametrize("case", list(FAULTS))
def test_a_broken_log_batch_stops_the_cycle_and_production_is_untouched(
        case, two_cycles, split_data, tmp_path):
    _, _, c1_state = two_cycles
    corrupt, named = FAULTS[case]
    data = tmp_path / "data"
    shutil.copytree(split_data, data)
    corrupt(data / NEW_LOG)
    root = tmp_path / "state"
    shutil.copytree(c1_state, root, symlinks=True)
    repo = root / registry.GITOPS
    refs_before = _git_refs(repo)
    before = _digest(root)
    run_id = f"fault-{case}"
    params = prun.local_params(_cfg(), until=DAY2, run_id=run_id, root=root, data_dir=data,
                               stages_csv=CORE, max_steps=12, gate_max_users=150,
                               gate_popularity_floor=False)
    with pytest.raises(RuntimeError):  # kfp.local: a step failed
        prun.run_local(params, tmp_path / "kfp")
    # the cycle stopped at validation, naming the file and the column (or the unreadable file)
    c = cycle_summary(root, run_id)
    assert list(c["failed"]) == ["validate"]
    assert {s for s, st in c["stages"].items() if st != "not reached"} == {"validate"}
    error = c["failed"]["validate"]
    assert error.startswith("data validation failed") and NEW_LOG in error and named in error
    # production, the canary slot, the stored versions and the GitOps tree: byte-identical; the
    # only new files are the ledger's record of the failed stage and its run page
    assert _git_refs(repo) == refs_before
    after = _digest(root)
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) - set(before) == {f"runs/{run_id}", f"runs/{run_id}/validate.json",
                                        f"runs/{run_id}/pages", f"runs/{run_id}/pages/validate.md"}
    page = (root / "runs" / run_id / "pages" / "validate.md").read_text()
    assert "# Data validation: FAILED" in page and NEW_LOG in page
