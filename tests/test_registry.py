"""The one registry type: register where defined, one lookup with the valid names and the
closest one, the same check in recipe schemas; and every registry of the project uses it."""

import pytest
from pydantic import ValidationError

from cft_rl.config import Section
from cft_rl.errors import UserError
from cft_rl.registry import Registry, closest_name


def test_register_get_and_what_an_unknown_name_says():
    table: Registry[object] = Registry("widget")

    @table.register("round")
    def round_widget():
        return "o"

    table.register("round")(round_widget)  # the same object again: fine (a re-import)
    with pytest.raises(ValueError, match="widget 'round' is already registered"):
        table.register("round")(lambda: "x")
    assert table.get("round") is round_widget and "round" in table and list(table) == ["round"]
    table.add("square", object())
    with pytest.raises(UserError, match=r"unknown widget 'rund' \(did you mean 'round'\?\); "
                                        r"valid widgets: round, square"):  # fmt: skip
        table.get("rund")
    with pytest.raises(UserError, match=r"unknown widget 'zzz'; valid"):
        table.get("zzz")  # nothing close: no guess


def test_a_schema_field_names_a_registrys_choices():
    table: Registry[int] = Registry("mode")
    table.add("fast", 1)

    class Settings(Section):
        mode: table.choice("auto") = "auto"  # type: ignore[valid-type]

    assert Settings(mode="fast").mode == "fast" and Settings().mode == "auto"
    with pytest.raises(ValidationError, match=r"unknown mode 'fsat' \(did you mean 'fast'\?\)"):
        Settings(mode="fsat")
    table.add("slow", 2)  # registered after the schema was written: valid at once
    assert Settings(mode="slow").mode == "slow"


def test_closest_name_needs_a_near_miss():
    assert closest_name("entropy_top", ["entropy_topk", "rho1"]) == "entropy_topk"
    assert closest_name("banana", ["entropy_topk", "rho1"]) is None


def test_every_registry_of_the_project_is_a_registry():
    from cft_rl.generation.kv_cache import KV_CACHE_LAYOUTS
    from cft_rl.grpo.algos import ADVANTAGE_ESTIMATORS, KL_PENALTIES, LOSS_AGG_MODES, POLICY_LOSSES
    from cft_rl.identify.decoders import DECODERS
    from cft_rl.sft.losses import LOSSES

    registries = [
        KV_CACHE_LAYOUTS, ADVANTAGE_ESTIMATORS, KL_PENALTIES, LOSS_AGG_MODES, POLICY_LOSSES,
        DECODERS, LOSSES,
    ]  # fmt: skip
    assert all(isinstance(r, Registry) and len(r) > 0 for r in registries)


def test_no_module_keeps_its_own_copy_of_the_lookup():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "cft_rl"
    copies = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if path.name != "registry.py"
        and any(s in path.read_text() for s in ("did you mean", "get_close_matches", "registrar"))
    ]
    assert copies == []
