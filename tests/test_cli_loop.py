"""``restate-bridge run --loop``: which event loop the bridge runs on."""

from __future__ import annotations

import asyncio

import pytest

from bridge.cli import loop_factory, main

uvloop = pytest.importorskip("uvloop")  # an optional dependency


def test_asyncio_is_asyncio_own_loop() -> None:
    assert loop_factory("asyncio") is None


@pytest.mark.parametrize("choice", ["auto", "uvloop"])
def test_uvloop_when_installed(choice: str) -> None:
    factory = loop_factory(choice)
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
        assert isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()


def test_an_unknown_loop_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "--routes", "routes.toml", "--loop", "trio"])
    assert exc.value.code == 2
    assert "invalid choice: 'trio'" in capsys.readouterr().err
