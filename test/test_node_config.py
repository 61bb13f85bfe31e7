"""Node settings come from the graph's parameters by name: a parameter of the same name as a
config field sets it (no per-node copy of the list), converted to the field's type."""

from __future__ import annotations

import dataclasses

from terrain_odt.pipeline import node_config as nc
from terrain_odt.pipeline.bridge import BridgeConfig
from terrain_odt.pipeline.labeling import LabelerConfig
from terrain_odt.ros.graph import node_spec


def test_every_same_named_parameter_reaches_the_config() -> None:
    for node, cls in (("terrain_labeler", LabelerConfig), ("odt_bridge", BridgeConfig)):
        params = {p.name for p in node_spec(node).params}
        shared = params & {f.name for f in dataclasses.fields(cls)}
        assert len(shared) > 10, (node, shared)
        got = nc.same_named(cls, nc.effective_params(node))
        assert set(got) == shared


def test_overrides_reach_the_configs() -> None:
    lab = nc.labeler_config(
        nc.effective_params("terrain_labeler", overrides={"terrain_labeler": {"settle_s": 3.5}})
    )
    assert lab.settle_s == 3.5 and isinstance(lab.settle_s, float)
    br = nc.bridge_config(
        nc.effective_params(
            "odt_bridge",
            overrides={
                "odt_bridge": {"rollback_tolerance": 0.05, "checkpoint_every": 7, "seed": 3}
            },
        )
    )
    assert br.rollback_tolerance == 0.05 and br.checkpoint_every == 7 and br.seed == 3
