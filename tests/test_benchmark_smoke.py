"""CI-sized versions of the benchmark scripts: they run end to end and report what they should."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("method", ["parl_diffusion", "calql_gaussian", "filtered_bc", "cem_random", "parl_paper",
                                    "calql_gaussian_reference"])
def test_finetune_study_runs_each_kind_of_method(method):
    study = _load("finetune_study")
    result = study.run("cup_to_rack", method, seed=0, demos=2, warmup=1, online=1, profile="cpu_demo",
                       overrides={"learner.schedule.offline_policy_steps": 20, "learner.schedule.offline_critic_steps": 10})
    assert [c["phase"] for c in result["curve"]] == ["warmup", "online"]
    assert result["curve"][-1]["updates"] > 0 or method == "filtered_bc" and result["curve"][-1]["steps"] == 0
    # The rates are the scripted demonstrator's and the curve's, not just numbers in [0, 1].
    assert result["demo_success_rate"] == _demonstrator_success_rate("cup_to_rack", seed=0, demos=2)
    warmup, online = result["curve"]
    assert result["offline_start"] == float(warmup["success"]) and result["final_20"] == float(online["success"])
    assert all(1 <= c["steps"] <= 40 for c in result["curve"])
    assert result["setup"] == {"demos": 2, "warmup": 1, "online": 1, "profile": "cpu_demo", "overrides": {
        "learner.schedule.offline_policy_steps": 20, "learner.schedule.offline_critic_steps": 10}}
    # What ran, fully resolved, and by which code: the method's own settings over profile and overrides.
    assert result["config"]["learner"]["schedule"]["offline_critic_steps"] == 10
    assert result["config"]["learner"]["policy_update"]["rule"] == study.METHODS[method].get("policy_update.rule", "distill")
    assert result["code_version"].startswith("git:") or result["code_version"] == "unknown"


def test_study_paper_method_is_the_paper_profile_without_its_sizes():
    from parl_robot.config import load_config

    study = _load("finetune_study")
    paper = load_config(task="cup_to_rack", overlays=["paper"]).to_dict()["learner"]
    for key, value in study.PAPER_ALGORITHM.items():
        section = paper
        for part in key.split("."):
            section = section[part]
        assert section == value, key
    assert set(study.METHOD_LABELS) <= set(study.METHODS)


def test_finetune_study_with_the_scripted_operator_records_its_steps():
    study = _load("finetune_study")
    result = study.run("cup_to_rack", "parl_interventions", seed=0, demos=2, warmup=1, online=2, profile="cpu_demo",
                       overrides={"learner.schedule.offline_policy_steps": 5, "learner.schedule.offline_critic_steps": 5,
                                  "learner.schedule.warmup_critic_steps": 5})
    warmup, *online = result["curve"]
    assert warmup["intervention_steps"] == 0  # the offline start is the policy's alone
    # A policy barely trained (5 BC steps) stalls: the operator takes over, at most 2 x 10 steps per episode.
    assert all(0 < c["intervention_steps"] <= 20 for c in online), online


def _demonstrator_success_rate(task, seed, demos):
    """The scripted demonstrator replayed on the study's demo seeds, outside the study."""
    from parl_robot.config import load_config
    from parl_robot.sim.demonstrator import ScriptedDemonstrator
    from parl_robot.sim.env import WidowXSimEnv

    cfg = load_config(task=task, overlays=["cpu_demo"])
    env, demonstrator, successes = WidowXSimEnv(cfg), ScriptedDemonstrator(cfg, seed=seed), 0
    for index in range(demos):
        obs, _ = env.reset(seed=seed * 100_003 + index, options={"phase": "demo"})
        demonstrator.reset()
        for _ in range(cfg.control.max_episode_steps):
            obs, _, terminal, truncated, _ = env.step(demonstrator.act(obs["state"]))
            if terminal or truncated:
                break
        successes += int(terminal)
    env.close()
    return successes / demos


