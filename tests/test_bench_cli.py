"""``ntalab bench``'s options: the loads asked for, in order, and bad ones refused before
anything is built or booted."""

from __future__ import annotations

import pytest

from lab.bench.loads import BulkLoad, FrameLoad, WebLoad
from lab.cli import bench_loads, main, parser


def loads_of(*argv: str) -> list[str]:
    return [ld.name for ld in bench_loads(parser().parse_args(["bench", *argv]))]


def test_every_load_by_default_in_the_order_they_run() -> None:
    args = parser().parse_args(["bench"])
    got = bench_loads(args)
    assert [ld.name for ld in got] == [
        "fixed", "fixed-64", "fixed-512", "fixed-1514", "filtered", "two-readers", "max", "web",
        "bulk",
    ]  # fmt: skip
    assert got[0] == FrameLoad("fixed", 20000, 2000.0)
    assert got[1] == FrameLoad("fixed-64", 10000, 2000.0, 64)
    assert got[4] == FrameLoad("filtered", 20000, 2000.0, keep_one_in=10)
    assert got[5] == FrameLoad("two-readers", 20000, 2000.0, readers=2)
    assert got[6] == FrameLoad("max", 60000, None)
    assert (got[7], got[8]) == (WebLoad(600), BulkLoad(24, 4))
    assert args.rounds == 3 and args.kernel == "debian-6.1"


def test_a_selection_and_another_sweep() -> None:
    assert loads_of("--loads", "bulk,fixed") == ["fixed", "bulk"]
    short = bench_loads(
        parser().parse_args(["bench", "--loads", "two-readers", "--frames", "4000"])
    )
    assert short == (FrameLoad("two-readers", 4000, 2000.0, readers=2),)
    assert loads_of("--sweep-sizes", "128,1024", "--loads", "fixed-128,fixed-1024") == [
        "fixed-128", "fixed-1024",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--loads", "fixed,huge"], "--loads: unknown load 'huge'; known: fixed, fixed-64"),
        (["--loads", ","], "--loads: no load given"),
        (["--sweep-sizes", "64,big"], "--sweep-sizes takes a comma list of bytes"),
        (["--sweep-sizes", "40"], "--sweep-sizes: 40 is not a frame size (60..1514)"),
        (["--rounds", "0"], "--rounds must be positive, not 0"),
        (["--bulk-mib", "-1"], "--bulk-mib must be positive, not -1"),
        (["--sniffers", "none,nta"], "--sniffers: unknown sniffer 'nta'"),
    ],
)
def test_bad_options_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", *argv]) == 2
    assert capsys.readouterr().err.startswith(f"ntalab: error: {message}")


def test_each_clocksource_is_a_guest_command_line_and_no_other_is_taken(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from lab.bench import CLOCKSOURCES

    assert parser().parse_args(["bench"]).clocksource == "default"
    for name in CLOCKSOURCES:
        assert parser().parse_args(["bench", "--clocksource", name]).clocksource == name
    assert (CLOCKSOURCES["default"], CLOCKSOURCES["tsc"]) == ((), ("tsc=reliable",))
    with pytest.raises(SystemExit):
        parser().parse_args(["bench", "--clocksource", "hpet"])
    assert "invalid choice: 'hpet'" in capsys.readouterr().err
