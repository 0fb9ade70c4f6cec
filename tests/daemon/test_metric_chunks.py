"""Packed metric chunks: what a row holds, read back bit for bit, and what thinning keeps."""

from __future__ import annotations

import math
from array import array

from hypothesis import given
from hypothesis import strategies as st

from tunewatch.daemon.events import MetricsLogged
from tunewatch.daemon.metric_chunks import PackedChunk, pack_points, unpack


def point(seq: int, step: int, **metrics: float) -> MetricsLogged:
    return MetricsLogged("run", step, metrics, "log.jsonl", 1.7e9 + step, seq)


def dense(n: int, loss: list[float]) -> PackedChunk:
    return PackedChunk(
        "log.jsonl",
        100,
        array("q", range(n)),
        array("d", [1.7e9 + i for i in range(n)]),
        {"loss": (array("d", loss), None)},
    )


def round_trip(chunk: PackedChunk) -> PackedChunk:
    return unpack(
        chunk.source, chunk.first_seq, chunk.names_text(), chunk.data(), chunk.seqs_data()
    )


def test_a_row_reads_back_every_point_with_non_finite_values_intact() -> None:
    chunk = pack_points(
        [point(7, 1, loss=2.0), point(8, 2, loss=-math.inf, eval_loss=math.nan), point(9, 3)]
    )
    got = [(seq, step, repr(sorted(m.items()))) for seq, step, _, m in round_trip(chunk).points()]
    assert got == [
        (7, 1, "[('loss', 2.0)]"),
        (8, 2, "[('eval_loss', nan), ('loss', -inf)]"),
        (9, 3, "[]"),
    ]
    assert round_trip(chunk).last_seq == 9


def test_thinning_keeps_every_nth_point_and_the_first_and_last() -> None:
    n = 100
    loss = [2.0 - i / 1000 for i in range(n)]  # falls steadily: lowest at the end
    thin = dense(n, loss).thinned(10)
    seqs = [seq for seq, *_ in thin.points()]
    assert seqs == [100 + i for i in (*range(0, 100, 10), 99)]
    assert thin.last_seq == 199


def test_thinning_keeps_non_finite_values_and_each_metrics_extremes() -> None:
    n = 50
    loss = [1.0] * n
    loss[13] = math.nan
    loss[27] = 0.25  # the lowest
    loss[33] = 9.0  # the highest
    thin = dense(n, loss).thinned(20)
    kept = {seq - 100: m["loss"] for seq, _, _, m in round_trip(thin).points()}
    assert sorted(kept) == [0, 13, 20, 27, 33, 40, 49]
    assert math.isnan(kept[13]) and kept[27] == 0.25 and kept[33] == 9.0


def test_thinning_twice_keeps_the_original_seqs_and_a_rare_metric() -> None:
    chunk = pack_points(
        [point(s, s, loss=1.0) if s != 5 else point(s, s, eval_loss=3.0) for s in range(1, 31)]
    )
    once = round_trip(chunk.thinned(4))
    assert "eval_loss" in once.columns  # extremes of eval_loss: its only point, seq 5
    twice = round_trip(once.thinned(100))
    assert [seq for seq, *_ in twice.points()] == [1, 5, 30]
    assert [seq for seq, *_ in round_trip(pack_points([point(1, 1, loss=1.0)])).points()] == [1]


names = st.sampled_from(["loss", "eval_loss", "learning_rate", "grad_norm", "rewards/chosen"])
logged_points = st.lists(
    st.tuples(st.integers(0, 2**63 - 1), st.dictionaries(names, st.floats(), max_size=4)),
    min_size=1,
    max_size=60,
)


def as_text(points: object) -> str:
    """NaN-safe equality (repr(nan) == "nan"), metrics compared in name order."""
    if isinstance(points, dict):
        return as_text(sorted(points.items()))
    if isinstance(points, list | tuple):
        return "[" + ", ".join(as_text(p) for p in points) + "]"
    return repr(points)


@given(logged_points, st.integers(1, 2**40))
def test_any_points_read_back_exactly(raw: list[tuple[int, dict[str, float]]], first: int) -> None:
    points = [point(first + i, step, **metrics) for i, (step, metrics) in enumerate(raw)]
    chunk = round_trip(pack_points(points))
    assert as_text(list(chunk.points())) == as_text(
        [(p.seq, p.step, p.time, dict(p.metrics)) for p in points]
    )


@given(logged_points, st.integers(1, 50))
def test_thinning_keeps_a_subset_with_every_non_finite_value(
    raw: list[tuple[int, dict[str, float]]], keep_every: int
) -> None:
    points = [point(1 + i, step, **metrics) for i, (step, metrics) in enumerate(raw)]
    full = {seq: (step, metrics) for seq, step, _, metrics in pack_points(points).points()}
    thin = list(round_trip(pack_points(points).thinned(keep_every)).points())
    kept = {seq: (step, metrics) for seq, step, _, metrics in thin}
    assert as_text(kept) == as_text({seq: full[seq] for seq in kept})  # unchanged points
    assert {1, len(points)} <= kept.keys()
    non_finite = {s for s, (_, m) in full.items() if any(not math.isfinite(v) for v in m.values())}
    assert non_finite <= kept.keys()
    for name in {n for _, m in full.values() for n in m}:
        finite = [m[name] for _, m in full.values() if name in m and math.isfinite(m[name])]
        kept_values = [m[name] for _, m in kept.values() if name in m]
        if finite:
            assert min(finite) in kept_values and max(finite) in kept_values