def test_finetune_study_collect_rebuilds_the_report_from_saved_runs(monkeypatch, tmp_path):
    import json

    study = _load("finetune_study")
    runs_dir = tmp_path / "study.runs"
    runs_dir.mkdir()
    setup = {"demos": 10, "warmup": 2, "online": 3, "profile": "cpu_demo", "overrides": {}}
    for method, seed, successes in [("filtered_bc", 0, [0, 1, 1, 1, 1]), ("parl_diffusion", 1, [0, 0, 1, 1, 1]),
                                    ("parl_diffusion", 0, [1, 0, 0, 0, 1])]:
        curve = [{"episode": i, "phase": "warmup" if i < 2 else "online", "success": bool(x), "wall_clock_s": i}
                 for i, x in enumerate(successes)]
        run = {"method": method, "seed": seed, "task": "cup_to_rack", "setup": setup, "curve": curve,
               "offline_start": sum(successes[:2]) / 2, "final_20": sum(successes[2:]) / 3}
        (runs_dir / f"{method}_seed{seed}.json").write_text(json.dumps(run))
    monkeypatch.setattr(sys, "argv", ["finetune_study.py", "--collect", "--out", str(tmp_path / "study")])
    study.main()
    report = json.loads((tmp_path / "study.json").read_text())
    assert [(r["method"], r["seed"]) for r in report["runs"]] == [("parl_diffusion", 0), ("parl_diffusion", 1), ("filtered_bc", 0)]
    assert report["summary"]["parl_diffusion"]["seeds"] == [0, 1]
    assert report["paired_vs_baselines"]["parl_diffusion"]["filtered_bc"]["seeds"] == [0]  # seed 1 has no partner
    assert report["summary"]["parl_diffusion"]["gain_points"] == pytest.approx(100 * ((1 + 1 / 3) / 2 - (0 + 0.5) / 2))
    assert report["summary"]["parl_diffusion"]["online_successes_per_seed"] == pytest.approx((1 + 3) / 2)
    assert study.online_blocks(report["runs"][:2], block=1) == pytest.approx([0.5, 0.5, 1.0])  # equal-episode comparison
    assert study.online_blocks(report["runs"][:2], block=2) == pytest.approx([0.5])  # partial last block left out
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "study.png").stat().st_size > 0

    run["setup"] = {**setup, "online": 100}  # a run from another set-up is not averaged in
    (runs_dir / "no_local_seed0.json").write_text(json.dumps({**run, "method": "no_local"}))
    with pytest.raises(SystemExit, match="different set-ups"):
        study.main()

    (runs_dir / "no_local_seed0.json").unlink()  # the same set-up, but a run made by other code
    (runs_dir / "rerank_only_seed0.json").write_text(json.dumps({**run, "setup": setup, "method": "rerank_only",
                                                                  "code_version": "git:abc+dirty.1234"}))
    with pytest.raises(SystemExit, match="2 code versions .*git:abc\\+dirty.1234: rerank_only seed 0.*unrecorded"):
        study.main()
    monkeypatch.setattr(sys, "argv", [*sys.argv, "--allow-mixed-versions"])
    study.main()
    assert json.loads((tmp_path / "study.json").read_text())["code_versions"] == ["git:abc+dirty.1234", "unrecorded"]


def _online_run(method, seed, online, warmup=(False,)):
    curve = [{"phase": "warmup", "success": x} for x in warmup] + [{"phase": "online", "success": bool(x)} for x in online]
    return {"method": method, "seed": seed, "curve": curve}


