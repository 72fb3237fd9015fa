"""Incidents of one camera, probe by probe: one alert per incident, no flapping, stable ids."""

from __future__ import annotations

import json

import pytest

from agents.probe.health import UNAVAILABLE, CameraHealth, Change, Outcome
from monitor.alerts import incident_id
from monitor.registry import RULES

S = 1_000_000_000
UP, DOWN = Outcome(True), Outcome(False)
FROZEN, BLACK, COVERED = Outcome(True, "frozen"), Outcome(True, "black"), Outcome(True, "covered")


def run(health: CameraHealth, outcomes: list[Outcome], start: int = 0) -> list[list[tuple[str, str]]]:
    """(kind, rule) of the changes after each probe, probes 60 s apart."""
    return [
        [(c.kind, c.incident.rule_id) for c in health.update(o, (start + i * 60) * S)]
        for i, o in enumerate(outcomes)
    ]


def test_every_rule_the_probe_raises_is_in_the_catalogue() -> None:
    assert {UNAVAILABLE, "stream.frozen", "stream.black", "stream.covered"} <= set(RULES)


def test_unavailable_is_raised_at_the_first_failure_once_and_cleared_when_back() -> None:
    h = CameraHealth("entrance", "depot-7/gw-1")
    assert run(h, [UP, DOWN, DOWN, DOWN, UP, UP]) == [
        [], [("raise", UNAVAILABLE)], [], [], [("clear", UNAVAILABLE)], [],
    ]  # fmt: skip


def test_image_problems_need_two_probes_in_a_row() -> None:
    h = CameraHealth("entrance", "depot-7/gw-1")
    # One bad window between good ones (a light switched off, a lorry in front) never pages.
    assert run(h, [FROZEN, UP, FROZEN, UP, BLACK, UP]) == [[]] * 6
    assert run(h, [FROZEN, FROZEN, FROZEN, FROZEN, UP]) == [
        [], [("raise", "stream.frozen")], [], [], [("clear", "stream.frozen")],
    ]  # fmt: skip


def test_one_problem_turning_into_another_is_a_new_incident() -> None:
    h = CameraHealth("entrance", "depot-7/gw-1")
    assert run(h, [COVERED, COVERED, BLACK, BLACK]) == [
        [], [("raise", "stream.covered")], [("clear", "stream.covered")], [("raise", "stream.black")],
    ]  # fmt: skip


def test_a_failed_probe_leaves_image_incidents_open_and_restarts_their_streaks() -> None:
    h = CameraHealth("entrance", "depot-7/gw-1")
    assert run(h, [BLACK, BLACK, DOWN, BLACK, UP]) == [
        [], [("raise", "stream.black")], [("raise", UNAVAILABLE)], [("clear", UNAVAILABLE)],
        [("clear", "stream.black")],
    ]  # fmt: skip
    # A streak interrupted by a failed probe starts again.
    assert run(h, [FROZEN, DOWN, FROZEN]) == [[], [("raise", UNAVAILABLE)], [("clear", UNAVAILABLE)]]
    assert h.streak("stream.frozen") == 1


def test_event_ids_are_stable_per_incident_and_differ_between_incidents() -> None:
    def raised(health: CameraHealth, outcomes: list[Outcome], start: int) -> list[Change]:
        return [
            c
            for i, o in enumerate(outcomes)
            for c in health.update(o, (start + i * 60) * S)
            if c.kind == "raise"
        ]

    first = raised(CameraHealth("entrance", "depot-7/gw-1"), [FROZEN, FROZEN], 1000)
    again = raised(CameraHealth("entrance", "depot-7/gw-1"), [FROZEN, FROZEN], 1000)
    later = raised(CameraHealth("entrance", "depot-7/gw-1"), [FROZEN, FROZEN], 5000)
    other = raised(CameraHealth("yard", "depot-7/gw-1"), [FROZEN, FROZEN], 1000)
    assert first[0].incident == again[0].incident
    # The incident started at its first bad probe, and its id says so.
    assert first[0].incident.since_ns == 1000 * S and first[0].probes == 2
    assert first[0].incident.event_id == incident_id("stream.frozen", "depot-7/gw-1", "entrance", 1000 * S)
    assert len({first[0].incident.event_id, later[0].incident.event_id, other[0].incident.event_id}) == 3


def test_state_survives_a_restart_through_json() -> None:
    h = CameraHealth("entrance", "depot-7/gw-1")
    run(h, [BLACK, BLACK, DOWN])  # black is open, and so is unavailable
    saved = json.loads(json.dumps(h.state()))
    resumed = CameraHealth("entrance", "depot-7/gw-1")
    resumed.restore(saved)
    assert resumed.open == h.open and set(resumed.open) == {"stream.black", UNAVAILABLE}
    # Still black after the restart: the open incident is not raised again, only unavailable clears.
    assert run(resumed, [BLACK, BLACK, FROZEN], 600) == [
        [("clear", UNAVAILABLE)], [], [("clear", "stream.black")],
    ]  # fmt: skip
    # A streak is resumed too: one more frozen probe after the restart is the second in a row.
    h = CameraHealth("entrance", "depot-7/gw-1")
    run(h, [FROZEN])
    resumed = CameraHealth("entrance", "depot-7/gw-1")
    resumed.restore(json.loads(json.dumps(h.state())))
    assert run(resumed, [FROZEN], 600) == [[("raise", "stream.frozen")]]


@pytest.mark.parametrize(
    "state",
    [
        {"open": []},
        {"open": {"stream.exploded": {"event_id": "x", "since_ns": 1}}},
        {"open": {"stream.black": {"event_id": 5, "since_ns": 1}}},
        {"open": {"stream.black": {"event_id": "x", "since_ns": True}}},
        {"streaks": {"stream.black": [1]}},
        {"streaks": {"stream.black": [1, -5]}},
    ],
)
def test_a_damaged_state_is_refused_whole(state: dict[str, object]) -> None:
    h = CameraHealth("entrance", "depot-7/gw-1")
    run(h, [DOWN])
    before = h.state()
    with pytest.raises(ValueError, match="camera entrance"):
        h.restore(state)
    assert h.state() == before


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="needs up=True"):
        Outcome(False, "black")
    with pytest.raises(ValueError, match="one of black, covered, frozen"):
        Outcome(True, "blurry")
    with pytest.raises(ValueError, match="at least 1"):
        CameraHealth("x", "y", image_after=0)
