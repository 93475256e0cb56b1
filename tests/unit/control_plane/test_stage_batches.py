"""StageBatcher: requests that come together go through its stages one
stage at a time; a stage's refusal fails its own request only."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from control_plane.apiserver.stage_batches import StageBatcher


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def stage(self, name: str, refuse: str = "") -> Callable[[str], None]:
        def run(item: str) -> None:
            self.seen.append((name, item))
            if item == refuse:
                raise ValueError(f"{name} refuses {item}")

        return run


def test_items_that_come_together_go_through_one_stage_after_another() -> None:
    rec = Recorder()
    sizes: list[int] = []
    batcher: StageBatcher[str] = StageBatcher([rec.stage("a"), rec.stage("b")], observe_size=sizes.append)

    async def main() -> None:
        await asyncio.gather(*(batcher.run(item) for item in ("x", "y", "z")))
        await batcher.run("alone")

    asyncio.run(main())
    assert rec.seen[:6] == [("a", "x"), ("a", "y"), ("a", "z"), ("b", "x"), ("b", "y"), ("b", "z")]
    assert sizes == [3, 1]


def test_a_refused_item_fails_alone_and_goes_no_further() -> None:
    rec = Recorder()
    batcher: StageBatcher[str] = StageBatcher([rec.stage("a", refuse="y"), rec.stage("b")])

    async def main() -> list[object]:
        return await asyncio.gather(*(batcher.run(item) for item in ("x", "y", "z")), return_exceptions=True)

    results = asyncio.run(main())
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], ValueError) and str(results[1]) == "a refuses y"
    assert ("b", "y") not in rec.seen and ("b", "x") in rec.seen and ("b", "z") in rec.seen


def test_a_coroutine_stage_is_awaited_for_each_item_in_turn() -> None:
    order: list[str] = []

    async def slow(item: str) -> None:
        order.append(f"start {item}")
        await asyncio.sleep(0)
        order.append(f"end {item}")

    batcher: StageBatcher[str] = StageBatcher([slow])

    async def main() -> None:
        await asyncio.gather(batcher.run("x"), batcher.run("y"))

    asyncio.run(main())
    assert order == ["start x", "end x", "start y", "end y"]


def test_with_one_client_nothing_waits_for_others() -> None:
    rec = Recorder()
    batcher: StageBatcher[str] = StageBatcher([rec.stage("a")], max_linger=30.0)

    async def main() -> None:
        for item in ("x", "y", "z"):
            await asyncio.wait_for(batcher.run(item), 5)

    asyncio.run(main())
    assert [item for _, item in rec.seen] == ["x", "y", "z"]


def test_while_others_are_outstanding_a_batch_waits_for_them_up_to_the_linger() -> None:
    rec = Recorder()
    batcher: StageBatcher[str] = StageBatcher([rec.stage("a")], max_linger=0.2)

    async def client(item: str, answered: asyncio.Event) -> None:
        await batcher.run(item)
        with batcher.outstanding():  # its write, until it is answered
            await answered.wait()

    async def main() -> tuple[int, float, float]:
        answered = asyncio.Event()
        first = [asyncio.create_task(client(f"first-{i}", answered)) for i in range(3)]
        while len(rec.seen) < 3:
            await asyncio.sleep(0.001)
        # Three were outstanding: the next batch expects three. One comes
        # while the others are still outstanding, so it goes at once...
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await batcher.run("second-0")
        quick = loop.time() - t0
        answered.set()
        await asyncio.gather(*first)
        # ...then, with nothing outstanding, one alone waits for the others
        # it expects, until the linger runs out.
        t0 = loop.time()
        await batcher.run("third-0")
        return len(rec.seen), quick, loop.time() - t0

    seen, quick, lingered = asyncio.run(main())
    assert seen == 5
    assert quick < 0.15
    assert lingered >= 0.19


def two_callers_one_gone(rec: Recorder, gone: str, refuse: bool) -> dict[str, object]:
    """x and y through [a gate, "b"]; once x is at the gate, `gone`'s caller
    is cancelled and the gate opens (refusing everyone if `refuse`). What
    each caller got."""

    async def main() -> dict[str, object]:
        opened = asyncio.Event()

        async def gate(item: str) -> None:
            rec.seen.append(("gate", item))
            await opened.wait()
            if refuse:
                raise ValueError(f"refused {item}")

        batcher: StageBatcher[str] = StageBatcher([gate, rec.stage("b")])
        callers = {item: asyncio.create_task(batcher.run(item)) for item in ("x", "y")}
        while ("gate", "x") not in rec.seen:
            await asyncio.sleep(0.001)
        callers[gone].cancel()
        opened.set()
        results = await asyncio.gather(*callers.values(), return_exceptions=True)
        return dict(zip(callers, results, strict=True))

    return asyncio.run(main())


def test_a_cancelled_caller_is_left_out_of_later_stages() -> None:
    rec = Recorder()
    got = two_callers_one_gone(rec, gone="y", refuse=False)
    assert got["x"] is None and isinstance(got["y"], asyncio.CancelledError)
    assert ("b", "x") in rec.seen and ("b", "y") not in rec.seen


def test_a_caller_gone_while_its_stage_runs_does_not_disturb_the_others() -> None:
    rec = Recorder()
    # x's caller goes while x's stage is running; the stage then refuses x (and y).
    got = two_callers_one_gone(rec, gone="x", refuse=True)
    assert isinstance(got["x"], asyncio.CancelledError)
    assert isinstance(got["y"], ValueError) and str(got["y"]) == "refused y"
    assert ("gate", "y") in rec.seen