def test_paired_blocks_compare_methods_seed_by_seed_at_equal_episodes():
    study = _load("finetune_study")
    ours = [_online_run("parl_diffusion", 0, [1, 1, 0, 0]), _online_run("parl_diffusion", 1, [1, 0, 1, 1]),
            _online_run("parl_diffusion", 2, [0, 0, 0, 0]), _online_run("parl_diffusion", 7, [1, 1, 1, 1])]
    theirs = [_online_run("filtered_bc", 0, [0, 1, 1, 1]), _online_run("filtered_bc", 1, [1, 0, 0, 0]),
              _online_run("filtered_bc", 2, [0, 0, 1, 0, 1])]  # seed 7 has no partner: left out
    comparison = study.paired_blocks(ours, theirs, block=2, resamples=2000)
    assert comparison["seeds"] == [0, 1, 2]
    first, second = comparison["blocks"]  # episodes 1-2, 3-4; seed 2's longer run is cut to the shared length
    assert first["online_episodes"] == "1-2" and first["difference_points"] == pytest.approx(100 * (0.5 + 0 + 0) / 3, abs=0.1)
    assert (first["seeds_ahead"], first["seeds_equal"], first["seeds_behind"]) == (1, 2, 0)
    assert second["difference_points"] == pytest.approx(100 * (-1 + 1 - 0.5) / 3, abs=0.1)
    assert (second["seeds_ahead"], second["seeds_equal"], second["seeds_behind"]) == (1, 0, 2)
    for block in comparison["blocks"]:  # the interval holds the mean and spans only what resampled seeds allow
        low, high = block["ci95_points"]
        assert low <= block["difference_points"] <= high
    assert second["ci95_points"][0] >= -100 and second["ci95_points"][1] <= 100 and second["ci95_points"][0] < 0 < second["ci95_points"][1]
    assert study.paired_blocks(ours, [_online_run("filtered_bc", 5, [1, 1])]) is None

    paired = study.paired_against_baselines(ours + theirs, ["parl_diffusion", "filtered_bc"])
    assert list(paired) == ["parl_diffusion"] and list(paired["parl_diffusion"]) == ["filtered_bc"]
    assert paired["parl_diffusion"]["filtered_bc"]["blocks"] == []  # 4 online episodes: no full block of 20

    ablation = [_online_run("no_local", 0, [0, 0, 0, 0]), _online_run("no_local", 1, [1, 1, 1, 1])]
    ablations = study.paired_ablations(ours + theirs + ablation, ["parl_diffusion", "filtered_bc", "no_local"])
    assert list(ablations) == ["no_local"] and ablations["no_local"]["seeds"] == [0, 1]  # against the full method


def test_finetune_study_rejects_unknown_methods(monkeypatch, tmp_path):
    study = _load("finetune_study")
    monkeypatch.setattr(sys, "argv", ["finetune_study.py", "--methods", "magic", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="unknown method"):
        study.main()


def test_finetune_study_set_overrides_are_typed_and_checked(monkeypatch, tmp_path):
    from parl_robot.config import parse_overrides

    study = _load("finetune_study")
    overrides = parse_overrides(["learner.critic.cql_alpha=1.5", "learner.optimizer.local_steps=0",
                                 "learner.optimizer.include_dataset_action=false"])
    assert overrides == {"learner.critic.cql_alpha": 1.5, "learner.optimizer.local_steps": 0,
                         "learner.optimizer.include_dataset_action": False}
    learner = study.study_config("cup_to_rack", "parl_diffusion", 3, 20, "study", overrides).learner
    assert (learner.critic.cql_alpha, learner.optimizer.local_steps, learner.optimizer.include_dataset_action,
            learner.seed) == (1.5, 0, False, 3)
    no_local = study.study_config("cup_to_rack", "no_local", 0, 20, "study", {"learner.optimizer.local_steps": 5})
    assert no_local.learner.optimizer.local_steps == 0  # the method wins over --set
    for items, fragment in ((["learner.warp_speed=9"], "unknown key 'learner.warp_speed'"),
                            (["learner.optimizer.local_steps=many"],
                             "'learner.optimizer.local_steps' must be an integer, got 'many'")):
        monkeypatch.setattr(sys, "argv", ["finetune_study.py", "--methods", "parl_diffusion", "--out", str(tmp_path / "x"),
                                          "--set", *items])
        with pytest.raises(SystemExit, match=fragment):
            study.main()


def test_openvla_benchmark_tiny_cpu(monkeypatch, tmp_path):
    pytest.importorskip("peft")
    import json

    bench = _load("openvla")
    out = tmp_path / "openvla.json"
    monkeypatch.setattr(sys, "argv", ["openvla.py", "--tiny", "--device", "cpu", "--repeats", "2", "--modes", "bf16",
                                      "--decodings", "dynamic", "static", "--batch", "2", "--out", str(out)])
    bench.main()  # the compiled decoding compiles for minutes on a CPU: measured by hand, not here
    result = json.loads(out.read_text())
    row = result["rows"][0]
    assert row["mode"] == "bf16" and [(s["decoding"], s["samples"]) for s in row["sampling"]] == [
        ("dynamic", 8), ("dynamic", 16), ("static", 8), ("static", 16)]
    assert row["lora_step"]["trainable_parameters"] > 0 and all(s["p99_ms"] > 0 for s in row["sampling"])
    assert all(s["operator_calls_top_level"] > 100 and s["compiled_kernels"] == 0 for s in row["sampling"])
    kept, checkpointed = row["lora_step"]["kept_activation_mib"], row["lora_step_checkpointed"]["kept_activation_mib"]
    assert 0 < checkpointed < kept


def test_acting_latency_pairs_each_action_with_the_tick_that_produced_it():
    latency = _load("acting_latency")
    records = [
        {"t": 10.0, "topic": "learner/timing", "data": {"step": 0, "tick_time": 9.9, "observation_stamp": 9.8,
                                                        "observation_arrival": 9.83, "compute_ms": 50}},
        {"t": 10.05, "topic": "robot/action", "data": {"step": 0}},
        # The next episode's step 0, ticked later: its action pairs with its own tick, not the first.
        {"t": 20.0, "topic": "learner/timing", "data": {"step": 0, "tick_time": 19.9, "observation_stamp": 19.7, "compute_ms": 60}},
        {"t": 20.1, "topic": "robot/action", "data": {"step": 0}},
        {"t": 30.0, "topic": "robot/action", "data": {"step": 5}},  # no tick record: not paired
    ]
    rows = latency.pair_steps(records)
    assert [round(r["image_to_action_ms"]) for r in rows] == [250, 400]
    assert [r["compute_ms"] for r in rows] == [50, 60]
    assert [round(r["tick_to_action_ms"]) for r in rows] == [150, 200]
    # The legs: the observation's way (30 ms), compute (50), the action's way (150 - 50); no arrival: NaN.
    assert round(rows[0]["observation_transport_ms"]) == 30 and round(rows[0]["action_transport_ms"]) == 100
    assert round(rows[0]["pipeline_ms"]) == 180 and np.isnan(rows[1]["pipeline_ms"])


def test_batched_acting_times_one_tick_for_several_arms_both_ways(monkeypatch, tmp_path):
    import json

    bench = _load("batched_acting")
    out = tmp_path / "batched_acting.json"
    monkeypatch.setattr(sys, "argv", ["batched_acting.py", "--device", "cpu", "--overlay", "cpu_demo", "--observations",
                                      "state", "--arms", "1", "3", "--repeats", "2", "--out", str(out)])
    bench.main()
    result = json.loads(out.read_text())
    assert [(row["observation"], row["arms"]) for row in result["rows"]] == [("state", 1), ("state", 3)]
    from parl_robot.config import load_config

    optimizer = load_config(task="cup_to_rack", overlays=["cpu_demo"]).learner.optimizer  # what it ran
    assert result["optimizer"] == {"num_samples": optimizer.num_samples, "num_kept": optimizer.num_kept,
                                   "local_steps": optimizer.local_steps}
    for row in result["rows"]:
        assert 0 < row["batched_p50_ms"] <= row["batched_p99_ms"] and 0 < row["per_arm_p50_ms"] <= row["per_arm_p99_ms"]
        assert row["speedup_p50"] == round(row["per_arm_p50_ms"] / row["batched_p50_ms"], 2)
    monkeypatch.setattr(sys, "argv", ["batched_acting.py", "--arms", "0", "--out", str(out)])
    with pytest.raises(SystemExit, match="--arms: each count must be >= 1"):
        bench.main()
